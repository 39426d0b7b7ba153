"""Restarts and stalls lose nobody's progress: real peer processes, real openMSX, a real rendezvous.

- A player who restarts alone (after a quit, SIGTERM, or a crash, kill -9) gets the room's bytes
  back from disk, and the cartridge's boot-time RAM clear is never published: openMSX saves the
  watcher's setting in settings.xml and announces it again on the next start, and that leftover
  must not arm the peer early. The same with an openMSX of the player's own that was used before.
- A peer whose process stalls (SIGSTOP) while its game writes publishes those writes with the
  time the game made them, so a later write by another player wins everywhere.

The rendezvous here is a standalone server (in the test's process, on a loopback socket), so it
outlives the players and a restarted player finds the room empty, as a public server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from peer.openmsx import OpenMSXError
from rendezvous.app import Config
from tests.openmsx_builds import Build
from tests.peer_harness import TESTCART, Peer, Peers, cartridge_games, players_own_openmsx_env, wait_until
from tests.rendezvous_support import running
from tests.test_peer_e2e import ITEM2, ITEM3, SHARING, start_room

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(180),
]

BURST = range(0xE010, 0xE020)  # the cartridge's burst command writes 30h..3Fh here
BURST_VALUES = bytes(range(0x30, 0x40))
COMMAND = 0xE100
Row = tuple[int, int, bytes]  # value, lamport, writer


@pytest.fixture
async def rendezvous(tmp_path: Path) -> AsyncIterator[str]:
    async with running(Config(games=[cartridge_games(tmp_path / "games", "e010 e01f burst")])) as url:
        yield url


def stored_rows(peer: Peer) -> dict[int, Row]:
    with contextlib.closing(sqlite3.connect(peer.state_dir / "rooms.sqlite", timeout=2.0)) as db:
        rows = db.execute("SELECT address, value, lamport, writer FROM bytes").fetchall()
    return {address: (value, lamport, writer) for address, value, lamport, writer in rows}


async def wait_stored(peer: Peer, values: bytes) -> dict[int, Row]:
    async def saved() -> bool:
        rows = stored_rows(peer)
        return all(rows.get(a, (None,))[0] == v for a, v in zip(BURST, values, strict=True))

    await wait_until(saved, f"{peer.name}'s disk to hold {values.hex()}")
    return stored_rows(peer)


async def wait_room_empty(url: str) -> None:
    async with aiohttp.ClientSession() as http:

        async def empty() -> bool:
            async with http.get(f"{url}/healthz") as response:
                players: int = json.loads(await response.text())["players"]
                return players == 0

        await wait_until(empty, "the rendezvous to show nobody in the room")


async def burst_bytes(peer: Peer) -> bytes:
    return await peer.read(BURST.start, len(BURST))


async def assert_bytes_back_and_staying(peer: Peer, before: dict[int, Row]) -> None:
    """After arming: the room's bytes are in RAM, stay there, and the disk did not move."""
    await peer.wait_log(SHARING)
    await wait_until(lambda: _holds(peer), f"{peer.name}'s RAM to hold the room's bytes again")
    await peer.frames(100)  # two emulated seconds of play: nothing takes them away
    assert await burst_bytes(peer) == BURST_VALUES
    assert stored_rows(peer) == before, "the disk changed: something was published over the room"


async def _holds(peer: Peer) -> bool:
    return await burst_bytes(peer) == BURST_VALUES


async def test_a_lone_restart_after_a_quit_or_a_crash_brings_the_bytes_back(
    peers: Peers, rendezvous: str
) -> None:
    peers.url = rendezvous
    alice = peers.new("alice", "--game", "testcart", "--room", "solo")
    await alice.start()
    await alice.connect()
    await alice.fast_until(SHARING)  # past the boot and --arm-after's 10 emulated seconds
    await alice.write(COMMAND, 1)  # the cartridge writes E010-E01F: 30h..3Fh
    before = await wait_stored(alice, BURST_VALUES)

    for how in (signal.SIGTERM, signal.SIGKILL):
        if how == signal.SIGTERM:
            assert await alice.stop() == 0, alice.log()
        else:
            await alice.kill9()
        await wait_room_empty(rendezvous)
        alice = peers.new("alice", "--game", "testcart", "--room", "solo")
        await alice.start()
        await alice.connect()
        await alice.wait_log("alone in the room")
        # The cartridge clears its RAM at boot (after the C-BIOS logo); only then may it arm.
        await alice.fast_until(SHARING)
        assert await alice.emulated_time() >= 10.0
        await alice.tcl("set throttle on")
        await assert_bytes_back_and_staying(alice, before)


