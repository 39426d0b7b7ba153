"""Savestates and rewind with real openMSX: the room wins, and nobody else ever loses a thing.

Two players of the bundled demo (see tests/test_peer_e2e.py for its RAM map). One of them jumps
back in time, by `loadstate` and by `reverse goto`, to before they picked something up; their
emulator must get the item back from the room, and the other player's RAM must never hold the
old byte, not even for a moment. The other player's openMSX is watched continuously: a
watchpoint on the shared bytes (it fires for the game's writes and for msxsync's
`debug write_block`, see docs) records every write of a zero into the inventory.
"""

from __future__ import annotations

import pytest

from peer.core.emulator.gating import JUMPED_WORDS
from tests.openmsx_builds import Build
from tests.peer_harness import Peer, Peers
from tests.test_peer_e2e import ITEM0, ITEM1, ITEM2, pick_up_item0, start_room

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(120),
]

INVENTORY_END = 0xE017
_NOTE_LOSS = (
    "if {$::wp_last_value == 0} {lappend ::msxsync_test_lost "
    '"[format %04x $::wp_last_address]@[machine_info time]"}'
)


def watch_losses(openmsx: Build) -> str:
    """Every write of 00 into the inventory, as "ADDRESS@EMUTIME", in ::msxsync_test_lost, with
    the watchpoint command this openMSX has (`debug watchpoint create` from 21 on)."""
    assert openmsx.features is not None
    watch = openmsx.features.watchpoint("write_mem", ITEM0, INVENTORY_END, _NOTE_LOSS)
    return f"set ::msxsync_test_lost {{}}; {watch}"


async def losses(peer: Peer) -> str:
    return await peer.tcl("set ::msxsync_test_lost")


async def barrier(writer: Peer, reader: Peer, value: int) -> None:
    """WRITER's next change has reached READER: so has anything WRITER published before it."""
    await writer.write(ITEM1, value)
    await reader.wait_byte(ITEM1, value)


async def test_loading_an_older_state_keeps_the_rooms_items_for_everyone(peers: Peers) -> None:
    alice, bob = await start_room(peers, ["alice", "bob"])
    await bob.tcl(watch_losses(peers.openmsx))
    await alice.tcl("savestate msxsync_before")

    await pick_up_item0(alice)  # the game itself picks it up
    await bob.wait_byte(ITEM0, 1)

    await alice.tcl("loadstate msxsync_before")  # back to before the pickup: E010 was 00 then
    await alice.wait_log(JUMPED_WORDS)
    await alice.wait_byte(ITEM0, 1)
    await alice.wait_message(JUMPED_WORDS)
    await barrier(alice, bob, 0x21)
    assert await bob.byte(ITEM0) == 1
    assert await losses(bob) == "", "bob's openMSX was given an old byte"
    assert alice.stored(ITEM0) == bob.stored(ITEM0) == 1


async def test_rewinding_with_reverse_goto_keeps_the_rooms_items_for_everyone(peers: Peers) -> None:
    alice, bob = await start_room(peers, ["alice", "bob"])
    await bob.tcl(watch_losses(peers.openmsx))
    await alice.frames(60)  # openMSX's reverse keeps a snapshot every second
    back_then = await alice.emulated_time()
    await alice.frames(5)

    await pick_up_item0(alice)
    await alice.write(ITEM2, 0x07)  # a second pickup, as a tool or cheat would make it
    await bob.wait_byte(ITEM0, 1)
    await bob.wait_byte(ITEM2, 0x07)

    await alice.tcl(f"reverse goto {back_then}")
    await alice.wait_log(JUMPED_WORDS)
    await alice.wait_byte(ITEM0, 1)
    await alice.wait_byte(ITEM2, 0x07)
    await barrier(alice, bob, 0x22)
    assert (await bob.byte(ITEM0), await bob.byte(ITEM2)) == (1, 0x07)
    assert await losses(bob) == "", "bob's openMSX was given an old byte"
    assert (alice.stored(ITEM2), bob.stored(ITEM2)) == (0x07, 0x07)
