"""A switch of network namespaces for process tests, and the processes those tests start.

This module owns:

- `Switch`: a switch namespace holding a bridge (`br0`, `SWITCH_ADDRESS`), and one namespace per
  player plugged into it by a veth pair (`eth0` in the player's namespace, `portN` on the bridge).
  A pulled cable is the player's bridge port going down (`cable`): packets vanish, nothing is
  closed. Nothing is added to the machine's own network: deleting the namespaces removes it all.
- the `switch` fixture: three players, built for the test and always deleted; the test is skipped,
  saying why, where it cannot be built (not root, no iproute2, namespaces forbidden).
- `rendezvous_in`: the standalone rendezvous started inside the switch's namespace and waited for
  (its "listening on" line), stopped at the end.
- `NodeProcess` and `nodes`: transport-only msxsync nodes (`python3 -m peer.mesh.node`) as
  processes, in the players' namespaces or on loopback, started together and waited for until
  ready, killed at the end; `all_admitted`, `converged` and `write_all` drive a group of them.

The namespace internet with NAT routers is another topology: `tests.netns` and
`tests.internet_support`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IP = "/usr/sbin/ip"
SWITCH_ADDRESS = "10.214.0.1"
RENDEZVOUS_PORT = 4567
PLAYERS = 3


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=10)


class Switch:
    """A switch namespace with a bridge, and one namespace per player plugged into it."""

    def __init__(self, tag: str, players: int) -> None:
        self.namespace = f"msxsync-sw-{tag}"
        self.players = [f"msxsync-p{n}-{tag}" for n in range(players)]

    @staticmethod
    def address(player: int) -> str:
        return f"10.214.0.{player + 10}"

    def build(self) -> None:
        _ip("netns", "add", self.namespace)
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        _ip("-n", self.namespace, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        _ip("-n", self.namespace, "addr", "add", f"{SWITCH_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.namespace, "link", "set", "br0", "up")
        for n, ns in enumerate(self.players):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            port = ("peer", "name", f"port{n}", "netns", self.namespace)
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", *port)
            _ip("-n", ns, "addr", "add", f"{self.address(n)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.namespace, "link", "set", f"port{n}", "master", "br0")
            _ip("-n", self.namespace, "link", "set", f"port{n}", "up")

    def cable(self, player: int, *, plugged: bool) -> None:
        _ip("-n", self.namespace, "link", "set", f"port{player}", "up" if plugged else "down")

    def destroy(self) -> None:
        for ns in (*self.players, self.namespace):
            subprocess.run([IP, "netns", "delete", ns], capture_output=True, timeout=10)


def inside(namespace: str) -> list[str]:
    """The command prefix that runs a program inside `namespace`."""
    return [IP, "netns", "exec", namespace]


@pytest.fixture(name="switch")
def switch_fixture() -> Iterator[Switch]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which(IP) is None:
        pytest.skip(f"{IP} (iproute2) is not installed")
    built = Switch(uuid.uuid4().hex[:8], PLAYERS)
    try:
        try:
            built.build()
        except subprocess.CalledProcessError as error:
            pytest.skip(f"this machine forbids network namespaces: {error.stderr.decode().strip()}")
        yield built
    finally:
        built.destroy()


@contextmanager
def rendezvous_in(switch: Switch, log: Path, within: float) -> Iterator[str]:
    """The standalone rendezvous in the switch's namespace, its output in `log`, listening on
    `SWITCH_ADDRESS` within `within` seconds; yields its URL and stops it (SIGTERM) at the end.
    The wait blocks: call it before anything else of the test runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "rendezvous.cli", "--host", SWITCH_ADDRESS, "--port", str(RENDEZVOUS_PORT)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*inside(switch.namespace), *argv], stdout=out, stderr=out, cwd=ROOT, env=env
        )
    try:
        deadline = time.monotonic() + within
        while "listening on" not in log.read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the rendezvous did not listen:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield f"http://{SWITCH_ADDRESS}:{RENDEZVOUS_PORT}"
    finally:
        server.terminate()
        server.wait(10)


class NodeProcess:
    """One node process; commands on stdin, JSON events from stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lost: list[dict[str, Any]] = []
        self.key = ""

    async def send(self, **order: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(order) + "\n").encode())
        await self.process.stdin.drain()

    async def expect(self, event: str) -> dict[str, Any]:
        """The next `event` line; "lost" lines met on the way are kept in `self.lost`."""
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise EOFError(f"node exited (code {self.process.returncode}) before {event!r}")
            message: dict[str, Any] = json.loads(line)
            if message["event"] == "lost":
                self.lost.append(message)
            if message["event"] == event:
                return message

    async def ask(self, event: str, **order: Any) -> dict[str, Any]:
        await self.send(**order)
        return await self.expect(event)


@asynccontextmanager
async def nodes(
    url: str, count: int, room: str, extra: Sequence[str] = (), switch: Switch | None = None
) -> AsyncIterator[list[NodeProcess]]:
    """`count` nodes in `room`, slot N in the switch's player N namespace when a switch is given,
    each with the `extra` options; yielded once every one is ready (its key known)."""
    started: list[NodeProcess] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for slot in range(count):
            prefix = inside(switch.players[slot]) if switch is not None else []
            process = await asyncio.create_subprocess_exec(
                *(*prefix, sys.executable, "-m", "peer.mesh.node", "--rendezvous", url),
                *("--game", "demo", "--room", room, "--slot", str(slot), *extra),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
                env=env,
            )
            started.append(NodeProcess(process))
        async with asyncio.timeout(20):
            for node in started:
                node.key = (await node.expect("ready"))["key"]
        yield started
    finally:
        for node in started:
            if node.process.returncode is None:
                node.process.kill()
            await node.process.wait()


async def all_admitted(group: list[NodeProcess], count: int) -> None:
    async with asyncio.timeout(20):
        await asyncio.gather(*(n.ask("admitted_all", cmd="wait_admitted", count=count) for n in group))


async def converged(group: list[NodeProcess]) -> str:
    """Until every node reports the same digest; each round is a real request to every node."""
    async with asyncio.timeout(20):
        while True:
            replies = await asyncio.gather(*(n.ask("digest", cmd="digest") for n in group))
            digests: set[str] = {reply["digest"] for reply in replies}
            if len(digests) == 1:
                return digests.pop()
            # The nodes have no change event to subscribe to across a pipe: ask again shortly.
            await asyncio.sleep(0.1)


async def write_all(group: list[NodeProcess], frames: int) -> None:
    await asyncio.gather(*(n.ask("written", cmd="write", frames=frames, seed=i) for i, n in enumerate(group)))