async def test_a_lone_restart_attached_to_an_openmsx_used_before_brings_the_bytes_back(
    peers: Peers, rendezvous: str
) -> None:
    """The player's own openMSX (one OPENMSX_HOME): msxsync is killed while attached, the player
    quits openMSX (which saves its settings, msxsync's leftover among them), starts it again
    and attaches msxsync again, alone in the room."""
    peers.url = rendezvous
    home = peers.root / "own-openmsx-home"
    alice = peers.new("alice", "--game", "testcart", "--room", "solo", "--attach")
    own = await start_own_openmsx(alice, home, peers.openmsx)
    try:
        await alice.connect()
        await alice.start()
        await alice.fast_until(SHARING)
        await alice.write(COMMAND, 1)
        before = await wait_stored(alice, BURST_VALUES)
        assert alice.process is not None
        alice.process.kill()  # the peer crashes; its watcher is left running in openMSX
        await alice.process.wait()
        await wait_room_empty(rendezvous)
        with contextlib.suppress(OpenMSXError):
            await alice.tcl("exit")  # the player closes openMSX: settings.xml is written
        await asyncio.wait_for(own.wait(), 15)
        await alice.disconnect()
        assert "msxsync_changes" in (home / "share" / "settings.xml").read_text(errors="replace")

        alice = peers.new("alice", "--game", "testcart", "--room", "solo", "--attach")
        own = await start_own_openmsx(alice, home, peers.openmsx)
        await alice.connect()
        await alice.tcl("set pause on")  # msxsync attaches before the cartridge has booted
        await alice.start()
        await alice.wait_log("alone in the room")
        await wait_until(lambda: _installed(alice), "the peer's watcher in openMSX")
        await alice.tcl("set pause off")
        await alice.fast_until(SHARING)
        await alice.tcl("set throttle on")
        await assert_bytes_back_and_staying(alice, before)
    finally:
        if own.returncode is None:
            own.kill()
        await own.wait()


async def _installed(peer: Peer) -> bool:
    return await peer.tcl("namespace exists msxsync") == "1" and "msxsync::poll" in await peer.tcl(
        "after info"
    )


async def start_own_openmsx(peer: Peer, home: Path, openmsx: Build) -> asyncio.subprocess.Process:
    peer.tmp.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        openmsx.program,
        "-machine",
        "C-BIOS_MSX1",
        "-cart",
        str(TESTCART),
        env={**peer.env, "OPENMSX_HOME": str(home), **players_own_openmsx_env(openmsx)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


STALL = 10.0  # seconds the peer's process stays stopped
OTHER_ITEMS = (ITEM3 + 2, ITEM3 + 3, ITEM3 + 4, ITEM3 + 5)  # as many reports as a publishing burst


async def test_a_stalled_peer_does_not_publish_its_old_writes_as_new(peers: Peers) -> None:
    """Issue 31 too: alice's backlog holds more reports than a publishing burst, so when she is
    back they are coalesced; the old write among them must keep its own (older) time."""
    bob, alice = await start_room(peers, ["bob", "alice"])  # bob hosts: alice's stall stops no server
    assert alice.process is not None
    alice.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # Alice's game writes while her msxsync is stopped (openMSX runs on)...
        for n, item in enumerate(OTHER_ITEMS):
            await alice.write(item, 0x30 + n)  # (each in a report of its own)
            await alice.frames()
        await alice.write(ITEM3, 0x11)
        await alice.frames()
        await asyncio.sleep(STALL / 2)  # the stall itself is the scenario: time must pass
        # ...and bob's game writes the same byte later...
        await bob.write(ITEM3, 0x22)
        await bob.frames()
        # ...and alice's game goes on writing other bytes, later still.
        for n, item in enumerate(OTHER_ITEMS):
            await alice.write(item, 0x40 + n)
            await alice.frames()
        await asyncio.sleep(max(0.0, STALL - (time.monotonic() - stopped)))
    finally:
        alice.process.send_signal(signal.SIGCONT)
    # The later write wins everywhere, in RAM and on disk, and stays.
    await alice.wait_byte(ITEM3, 0x22, within=30)
    await bob.frames(50)
    assert await bob.byte(ITEM3) == 0x22
    await bob.write(ITEM2, 0x55)  # a barrier through the mesh, after alice is back
    await alice.wait_byte(ITEM2, 0x55, within=30)
    assert await alice.byte(ITEM3) == 0x22
    assert await bob.byte(ITEM3) == 0x22

    async def on_both_disks() -> bool:
        return alice.stored(ITEM3) == 0x22 and bob.stored(ITEM3) == 0x22

    await wait_until(on_both_disks, "both disks to hold bob's later write")
