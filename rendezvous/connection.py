"""One rendezvous WebSocket connection's outgoing side: its bounded send queue and identity.

Owns `Client`: what the lobby and the handlers know about one connected player (its key and name
after hello) and how messages reach it (a bounded queue drained by `write_loop`; a client that
stops reading is cut off with `transport.abort()`, never buffered without bound). It must not
import `rendezvous.state` or `rendezvous.lobby_socket`: both import it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from aiohttp import WSCloseCode, web

from rendezvous import protocol
from rendezvous.protocol import ProtocolError
from rendezvous.rooms import RoomError

log = logging.getLogger("msxsync.rendezvous")

_CLOSE = object()  # queue sentinel: close the socket after what is queued before it


@dataclass(eq=False)
class Client:
    """One WebSocket: its bounded outgoing queue and, after hello, its identity."""

    ws: web.WebSocketResponse
    request: web.Request
    queue: asyncio.Queue[str | object]
    key: str | None = None
    name: str = ""
    closing: bool = False
    close_code: int = WSCloseCode.POLICY_VIOLATION

    def send(self, text: str) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.info("dropping %s: it does not read its messages", self.label)
            self.abort()

    def send_json(self, message: dict[str, object]) -> None:
        self.send(json.dumps(message))

    def fail(
        self, error: ProtocolError | RoomError, *, fatal: bool = False, request: str | None = None
    ) -> None:
        if request is None and isinstance(error, ProtocolError):
            request = error.request
        fatal = fatal or (isinstance(error, ProtocolError) and error.fatal)
        self.send_json(protocol.error_message(error.code, error.message, fatal=fatal, request=request))
        if fatal:
            log.info("closing %s after fatal error %s", self.label, error.code)
            self.close()

    def close(self, code: int = WSCloseCode.POLICY_VIOLATION) -> None:
        """Close after the queued messages went out (the fatal error among them)."""
        if self.closing:
            return
        self.close_code = code
        try:
            self.queue.put_nowait(_CLOSE)
        except asyncio.QueueFull:
            self.abort()
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def write_loop(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if item is _CLOSE:
                    await self.ws.close(code=self.close_code)
                    return
                await self.ws.send_str(str(item))
            except ConnectionError:
                # The peer is gone (or was aborted): nothing left to write to.
                return

    @property
    def label(self) -> str:
        who = f"{self.name!r} {self.key[:12]}" if self.key else "unidentified client"
        return f"{who} from {self.request.remote}"
