"""Merge rules end to end: two players of the bundled demo collect coins at the same moments.

Real peer processes, real headless openMSX, real aiortc on loopback (see tests/test_peer_e2e.py).
Each player's openMSX runs a Tcl loop that counts a coin the way the demo's Z80 code does (read
COINS, add one in BCD, write it back, in one step of the emulation) every two frames, both at
once. With `add bcd` every coin counts: both end at 2 x COINS_EACH = 90. (On last writer wins,
the code before issue 15, the same run ended at 69 and 69: every coin counted while the other
player's was on its way was lost.)
"""

from __future__ import annotations

import asyncio

import pytest

from tests.peer_harness import Peer, Peers, wait_until
from tests.test_peer_e2e import COINS, start_room

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(150),
]

COINS_EACH = 45  # two players: 90, under the demo's cap of 99
GAP = 0.04  # emulated seconds between two coins: two frames

# One coin, as the game counts it (BCD), then the next after GAP; `coins_done` says when all are in.
_COLLECT = f"""
set ::coins_done 0
proc coin_loop {{n}} {{
    if {{$n <= 0}} {{ set ::coins_done 1; return }}
    set v [debug read memory {COINS}]
    set d [expr {{($v >> 4) * 10 + ($v & 15) + 1}}]
    debug write memory {COINS} [expr {{($d / 10) << 4 | $d % 10}}]
    after time {GAP} [list coin_loop [expr {{$n - 1}}]]
}}
"""


async def collect(peer: Peer) -> None:
    await peer.tcl(_COLLECT)
    await peer.tcl(f"coin_loop {COINS_EACH}")


async def test_two_players_collecting_coins_at_once_keep_every_coin(peers: Peers) -> None:
    alice, bob = await start_room(peers, ["alice", "bob"], "--room", "coins")
    await asyncio.gather(collect(alice), collect(bob))

    async def both_done() -> bool:
        return all([await peer.tcl("set ::coins_done") == "1" for peer in (alice, bob)])

    await wait_until(both_done, "both players to collect their coins")
    expected = COINS_EACH * 2
    bcd = (expected // 10) << 4 | expected % 10

    async def settled() -> bool:
        return {await alice.byte(COINS), await bob.byte(COINS)} == {bcd}

    try:
        await wait_until(settled, f"both players to show {expected} coins")
    finally:
        print(f"concurrent coins: alice {await alice.byte(COINS):02x}, bob {await bob.byte(COINS):02x}")

    async def on_disk() -> bool:
        return alice.stored_counter(COINS) == bob.stored_counter(COINS) == expected

    await wait_until(on_disk, "both players to store every coin")
