"""A room whose players run different openMSX versions: one on Debian's 18, one on the newest
build (21), headless and with windows. What one picks up the other has, both ways, and each is
told so on screen in the same message box.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peer.core.emulator.openmsx_protocol import MESSAGE_WIDGET
from tests.openmsx_builds import Build, builds
from tests.peer_harness import Peers
from tests.test_peer_e2e import COINS, ITEM0, pick_up_item0, play
from tests.test_player_window import assert_shows_a_picture, screenshot
from tests.xdisplay import windows

pytestmark = [pytest.mark.openmsx, pytest.mark.timeout(150)]


def oldest_and_newest() -> tuple[Build, Build]:
    found = [build for build in builds() if build.missing is None]
    if len(found) < 2 or found[0].label == found[-1].label:
        pytest.skip("a mixed room needs two openMSX versions (see tests/openmsx_builds.py)")
    return found[0], found[-1]


@pytest.fixture
async def mixed(tmp_path: Path) -> AsyncIterator[tuple[Peers, Build, Build]]:
    old, new = oldest_and_newest()
    group = Peers(tmp_path, old)
    try:
        yield group, old, new
    finally:
        await group.close()


@pytest.mark.parametrize("with_windows", [False, True], ids=["headless", "windows"])
async def test_a_room_of_two_openmsx_versions_syncs_both_ways(
    mixed: tuple[Peers, Build, Build], with_windows: bool, request: pytest.FixtureRequest
) -> None:
    peers, old, new = mixed
    display = request.getfixturevalue("display") if with_windows else None
    alice = peers.new("alice", "--game", "demo", host=True, display=display, openmsx=old)
    bob = peers.new("bob", "--game", "demo", display=display, openmsx=new)
    await alice.start()
    await peers.host_ready(alice)
    await bob.start()
    await asyncio.gather(play(alice), play(bob))
    assert (await alice.tcl("openmsx_info version")).startswith(f"openMSX {old.label}.")
    assert (await bob.tcl("openmsx_info version")).startswith(f"openMSX {new.label}.")

    await pick_up_item0(bob)  # the newer openMSX's game picks up; the older one gets it
    await alice.wait_byte(ITEM0, 1)
    await alice.wait_message("bob found the key")
    await alice.write(COINS, 0x07)  # and the other way
    await bob.wait_byte(COINS, 0x07)
    await bob.wait_message("alice: coins 7")
    for peer in (alice, bob):  # one box, the same widget, on both versions
        assert await peer.tcl(f"osd exists {MESSAGE_WIDGET}") == "1"

    if with_windows:
        assert display is not None
        assert windows(display).count('"openMSX') >= 2
        for peer in (alice, bob):
            assert_shows_a_picture(await screenshot(peer, f"{peer.name}-mixed.png"))
