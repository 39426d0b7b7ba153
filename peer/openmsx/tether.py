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

The check is a poll (``after realtime``, which openMSX runs also while paused) rather than a
``fileevent``: one read every half second is all it takes, and nothing depends on when openMSX
runs Tcl's own event loop. If msxsync cannot take its end (a local program connected in its
place and the real connection never came), it unties openMSX again rather than let it quit.
Not covered: a crash of msxsync while openMSX starts, before the tether is tied (on Linux the
kernel's signal covers that too).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

CHECK_PERIOD_S = 0.5
ACCEPT_TIMEOUT = 5.0
TOKEN_WAIT = 0.5
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
        " variable check_id {};"
        " proc check {} {"
        "  variable channel;"
        f"  variable check_id [after realtime {CHECK_PERIOD_S} msxsync_tether::check];"
        "  if {[catch {read $channel}] || [eof $channel]} { exit }"
        " };"
        " proc drop {} {"
        "  variable channel; variable check_id;"
        "  after cancel $check_id; catch {close $channel};"
        "  namespace delete [namespace current]"
        " };"
        " check"
        "}"
    )


DROP_TCL = "if {[namespace exists msxsync_tether]} {msxsync_tether::drop}"
"""Untie openMSX (msxsync could not take its end of the connection: play on untethered)."""


@asynccontextmanager
async def tethered(command: Callable[[str], Awaitable[str]]) -> AsyncIterator[None]:
    """Tie openMSX (whose Tcl COMMAND runs) to this process for the duration, and after it:
    leaving closes msxsync's end, which makes openMSX quit within `CHECK_PERIOD_S`. Meant for the
    child msxsync launched, whose end it is anyway. Raises TimeoutError or OSError (openMSX
    untied again) if openMSX's connection never brought the token."""
    loop = asyncio.get_running_loop()
    token = secrets.token_hex(TOKEN_BYTES)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        # openMSX connects and sends the token while running this: the kernel completes the
        # connection before we accept it.
        await command(tether_tcl(port, token))
        try:
            connection = await _accept_token(loop, listener, token)
        except (TimeoutError, OSError):
            await command(DROP_TCL)  # or its next check would find the connection reset, and quit
            raise
    with connection:
        yield


async def _accept_token(
    loop: asyncio.AbstractEventLoop, listener: socket.socket, token: str
) -> socket.socket:
    """The connection that brings TOKEN; others (some local program) are closed, each given at
    most `TOKEN_WAIT` to speak, so that none holds up openMSX's."""
    async with asyncio.timeout(ACCEPT_TIMEOUT):
        while True:
            connection, _ = await loop.sock_accept(listener)
            connection.setblocking(False)
            try:
                async with asyncio.timeout(TOKEN_WAIT):
                    received = await _read_token(loop, connection, len(token))
            except (TimeoutError, OSError):
                received = b""
            if received == token.encode():
                return connection
            connection.close()  # not openMSX: wait for the real one


async def _read_token(loop: asyncio.AbstractEventLoop, connection: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size and (chunk := await loop.sock_recv(connection, size - len(received))):
        received += chunk
    return received
