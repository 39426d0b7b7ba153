"""What a player sees on a desktop: real msxsync-peer processes, not headless, on an X display of
the test's own (Xvfb). Each gets an openMSX window (under -control openMSX starts with renderer
none, on a desktop too: the link must set SDL), a screenshot of it shows the game rather than a
blank screen, and each window says whose it is ("you are alice"). Closing one player's window
ends that player's session only: the other plays on and is told.

The screenshots (with openMSX's on-screen display) are kept in the test's folder; set
MSXSYNC_SHOTS=DIR to copy them somewhere to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

from peer.openmsx import OpenMSXError
from tests.openmsx_builds import Build
from tests.peer_harness import Peer, Peers
from tests.test_peer_e2e import ITEM0, pick_up_item0, play
from tests.xdisplay import colours, windows

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(150),
]


async def screenshot(peer: Peer, name: str) -> Path:
    """What the player's window shows now, openMSX's on-screen display included."""
    path = peer.folder / name
    await peer.tcl(f"screenshot -with-osd {{{path}}}")
    # openMSX says "Screen saved to …" on screen: the test's doing, not the player's; remove it.
    await peer.tcl("catch {osd destroy [osd::peek_latest_display_message_widget]}")
    keep = os.environ.get("MSXSYNC_SHOTS")
    if keep:
        await asyncio.to_thread(_keep, path, Path(keep))
    return path


def _keep(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder / path.name)


def assert_shows_a_picture(path: Path) -> None:
    """Not blank: many colours, none covering nearly everything."""
    counted = colours(path)
    total = sum(counted.values())
    assert len(counted) > 8, f"{path} has only {len(counted)} colours"
    assert counted.most_common(1)[0][1] < 0.8 * total, f"{path} is mostly one colour"


async def test_each_player_gets_a_window_that_shows_the_game_and_says_whose_it_is(
    peers: Peers, display: str, openmsx: Build
) -> None:
    # Side by side, as scripts/demo places them (openMSX 20 and later open where they are told).
    alice = peers.new("alice", "--game", "demo", "--window-position", "0,0", host=True, display=display)
    bob = peers.new("bob", "--game", "demo", "--window-position", "660,0", display=display)
    await alice.start()
    await peers.host_ready(alice)
    await bob.start()
    await asyncio.gather(play(alice), play(bob))

    tree = windows(display)
    assert tree.count('"openMSX') >= 2, tree  # one window per player (titled "openMSX 18.0 - …")
    assert openmsx.features is not None
    if openmsx.features.version.at_least(20):
        places = sorted(re.findall(r'"openMSX[^"]*":.*?\s(\d+)x(\d+)\+(-?\d+)\+(-?\d+)', tree))
        assert [(x, y) for _, _, x, y in places] == [("0", "0"), ("660", "0")], tree
    for peer in (alice, bob):
        assert openmsx.features is not None
        assert await peer.tcl("set renderer") == openmsx.features.window_renderer  # SDL gone in 20
        assert await peer.tcl("osd info msxsync_label.text -text") == f"you are {peer.name}"

    await pick_up_item0(bob)
    await alice.wait_byte(ITEM0, 1)
    await alice.wait_message("bob found the key")
    shot = await screenshot(alice, "alice-window.png")
    assert_shows_a_picture(shot)
    assert_shows_a_picture(await screenshot(bob, "bob-window.png"))

    # Closing bob's window ends bob's session, and only his: alice plays on and is told.
    with contextlib.suppress(OpenMSXError):
        await bob.tcl("exit")
    assert bob.process is not None
    assert await asyncio.wait_for(bob.process.wait(), 15) == 0, bob.log()
    await alice.wait_message("bob left")
    assert alice.process is not None and alice.process.returncode is None
    assert await alice.byte(0xE000) == 1
