"""A pulled network cable: three node processes, each in its own network namespace, joined by a
bridge in a fourth that also runs the rendezvous. One player's cable is pulled (its bridge port
goes down: packets to and from it vanish, nothing is closed) while the others keep writing; when
it is plugged back in, the three must be identical again within a few seconds.

Nothing is added to the machine's own network: every interface lives in a namespace the test
creates, and deleting the namespaces removes them. Needs root and `ip netns`, else it is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.test_mesh_processes import NodeProcess, all_admitted, converged, write_all

ROOT = Path(__file__).resolve().parent.parent
IP = "/usr/sbin/ip"
SWITCH_ADDRESS = "10.214.0.1"
# 12 s: past the silence limit (links drop, redials start, their offers are lost with the cable)
# but short of the rendezvous dropping the player, so nothing in the roster changes. PULLED_FOR
# overrides it (25 s: the rendezvous drops and re-lists the player).
PULLED_FOR = float(os.environ.get("PULLED_FOR", "12"))
# The aim is a few seconds; the margin covers a loaded 2-core machine (ICE, DTLS, binding, resync).
BACK_WITHIN = 6.0


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=10)


class Network:
    """A switch namespace with a bridge, and one namespace per player plugged into it."""

    def __init__(self, tag: str, players: int) -> None:
        self.switch = f"msxsync-sw-{tag}"
        self.players = [f"msxsync-p{n}-{tag}" for n in range(players)]

    def build(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        _ip("-n", self.switch, "addr", "add", f"{SWITCH_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for n, ns in enumerate(self.players):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            port = ("peer", "name", f"port{n}", "netns", self.switch)
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", *port)
            _ip("-n", ns, "addr", "add", f"10.214.0.{n + 10}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.switch, "link", "set", f"port{n}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"port{n}", "up")

    def cable(self, player: int, *, plugged: bool) -> None:
        _ip("-n", self.switch, "link", "set", f"port{player}", "up" if plugged else "down")

    def destroy(self) -> None:
        for ns in (*self.players, self.switch):
            subprocess.run([IP, "netns", "delete", ns], capture_output=True, timeout=10)


@pytest.fixture
def network() -> Iterator[Network]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which(IP) is None:
        pytest.skip(f"{IP} (iproute2) is not installed")
    net = Network(uuid.uuid4().hex[:8], 3)
    try:
        try:
            net.build()
        except subprocess.CalledProcessError as error:
            pytest.skip(f"this machine forbids network namespaces: {error.stderr.decode().strip()}")
        yield net
    finally:
        net.destroy()


def _in(ns: str, *args: str) -> list[str]:
    return [IP, "netns", "exec", ns, sys.executable, *args]


@contextlib.asynccontextmanager
async def rendezvous_in(ns: str) -> AsyncIterator[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ("-m", "rendezvous.cli", "--host", SWITCH_ADDRESS, "--port", "4567", "--log-level", "WARNING")
    process = await asyncio.create_subprocess_exec(*_in(ns, *args), cwd=ROOT, env=env)
    url = f"http://{SWITCH_ADDRESS}:4567"
    try:
        async with asyncio.timeout(20):
            while True:  # the port answers once the server listens (no other event to wait on)
                with contextlib.suppress(OSError):
                    check = f"import urllib.request; urllib.request.urlopen('{url}/healthz', timeout=1)"
                    probe = await asyncio.create_subprocess_exec(
                        *_in(ns, "-c", check),
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                    if await probe.wait() == 0:
                        break
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def players(network: Network, url: str, room: str) -> AsyncIterator[list[NodeProcess]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started: list[NodeProcess] = []
    try:
        for slot, ns in enumerate(network.players):
            args: tuple[str, ...] = (
                "-m",
                "peer.mesh.node",
                "--rendezvous",
                url,
                "--game",
                "demo",
                "--room",
                room,
            )
            args += ("--log-level", os.environ.get("NODE_LOG_LEVEL", "warning"))
            process = await asyncio.create_subprocess_exec(
                *_in(ns, *args, "--slot", str(slot)),
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


async def test_pulled_cable_back_within_seconds(network: Network) -> None:
    async with rendezvous_in(network.switch) as url, players(network, url, "cable") as group:
        await all_admitted(group, 2)
        pulled, others = group[0], group[1:]
        network.cable(0, plugged=False)
        try:
            await asyncio.sleep(PULLED_FOR)  # the outage itself is the point: nothing to wait on
            await write_all(others, 20)  # changes the pulled player has not seen
        finally:
            network.cable(0, plugged=True)
        plugged_at = time.monotonic()
        await all_admitted(group, 2)
        admitted = time.monotonic() - plugged_at
        await converged(group)
        identical = time.monotonic() - plugged_at
        print(f"after the cable came back: all admitted in {admitted:.1f} s, identical in {identical:.1f} s")
        assert identical < BACK_WITHIN, identical
        assert pulled.key
