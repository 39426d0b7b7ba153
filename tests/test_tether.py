"""The tether's msxsync end, with a stand-in for openMSX's Tcl (the real one: test_openmsx_process)."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from peer.openmsx import tether


class FakeOpenMSX:
    """Runs the tether's Tcl as openMSX would: connect to its port and send its token, after a
    silent local program got there first (when ROGUE)."""

    def __init__(self, *, rogue: bool = False, connect: bool = True) -> None:
        self.rogue, self.connect = rogue, connect
        self.commands: list[str] = []
        self.sockets: list[socket.socket] = []

    async def command(self, tcl: str) -> str:
        self.commands.append(tcl)
        found = re.search(r"socket 127\.0\.0\.1 (\d+)\];.*puts -nonewline \$channel ([0-9a-f]+);", tcl)
        if found is None:
            return ""
        port, token = int(found.group(1)), found.group(2)
        if self.rogue:
            self.sockets.append(socket.create_connection(("127.0.0.1", port)))  # says nothing
        if self.connect:
            real = socket.create_connection(("127.0.0.1", port))
            real.sendall(token.encode())
            self.sockets.append(real)
        return ""

    def close(self) -> None:
        for each in self.sockets:
            each.close()


async def test_a_silent_local_program_does_not_take_openmsxs_place() -> None:
    openmsx = FakeOpenMSX(rogue=True)
    try:
        async with asyncio.timeout(3):
            async with tether.tethered(openmsx.command):
                real = openmsx.sockets[-1]
                real.setblocking(False)
                with pytest.raises(BlockingIOError):
                    real.recv(1)  # held open: nothing to read, no end
        real.setblocking(True)
        real.settimeout(2)
        assert real.recv(1) == b""  # leaving closed msxsync's end: openMSX would quit now
    finally:
        openmsx.close()


async def test_no_connection_unties_openmsx_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tether, "ACCEPT_TIMEOUT", 0.3)
    openmsx = FakeOpenMSX(connect=False)
    with pytest.raises(TimeoutError):
        async with tether.tethered(openmsx.command):
            pytest.fail("tethered without a connection")
    assert openmsx.commands[-1] == tether.DROP_TCL


def test_the_tcl_takes_only_a_port_and_a_hex_token() -> None:
    with pytest.raises(ValueError):
        tether.tether_tcl(0, "ab")
    with pytest.raises(ValueError):
        tether.tether_tcl(4000, "ab; exit")
