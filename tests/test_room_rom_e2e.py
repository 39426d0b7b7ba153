"""One ROM per room with real peers: a player whose ROM (or machine) is not the room's is refused
before anything is shared, with one sentence; with --force-rom they play, and everybody is told.

The test cartridge's definition (tests/peer_harness.py `cartridge_games`) lists no known
dumps, so a patched ROM passes the local check and only the room can tell.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.peer_harness import TESTCART, Peers, cartridge_games, wait_until
from tests.test_peer_e2e import SHARING, start_room

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(120),
]


def patched_cartridge(folder: Path) -> Path:
    """The test cartridge with one byte of its padding changed: another ROM, same program."""
    data = bytearray(TESTCART.read_bytes())
    data[-1] ^= 0x01
    path = folder / "patched.rom"
    path.write_bytes(bytes(data))
    return path


async def test_another_rom_is_refused_unless_forced(peers: Peers, tmp_path: Path) -> None:
    games = cartridge_games(tmp_path / "games")
    patched = patched_cartridge(tmp_path)
    alice = peers.new("alice", "--game", "testcart", "--games", str(games), host=True)
    await alice.start()
    await peers.host_ready(alice)

    bob = peers.new("bob", "--game", "testcart", "--rom", str(patched))
    await bob.start()
    assert bob.process is not None
    process = bob.process

    async def bob_ended() -> bool:
        return process.returncode is not None

    await wait_until(bob_ended, f"bob to be refused\n{bob.log()[-2000:]}")
    assert process.returncode != 0
    words = bob.terminal()
    sentence = "this room plays msxsync test cartridge with ROM SHA-1 "
    assert sentence + hashlib.sha1(TESTCART.read_bytes()).hexdigest() in words, words
    assert hashlib.sha1(patched.read_bytes()).hexdigest() in words
    assert "bob joined" not in alice.log()
    await alice.wait_log("not sharing with bob")

    carol = peers.new("carol", "--game", "testcart", "--rom", str(patched), "--force-rom")
    await carol.start()
    await alice.wait_log("carol plays a different ROM")
    await carol.wait_log("carol (you) plays a different ROM")
    await carol.connect()
    await carol.fast_until(SHARING)
    assert alice.log().count("carol plays a different ROM") == 1


async def test_another_machine_than_the_definitions_is_refused(peers: Peers) -> None:
    (alice,) = await start_room(peers, ["alice"])
    bob = peers.new("bob", "--game", "demo", "--machine", "C-BIOS_MSX2")
    await bob.start()
    assert bob.process is not None
    process = bob.process

    async def bob_ended() -> bool:
        return process.returncode is not None

    await wait_until(bob_ended, f"bob to be refused\n{bob.log()[-2000:]}")
    assert "machine C-BIOS_MSX1" in bob.terminal() and "machine C-BIOS_MSX2" in bob.terminal()
    await alice.wait_log("not sharing with bob")
