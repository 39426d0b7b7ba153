"""One rendezvous WebSocket connection's outgoing side: its bounded send queue and identity.

Owns `Client`: what the lobby and the handlers know about one connected player (its key, name and
source address) and how messages reach it: a queue drained by `write_loop`, bounded in messages
and in bytes (`rendezvous.fairness.SendBacklog`), counted as the bytes written (UTF-8 JSON, not
escaped ASCII: what a client is charged for is what goes out). What one member passes to another
(relayed mesh frames, signals, chat) may take only the relay share of the queue and is dropped
beyond it: another member's sending must never get this client evicted (issue 29, F3). A client
over its bound with the server's own messages is evicted: the queue is dropped, the reason is
logged and put in the close frame, and if the close cannot be written within `close_timeout` the
transport is aborted. Nothing is buffered without bound, whatever the client answers to pings.
It must not import `rendezvous.state` or `rendezvous.lobby_socket`: both import it.
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
Outgoing = tuple[str | bytes, float, int]  # a frame, when it was queued, its size in bytes


def encode(message: dict[str, object]) -> str:
    """A message as it goes out: JSON in UTF-8 (`ensure_ascii=False`), so a text is as long on the
    way out as on the way in (escaped, one emoji became 12 bytes; issue 29, F5). Messages hold
    no lone surrogates: `protocol.parse_message` refuses them."""
    return json.dumps(message, ensure_ascii=False)


def wire_size(frame: str | bytes) -> int:
    """Bytes `frame` takes on the wire (`isascii` is a flag lookup: no encoding for ASCII)."""
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode())


@dataclass(eq=False)
class Client:
    """One WebSocket: its bounded outgoing queue and, after hello, its identity."""

    ws: web.WebSocketResponse
    request: web.Request
    queue: asyncio.Queue[Outgoing | object]
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

    def send(self, text: str | bytes, *, relayed: bool = False) -> bool:
        """Queue a text frame (JSON), or a binary one (a relayed mesh frame); False if it was not.
        `relayed`: another member's (a mesh frame, signal or chat), dropped when it does not fit
        the relay share; anything else that does not fit evicts the client (a slow reader)."""
        if self.closing:
            return False
        size = wire_size(text)
        if relayed and not self.backlog.relay_fits(size, self.queue.qsize(), self.queue.maxsize):
            return False
        now = asyncio.get_running_loop().time()
        reason = self.backlog.add(size, now)
        if reason is None:
            try:
                self.queue.put_nowait((text, now, size))
                return True
            except asyncio.QueueFull:
                reason = f"slow reader: {self.queue.maxsize} messages waiting"
        self.evict(reason)
        return False

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
        self.send(encode(message))

    def fail(
        self,
        error: ProtocolError | RoomError,
        *,
        fatal: bool = False,
        request: str | None = None,
        linger: float | None = None,
    ) -> None:
        """Send `error`; if it is fatal, close (the code is the close frame's reason)."""
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
            self.close(reason=error.code, linger=linger)

    def close(
        self, code: int = WSCloseCode.POLICY_VIOLATION, reason: str = "", linger: float | None = None
    ) -> None:
        """Close after the queued messages went out (the fatal error among them); a client that
        does not take them within `close_timeout` (or `linger`) is cut off. A flooding client gets
        a short `linger`: until its transport is gone the server reads and discards what it sends
        while waiting for its close reply, at whatever rate it sends."""
        if self.closing:
            return
        self.close_code, self.close_reason = code, reason
        try:
            self.queue.put_nowait(_CLOSE)
        except asyncio.QueueFull:
            self.abort()
        self.closing = True
        if self._abort_later is None:
            delay = self.close_timeout if linger is None else linger
            self._abort_later = asyncio.get_running_loop().call_later(delay, self.abort)

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
                text, queued, size = item
                if isinstance(text, bytes):
                    await self.ws.send_bytes(text)
                else:
                    await self.ws.send_str(text)
            except ConnectionError:
                # The peer is gone (or was aborted): nothing left to write to.
                return
            self.backlog.sent(size)
            if self.on_written is not None:
                self.on_written(loop.time() - queued)

    @property
    def label(self) -> str:
        who = f"{self.name!r} {self.key[:12]}" if self.key else "unidentified client"
        return f"{who} from {self.source}"  # (the forwarded source behind a trusted proxy)
