"""The tether: a launched openMSX quits when msxsync dies, on every system.

msxsync starts openMSX as a child and stops it when the player leaves. If msxsync is killed
(SIGKILL, a crash, Windows' task manager) nobody stops it, and closing openMSX's control stream
does not make it quit (checked on 18.0, 20.0 and 21.0). Linux alone can ask the kernel to signal
a child when its parent dies (`peer.openmsx.process.die_with_parent`). Everywhere else, and on
Linux as a second guard, openMSX holds a loopback TCP connection to msxsync: its Tcl connects
once, then every half second of real time (also while emulation is paused) reads it without
blocking, and quits when it reads end-of-file, which is what the system gives it once msxsync's
end is closed, however msxsync died. A stopped msxsync (SIGSTOP, a debugger) keeps the
connection open, so a stall never ends the game. The connection says nothing else: a random
token on connect (so that another local program cannot stand in for openMSX), then silence.

Tcl's own event loop does not run inside openMSX (its ``after`` is openMSX's), so the check is a
poll (``after realtime``), not a ``fileevent``.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

CHECK_PERIOD_S = 0.5
ACCEPT_TIMEOUT = 5.0
TOKEN_BYTES = 16


def tether_tcl(port: int, token: str) -> str:
    """Tcl connecting openMSX to msxsync's tether on 127.0.0.1:PORT and quitting on its end."""
    if not (0 < port < 65536) or not all(c in "0123456789abcdef" for c in token):
        raise ValueError("a tether needs a port and a hex token")
    return (
        "namespace eval msxsync_tether {"
        f" variable channel [socket 127.0.0.1 {port}];"
        " fconfigure $channel -blocking 0 -translation binary;"
        f" puts -nonewline $channel {token}; flush $channel;"
        " proc check {} {"
        "  variable channel;"
        f"  after realtime {CHECK_PERIOD_S} msxsync_tether::check;"
        "  if {[catch {read $channel}] || [eof $channel]} { exit }"
        " };"
        " check"
        "}"
    )


@asynccontextmanager
async def tethered(command: Callable[[str], Awaitable[str]]) -> AsyncIterator[None]:
    """Tie openMSX (whose Tcl COMMAND runs) to this process for the duration, and after it:
    leaving closes msxsync's end, which makes openMSX quit within `CHECK_PERIOD_S`. Meant for the
    child msxsync launched, whose end it is anyway."""
    loop = asyncio.get_running_loop()
    token = secrets.token_hex(TOKEN_BYTES)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        # openMSX connects and sends the token while running this: the kernel completes the
        # connection before we accept it.
        await command(tether_tcl(port, token))
        connection = await _accept_token(loop, listener, token)
    with connection:
        yield


async def _accept_token(
    loop: asyncio.AbstractEventLoop, listener: socket.socket, token: str
) -> socket.socket:
    async with asyncio.timeout(ACCEPT_TIMEOUT):
        while True:
            connection, _ = await loop.sock_accept(listener)
            connection.setblocking(False)
            received = b""
            while len(received) < len(token) and (chunk := await loop.sock_recv(connection, 64)):
                received += chunk
            if received == token.encode():
                return connection
            connection.close()  # not openMSX: wait for the real one
