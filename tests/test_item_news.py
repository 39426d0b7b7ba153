"""Named items end to end: real peers, real (headless) openMSX playing the demo, whose definition
names e010 "key" and e018 "coins". When bob's game picks up, pays or loses something, alice reads
it on her screen (openMSX's on-screen display) and on her terminal, one message at a time, with the
game's own status line left readable. Bob's own game shows his pickups itself: no news for him.
"""

from __future__ import annotations

import pytest

from peer.core.emulator.openmsx_protocol import MESSAGE_WIDGET
from tests.peer_harness import LEFT, Peer, Peers
from tests.test_peer_e2e import COINS, ITEM0, PLAYER_X, pick_up_item0, start_room
from tests.test_player_window import assert_shows_a_picture, screenshot

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(120),
]


async def shown_now(peer: Peer) -> str:
    """The text of msxsync's message on the player's screen right now."""
    return await peer.tcl(f"osd info {MESSAGE_WIDGET}.text -text")


async def messages_on_screen(peer: Peer) -> list[str]:
    """The texts of the message boxes on the player's screen: msxsync's, and openMSX 18's own
    (osd::display_message), but the test's own "Screen saved"."""
    widgets = [w for w in (await peer.tcl("osd info")).split() if "." not in w]
    boxes = [w for w in widgets if w == MESSAGE_WIDGET or w.startswith("osd_display_message_")]
    texts = [await peer.tcl(f"osd info {w}.text -text") for w in boxes]
    return [text for text in texts if not text.startswith("Screen saved")]


async def wait_news(peer: Peer, text: str) -> None:
    await peer.wait_message(text)
    await peer.wait_log(text)
    assert text in peer.terminal()
    assert await shown_now(peer) == text


async def test_a_remote_pickup_shows_on_the_other_players_screen_and_terminal(
    peers: Peers, display: str
) -> None:
    """Alice has a window (what she sees is screenshotted: headless openMSX 20 draws nothing)."""
    alice, bob = await start_room(peers, ["alice", "bob"], display=display)

    await pick_up_item0(bob)  # the game itself picks up the key
    await wait_news(alice, "bob found the key")
    assert_shows_a_picture(await screenshot(alice, "alice-news.png"))

    await bob.write(COINS, 0x12)
    await wait_news(alice, "bob: coins 12")

    for x in (17, 16, 15):  # back past the start and into the spikes: the game takes the key
        await bob.press(LEFT)
        await bob.wait_byte(PLAYER_X, x)
    await bob.press(LEFT)
    await bob.wait_byte(ITEM0, 0)
    await wait_news(alice, "bob lost the key")
    assert await messages_on_screen(alice) == ["bob lost the key"]  # each replaced the one before
    assert_shows_a_picture(await screenshot(alice, "alice-lost.png"))

    for line in ("found the key", "lost the key", "coins 12"):
        assert line not in bob.terminal(), bob.terminal()
