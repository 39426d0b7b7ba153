"""Attaching where openMSX has no UNIX socket (Windows): its port file and its authentication
exchange, against a stand-in server that speaks openMSX's framing over real loopback TCP."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from peer.openmsx import OpenMSXError
from peer.openmsx.control_socket import open_tcp_control, port_of


class ScriptedClient:
    """A Negotiator giving TOKENS in turn; done after the last."""

    def __init__(self, *tokens: bytes) -> None:
        self.tokens = list(tokens)
        self.received: list[bytes | None] = []

    def step(self, received: bytes | None) -> tuple[bytes, bool]:
        self.received.append(received)
        token = self.tokens.pop(0)
        return token, not self.tokens


async def chunk(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    return await reader.readexactly(size)


def framed(token: bytes) -> bytes:
    return struct.pack(">I", len(token)) + token


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(tmp_path: Path, handler: Handler) -> tuple[asyncio.Server, Path]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port_file = tmp_path / "socket.4242"
    port_file.write_text(f"{server.sockets[0].getsockname()[1]}\n")
    return server, port_file


async def test_the_exchange_runs_to_its_end_then_commands_flow(tmp_path: Path) -> None:
    seen: list[bytes] = []

    async def openmsx(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await chunk(reader))  # NEGOTIATE
        writer.write(framed(b"challenge"))
        seen.append(await chunk(reader))  # AUTHENTICATE: the client is done
        seen.append(await reader.readline())  # then the control protocol
        writer.close()

    server, port_file = await serve(tmp_path, openmsx)
    client = ScriptedClient(b"negotiate", b"authenticate")
    async with server:
        reader, writer = await open_tcp_control(port_file, client)
        writer.write(b"<openmsx-control>\n")
        await writer.drain()
        await reader.read()
        writer.close()
    assert seen == [b"negotiate", b"authenticate", b"<openmsx-control>\n"]
    assert client.received == [None, b"challenge"]


async def test_an_openmsx_that_hangs_up_while_authenticating_is_a_clear_error(tmp_path: Path) -> None:
    async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await chunk(reader)
        writer.close()

    server, port_file = await serve(tmp_path, refusing)
    async with server:
        with pytest.raises(OpenMSXError, match="closed the connection while authenticating"):
            await open_tcp_control(port_file, ScriptedClient(b"negotiate", b"authenticate"))


async def test_an_oversized_token_is_refused(tmp_path: Path) -> None:
    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await chunk(reader)
        writer.write(struct.pack(">I", 2**31))
        await writer.drain()

    server, port_file = await serve(tmp_path, hostile)
    async with server:
        with pytest.raises(OpenMSXError, match="token of 2147483648 bytes"):
            await open_tcp_control(port_file, ScriptedClient(b"negotiate", b"authenticate"))


def test_the_port_file_holds_one_port() -> None:
    assert port_of("9938\n") == 9938
    for bad in ("", "abc", "0", "70000", "9938 9939", "-1"):
        with pytest.raises(OpenMSXError, match="not a port number"):
            port_of(bad)


async def test_nothing_listening_is_a_clear_error(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    (tmp_path / "socket.1").write_text(f"{port}\n")
    with pytest.raises(OpenMSXError, match="cannot connect to openMSX"):
        await open_tcp_control(tmp_path / "socket.1", ScriptedClient(b"x"))
