"""One rendezvous WebSocket connection's outgoing side: its bounded send queue and identity.

Owns `Client`: what the lobby and the handlers know about one connected player (its key, name and
source address) and how messages reach it: a queue drained by `write_loop`, bounded in messages
and in bytes (`rendezvous.fairness.SendBacklog`). A client over its bound is evicted: the queue is
dropped, the reason is logged and put in the close frame, and if the close cannot be written
within `close_timeout` the transport is aborted. Nothing is buffered without bound, whatever the
client answers to pings. It must not import `rendezvous.state` or `rendezvous.lobby_socket`: both
import it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from rendezvous import protocol
from rendezvous.fairness import SendBacklog
from rendezvous.protocol import ProtocolError
from rendezvous.rooms import RoomError

log = logging.getLogger("msxsync.rendezvous")

_CLOSE = object()  # queue sentinel: close the socket after what is queued before it


@dataclass(eq=False)
class Client:
    """One WebSocket: its bounded outgoing queue and, after hello, its identity."""

    ws: web.WebSocketResponse
    request: web.Request
    queue: asyncio.Queue[tuple[str | bytes, float] | object]
    backlog: SendBacklog = field(default_factory=lambda: SendBacklog(1 << 20, 1 << 18, 10.0))
    source: str = ""
    close_timeout: float = 5.0
    on_written: Callable[[float], None] | None = None  # seconds from queued to written
    on_evicted: Callable[[], None] | None = None  # it leaves its room at once, not at the close
    key: str | None = None
    name: str = ""
    closing: bool = False
    close_code: int = WSCloseCode.POLICY_VIOLATION
    close_reason: str = ""
    _abort_later: asyncio.TimerHandle | None = None

    def send(self, text: str | bytes) -> None:
        """Queue a text frame (JSON), or a binary one (a relayed mesh frame)."""
        if self.closing:
            return
        now = asyncio.get_running_loop().time()
        size = len(text)  # encoded, JSON is ASCII: json.dumps escapes everything else
        reason = self.backlog.add(size, now)
        if reason is None:
            try:
                self.queue.put_nowait((text, now))
                return
            except asyncio.QueueFull:
                reason = f"slow reader: {self.queue.maxsize} messages waiting"
        self.evict(reason)

    def evict(self, reason: str) -> None:
        """Cut off a client that holds more than its share: drop what waits, say why, close."""
        if self.closing:
            return
        log.info("evicting %s: %s", self.label, reason)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.backlog.sent(self.backlog.bytes)
        self.close(WSCloseCode.POLICY_VIOLATION, reason)
        if self.on_evicted is not None:
            self.on_evicted()

    def send_json(self, message: dict[str, object]) -> None:
        self.send(json.dumps(message))

    def fail(
        self, error: ProtocolError | RoomError, *, fatal: bool = False, request: str | None = None
    ) -> None:
        if request is None and isinstance(error, ProtocolError):
            request = error.request
        fatal = fatal or (isinstance(error, ProtocolError) and error.fatal)
        retry_after = error.retry_after if isinstance(error, RoomError) else None
        body = protocol.error_message(
            error.code, error.message, fatal=fatal, request=request, retry_after=retry_after
        )
        self.send_json(body)
        if fatal:
            log.info("closing %s after fatal error %s", self.label, error.code)
            self.close()

    def close(self, code: int = WSCloseCode.POLICY_VIOLATION, reason: str = "") -> None:
        """Close after the queued messages went out (the fatal error among them); a client that
        does not take them within `close_timeout` is cut off."""
        if self.closing:
            return
        self.close_code, self.close_reason = code, reason
        try:
            self.queue.put_nowait(_CLOSE)
        except asyncio.QueueFull:
            self.abort()
        self.closing = True
        if self._abort_later is None:
            self._abort_later = asyncio.get_running_loop().call_later(self.close_timeout, self.abort)

    def abort(self) -> None:
        self.closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def write_loop(self) -> None:
        try:
            await self._write_all()
        finally:
            if self._abort_later is not None:
                self._abort_later.cancel()

    async def _write_all(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.queue.get()
            try:
                if not isinstance(item, tuple):  # _CLOSE
                    message = self.close_reason.encode()[:120]  # a close frame holds 123 bytes
                    await self.ws.close(code=self.close_code, message=message)
                    return
                text, queued = item
                if isinstance(text, bytes):
                    await self.ws.send_bytes(text)
                else:
                    await self.ws.send_str(text)
            except ConnectionError:
                # The peer is gone (or was aborted): nothing left to write to.
                return
            self.backlog.sent(len(text))
            if self.on_written is not None:
                self.on_written(loop.time() - queued)

    @property
    def label(self) -> str:
        who = f"{self.name!r} {self.key[:12]}" if self.key else "unidentified client"
        return f"{who} from {self.request.remote}"
