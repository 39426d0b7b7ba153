"""Issue 30, F4 with real players: a member publishes a coin total of -(2^63-1) each time its
game changes the coins (tests/pinning_peer.py); the honest players' emulators keep their coins and
still count every later pickup. Real peer processes, real headless openMSX, real aiortc on
loopback (before the fix, one such batch showed 0 coins on every peer and in every emulator's RAM
for good, and later pickups changed nothing)."""

from __future__ import annotations

import asyncio

import pytest

from tests.peer_harness import Peers
from tests.test_peer_e2e import COINS, play

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(180),
]


def bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


async def test_a_member_pinning_the_coins_leaves_every_emulators_coins_counting(peers: Peers) -> None:
    alice = peers.new("alice", "--game", "demo", "--room", "pin", host=True)
    bob = peers.new("bob", "--game", "demo", "--room", "pin")
    mallory = peers.new("mallory", "--game", "demo", "--room", "pin", module="tests.pinning_peer")
    await alice.start()
    await peers.host_ready(alice)
    await asyncio.gather(bob.start(), mallory.start())
    everyone = (alice, bob, mallory)
    await asyncio.gather(*(play(peer) for peer in everyone))

    await alice.write(COINS, bcd(5))  # alice picks up 5 coins
    await asyncio.gather(*(peer.wait_byte(COINS, bcd(5)) for peer in everyone))
    await mallory.write(COINS, bcd(6))  # mallory's +1, and with it the pin
    await asyncio.gather(*(peer.wait_byte(COINS, bcd(6)) for peer in (alice, bob)))
    await asyncio.sleep(1.0)  # time for the pin to arrive and be refused (it was sent just after)
    assert "pinning: published" in mallory.log()
    assert {await alice.byte(COINS), await bob.byte(COINS)} == {bcd(6)}
    await bob.write(COINS, bcd(9))  # bob picks up 3 more: they count everywhere
    await asyncio.gather(*(peer.wait_byte(COINS, bcd(9)) for peer in (alice, bob)))
