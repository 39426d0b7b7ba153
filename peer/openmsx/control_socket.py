"""Reaching a running openMSX's control socket (attach mode), on every system.

openMSX listens for controllers in ``<temp>/openmsx-<user>/socket.<pid>``: a UNIX socket on
Linux and macOS; on Windows, where it has none, a file holding a TCP port on 127.0.0.1
(openMSX picks one of 9938-10001), and the user is ``default`` (`peer.openmsx.process`). On
Windows openMSX also asks the connecting program to prove it runs as the same user, with the
system's Negotiate package (SSPI) before the first command: tokens in chunks of a 4-byte
big-endian length and the token, until the client's side says it is done (openMSX's
``SspiNegotiateServer``). `negotiate` does that exchange over the stream; the tokens come from
pywin32's ``sspi`` module (`windows_sspi`), the kept binding of that Windows API.

Checked here: the port file, the framing and the exchange, against a stand-in server speaking
openMSX's framing. Not checked: a real Windows openMSX (no Windows machine was available).
"""

from __future__ import annotations

import asyncio
import importlib
import struct
import sys
from pathlib import Path
from typing import Any, Protocol

from peer.openmsx.control import OpenMSXError

MAX_TOKEN = 64 * 1024
"""A Negotiate token is a few KB (Kerberos tickets the largest): anything bigger is refused."""
NEGOTIATE_ROUNDS = 8


class Negotiator(Protocol):
    """One client side of an SSPI exchange."""

    def step(self, received: bytes | None) -> tuple[bytes, bool]:
        """The token to send after RECEIVED (None: the first), and whether the client is done."""
        ...


def port_of(text: str) -> int:
    """The TCP port in a Windows openMSX's socket file (``9938\\n``)."""
    word = text.strip()
    if not word.isdigit() or not 0 < int(word) < 65536:
        raise OpenMSXError(f"openMSX's socket file holds {text[:20]!r}, not a port number")
    return int(word)


async def open_control_socket(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to the openMSX whose control socket (or, on Windows, port file) is PATH."""
    if sys.platform == "win32":
        return await open_tcp_control(path, windows_sspi())
    try:
        return await asyncio.open_unix_connection(path)
    except OSError as error:
        raise OpenMSXError(f"cannot connect to openMSX at {path}: {error}") from error


async def open_tcp_control(
    path: Path, negotiator: Negotiator
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """openMSX's Windows scheme: the port in PATH, on 127.0.0.1, then the SSPI exchange."""
    try:
        port = port_of(await asyncio.to_thread(path.read_text, encoding="ascii", errors="replace"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        raise OpenMSXError(f"cannot connect to openMSX at {path}: {error}") from error
    try:
        await negotiate(reader, writer, negotiator)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def negotiate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, negotiator: Negotiator
) -> None:
    """Prove to openMSX that we are its user: send our token, read its answer, until we are done."""
    received: bytes | None = None
    for _ in range(NEGOTIATE_ROUNDS):
        token, done = negotiator.step(received)
        if token:
            writer.write(struct.pack(">I", len(token)) + token)
            await writer.drain()
        if done:
            return
        received = await _read_chunk(reader)
    raise OpenMSXError(f"openMSX did not accept us after {NEGOTIATE_ROUNDS} rounds of authentication")


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    try:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        if size > MAX_TOKEN:
            raise OpenMSXError(f"openMSX sent an authentication token of {size} bytes")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise OpenMSXError("openMSX closed the connection while authenticating us") from None


class _SspiClient:
    """pywin32's Negotiate client (``sspi.ClientAuth``) as a `Negotiator`."""

    def __init__(self, sspi: Any) -> None:
        self._auth = sspi.ClientAuth("Negotiate")

    def step(self, received: bytes | None) -> tuple[bytes, bool]:
        status, buffers = self._auth.authorize(received)
        return bytes(buffers[0].Buffer), status == 0


def windows_sspi() -> Negotiator:
    try:
        sspi = importlib.import_module("sspi")  # pywin32's
    except ImportError:
        raise OpenMSXError(
            "attaching to a running openMSX on Windows needs pywin32 (pip install pywin32); "
            "without --attach msxsync starts openMSX itself"
        ) from None
    return _SspiClient(sspi)
