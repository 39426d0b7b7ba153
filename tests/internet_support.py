"""Programs on the namespace internet of `tests.netns`: the rendezvous and coturn on the public
host, transport-only msxsync nodes (`peer.mesh.node`) behind the players' routers; and the `net`
fixture (registered in tests/conftest.py): an `Internet` built for one test and torn down after
it, the test skipped, saying why, where one cannot be built.

Every wait reads a program's own output (its "listening" line, a node's JSON events) under a
timeout; nothing sleeps and hopes. Every process started here is ended here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.netns import PUBLIC, Internet, Player

ROOT = Path(__file__).resolve().parent.parent
RENDEZVOUS_PORT = 4567
TURN_PORT = 3478
TURN_SECRET = "a test secret of the namespace internet"
START_TIMEOUT = 10.0


@pytest.fixture
def net() -> Iterator[Internet]:
    why = netns.unavailable()
    if why is not None:
        pytest.skip(why)
    internet = Internet()
    try:
        yield internet
    finally:
        internet.close()


def coturn_missing() -> str | None:
    return None if shutil.which("turnserver") else "needs coturn's 'turnserver' (scripts/setup --test)"


class Program:
    """One process in a namespace. Its output is read all the time (a full pipe would stall
    it) into `lines`; `next_line` hands them out in order, waiting for the next one."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name, self.process = name, process
        self.lines: list[str] = []
        self._read = 0  # lines already handed out by next_line
        self._grew = asyncio.Event()
        self._ended = False
        self._reader = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            self.lines.append(raw.decode(errors="replace"))
            self._grew.set()
        self._ended = True
        self._grew.set()

    async def next_line(self) -> str:
        while self._read >= len(self.lines):
            if self._ended:
                raise EOFError(f"{self.name} exited:\n" + "".join(self.lines[-40:]))
            self._grew.clear()
            await self._grew.wait()
        self._read += 1
        return self.lines[self._read - 1]

    async def wait_line(self, needle: str, wait: float = START_TIMEOUT) -> str:
        async with asyncio.timeout(wait):
            while needle not in (line := await self.next_line()):
                pass
            return line

    async def stop(self) -> None:
        # `ip netns exec` may run the program as its child: end the whole process group, which
        # `start` made for this program alone, or the child outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        await self._reader


async def start(net: Internet, namespace: str, name: str, argv: Sequence[str], **kw: Any) -> Program:
    process = await asyncio.create_subprocess_exec(
        *net.command(namespace, argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,  # its own process group, ended as one by `stop`
        **kw,
    )
    return Program(name, process)


async def start_rendezvous(
    net: Internet,
    folder: Path,
    *,
    turn: bool = False,
    extra: Sequence[str] = (),
    module: str = "rendezvous.cli",
) -> Program:
    """`module`: another entry point that takes the same options (a tampering one, for tests)."""
    argv = [sys.executable, "-m", module, "--port", str(RENDEZVOUS_PORT), *extra]
    if turn:
        secret = folder / "turn-secret"
        secret.write_text(TURN_SECRET + "\n")
        secret.chmod(0o600)
        argv += ["--turn", f"turn:{PUBLIC}:{TURN_PORT}", "--turn-secret-file", str(secret)]
    program = await start(net, net.public, "rendezvous", argv)
    await program.wait_line("listening on")
    return program


async def start_coturn(net: Internet, folder: Path) -> Program:
    argv = [
        "turnserver", "-n", f"--listening-ip={PUBLIC}", f"--listening-port={TURN_PORT}",
        f"--relay-ip={PUBLIC}", "--min-port=49152", "--max-port=49999", "--no-tls", "--no-dtls",
        "--no-cli", "--log-file=stdout", "--simple-log", f"--pidfile={folder / 'turnserver.pid'}",
        f"--userdb={folder / 'turndb'}", "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}",
        "--realm=msxsync", "--no-software-attribute", "--verbose",
    ]  # fmt: skip
    program = await start(net, net.public, "coturn", argv)
    await program.wait_line("UDP listener opened")
    return program


class Node(Program):
    async def send(self, **order: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(order) + "\n").encode())
        await self.process.stdin.drain()

    async def expect(self, event: str, wait: float) -> dict[str, Any]:
        async with asyncio.timeout(wait):
            while True:
                message: dict[str, Any] = json.loads(await self.next_line())
                if message["event"] == event:
                    return message
                if message["event"] == "error":
                    raise AssertionError(f"{self.name}: {message}")


async def start_node(net: Internet, player: Player, room: str, slot: int, extra: Sequence[str] = ()) -> Node:
    url = f"http://{PUBLIC}:{RENDEZVOUS_PORT}"
    argv = [
        sys.executable, "-m", "peer.mesh.node", "--rendezvous", url, "--game", "demo",
        "--room", room, "--slot", str(slot), *extra,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *net.command(player.host, argv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
        start_new_session=True,
    )
    node = Node(f"node{slot}", process)
    await node.expect("ready", START_TIMEOUT)
    return node


async def start_nodes(
    net: Internet, players: Sequence[Player], room: str, started: list[Program], extra: Sequence[str] = ()
) -> list[Node]:
    """A node behind each player (slot N behind player N), each added to `started` once ready."""
    nodes = []
    for slot, player in enumerate(players):
        nodes.append(await start_node(net, player, room, slot, extra))
        started.append(nodes[-1])
    return nodes


@contextlib.asynccontextmanager
async def programs() -> AsyncIterator[list[Program]]:
    """Collects programs and stops every one of them at the end, whatever happened."""
    started: list[Program] = []
    try:
        yield started
    finally:
        for program in reversed(started):
            await program.stop()


async def converged(nodes: Sequence[Node], wait: float) -> str:
    """Until every node reports the same digest of the shared state."""
    async with asyncio.timeout(wait):
        while True:
            digests: set[str] = set()
            for node in nodes:
                await node.send(cmd="digest")
                digests.add((await node.expect("digest", wait))["digest"])
            if len(digests) == 1:
                return digests.pop()
            await asyncio.sleep(0.1)  # across a pipe there is no change event to wait on
