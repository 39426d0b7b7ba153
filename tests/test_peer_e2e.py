"""msxsync-peer end to end: real peer processes, real headless openMSX, real aiortc on loopback.

Each test starts players as `python3 -m peer.cli` subprocesses (the first one hosting the
rendezvous with --host) playing the bundled demo (games/demo.asm), and looks into every player's
openMSX through its control socket (see tests/peer_harness.py). The demo's RAM map: E000 is 01
while a game is in progress (the armed-when rule), E010-E017 the items and E018 the coins are
shared; the player's position E020/E021 and everything else is private. The player starts at
(16, 11) and item 0 (E010) lies at (18, 11): two steps right pick it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import pytest

from peer.emulator import RESYNC_MESSAGE
from peer.openmsx import OpenMSXError
from tests.peer_harness import (
    RIGHT,
    ROOT,
    Peer,
    Peers,
    cartridge_games,
    openmsx_running,
    players_own_openmsx_env,
    wait_until,
)

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(120),
]

STATE = 0xE000
ITEM0, ITEM1, ITEM2, ITEM3 = 0xE010, 0xE011, 0xE012, 0xE013
COINS = 0xE018
RESERVED = 0xE019  # between the shared bytes and the position: private
PLAYER_X = 0xE020
SHARED = range(0xE010, 0xE019)
SHARING = "sharing with the room"


async def start_room(
    peers: Peers, names: list[str], *args: str, tty: bool = False, display: str | None = None
) -> list[Peer]:
    """The first name hosts; all join one room, start the demo and are sharing. With DISPLAY the
    first player has a window there (the others stay headless)."""
    first = peers.new(names[0], "--game", "demo", *args, host=True, tty=tty, display=display)
    others = [peers.new(name, "--game", "demo", *args, tty=tty) for name in names[1:]]
    await first.start()
    await peers.host_ready(first)
    await asyncio.gather(*(peer.start() for peer in others))
    everyone = [first, *others]
    await asyncio.gather(*(play(peer) for peer in everyone))
    return everyone


async def play(peer: Peer) -> None:
    """Connect, start the game, wait until the peer armed (it says so on screen and stderr)."""
    await peer.connect()
    await peer.start_game()
    await peer.wait_log(SHARING)


async def shared_bytes(peer: Peer) -> bytes:
    return await peer.read(SHARED.start, len(SHARED))


async def pick_up_item0(peer: Peer) -> None:
    """Two steps right: the game itself picks up item 0 (E010 becomes 01)."""
    for x in (17, 18):
        await peer.press(RIGHT)
        await peer.wait_byte(PLAYER_X, x)
    await peer.wait_byte(ITEM0, 1)


async def test_three_peers_share_regions_and_a_late_joiner_wipes_nothing(peers: Peers) -> None:
    alice, bob, carol = await start_room(peers, ["alice", "bob", "carol"])

    # A pickup made by bob's game appears in the others' RAM; positions stay each player's own.
    await pick_up_item0(bob)
    await alice.wait_byte(ITEM0, 1)
    await carol.wait_byte(ITEM0, 1)
    # Private bytes written in carol, then a shared one: once the shared one has arrived
    # (a later message), the private ones would have too, had they travelled.
    await carol.write(RESERVED, 0x5A)
    await carol.write(PLAYER_X, 0x03)
    await carol.frames()
    await carol.write(ITEM1, 0x42)
    await alice.wait_byte(ITEM1, 0x42)
    await bob.wait_byte(ITEM1, 0x42)
    for peer, x in ((alice, 16), (bob, 18)):
        assert await peer.byte(PLAYER_X) == x, peer.name
        assert await peer.byte(RESERVED) == 0, peer.name
    before = {peer.name: await shared_bytes(peer) for peer in (alice, bob, carol)}
    assert len(set(before.values())) == 1, before

    # A late joiner: its cartridge clears E000-EFFF at boot and shows the title screen.
    dave = peers.new("dave", "--game", "demo")
    await dave.start()
    await dave.connect()
    await dave.wait_log("got the room's state from")
    await dave.tcl("set throttle off")
    await dave.frames(300)  # well past the BIOS logo: the game cleared its RAM (title screen)
    await dave.tcl("set throttle on")
    assert await shared_bytes(dave) == bytes(len(SHARED)), "the demo clears its RAM at boot"
    for peer in (alice, bob, carol):
        await peer.frames()
        assert await shared_bytes(peer) == before[peer.name], f"{peer.name} lost bytes to dave's boot"

    # Dave starts playing: he adopts the room's bytes; nobody's change.
    await dave.start_game()
    await dave.wait_log(SHARING)
    await dave.wait_byte(ITEM0, 1)
    assert await shared_bytes(dave) == before["alice"]
    await dave.write(ITEM2, 0x07)  # dave is a full member now: a barrier through the mesh
    for peer in (alice, bob, carol):
        await peer.wait_byte(ITEM2, 0x07)
        expected = bytearray(before[peer.name])
        expected[ITEM2 - SHARED.start] = 0x07
        assert await shared_bytes(peer) == bytes(expected), peer.name


def sessions(log: str) -> list[int]:
    """The session numbers a player's log says it joined with."""
    return [int(n) for n in re.findall(r"\(session (\d+)\)", log)]


async def test_kill_9_then_one_restarted_alone_puts_the_room_back_from_its_disk(peers: Peers) -> None:
    alice, bob = await start_room(peers, ["alice", "bob"], "--room", "durable")
    await pick_up_item0(bob)
    await alice.wait_byte(ITEM0, 1)

    # Bob crashes; alice plays on; bob comes back into the same room from the same folder.
    before = sessions(bob.log())
    await bob.kill9()
    await alice.wait_message("bob left")
    await alice.write(COINS, 0x42)
    bob = peers.new("bob", "--game", "demo", "--room", "durable")
    await bob.start()
    await play(bob)
    await bob.wait_byte(ITEM0, 1)
    await bob.wait_byte(COINS, 0x42)
    assert max(sessions(bob.log())) > max(before)  # a restart never signs with an old session number
    assert alice.log().count("GET /api/games/demo/rom ") == 2, "bob's ROM comes from his cache now"
    # His new writes reach alice.
    await bob.write(ITEM2, 0x09)
    await alice.wait_byte(ITEM2, 0x09)

    async def on_alices_disk() -> bool:
        return alice.stored(ITEM0) == 1 and alice.stored_counter(COINS) == 42 and alice.stored(ITEM2) == 0x09

    await wait_until(on_alices_disk, "alice to store the room's bytes")
    await asyncio.gather(alice.kill9(), bob.kill9())

    # Alice comes back alone, same state folder and room: her cartridge clears the RAM at
    # boot; arming puts the room's bytes back from her own disk.
    alice = peers.new("alice", "--game", "demo", "--room", "durable", host=True)
    await alice.start()
    await alice.connect()
    await alice.wait_log("alone in the room")
    await alice.start_game()
    await alice.wait_log(SHARING)
    await alice.wait_byte(ITEM0, 1)
    await alice.wait_byte(COINS, 0x42)
    await alice.wait_byte(ITEM2, 0x09)
    assert await alice.byte(PLAYER_X) == 16  # her own position, not bob's


async def test_title_screen_disarms_and_rearming_adopts_the_room(peers: Peers) -> None:
    alice, bob = await start_room(peers, ["alice", "bob"], "--room", "locked", "--password", "s3cret")
    await pick_up_item0(bob)
    await alice.wait_byte(ITEM0, 1)

    # Alice goes back to the title screen: she stops sharing.
    await alice.write(STATE, 0)
    await alice.wait_log("paused sharing: the game is not in play")
    # While disarmed her game loses item 0 (as a fresh boot would): never published.
    await alice.write(ITEM0, 0)
    await alice.frames()
    # Meanwhile bob keeps playing: his change reaches alice's state, not yet her RAM.
    await bob.write(ITEM2, 0x77)

    # Alice starts a game again (space on the title): she re-arms, adopts the room's bytes.
    await alice.start_game()
    await alice.wait_log(SHARING, count=2)
    await alice.wait_byte(ITEM0, 1)
    await alice.wait_byte(ITEM2, 0x77)
    # A barrier from alice to bob: had her disarmed change travelled, it would be there by now.
    await alice.write(ITEM3, 0x33)
    await bob.wait_byte(ITEM3, 0x33)
    assert await bob.byte(ITEM0) == 1
    assert await bob.byte(STATE) == 1  # watched for arming, never shared: bob played on


async def silently_write(peer: Peer, address: int, value: int) -> None:
    """Change RAM between two of msxsync's checks without it noticing (a missed write)."""
    await peer.tcl(f"msxsync::stop; debug write memory {address} {value}; msxsync::start")


async def test_manual_resync_and_chat(peers: Peers) -> None:
    alice, bob = await start_room(peers, ["alice", "bob"], tty=True)
    await pick_up_item0(bob)
    await alice.wait_byte(ITEM0, 1)

    # The F10 key binding: it shows the request and asks the peer, which re-adopts the room's bytes.
    await silently_write(alice, ITEM0, 0)
    await alice.frames()
    assert await alice.byte(ITEM0) == 0
    binding = await alice.tcl("bind -layer msxsync F10")
    assert "msxsync::request resync" in binding, binding
    assert "msxsync" in await alice.tcl("activate_input_layer")  # lists the active layers
    await alice.tcl(binding.split(":", 1)[1].strip())  # what pressing F10 runs
    await alice.wait_message(RESYNC_MESSAGE)
    await alice.wait_byte(ITEM0, 1)
    await alice.wait_log("resynced: you have the room's items")
    assert await bob.byte(ITEM0) == 1

    # The console's resync does the same.
    await silently_write(bob, ITEM0, 0)
    await bob.frames()
    bob.type("resync")
    await bob.wait_byte(ITEM0, 1)

    # Chat: bob types on his console; alice sees it on her screen.
    # Chat reads "NAME (FINGERPRINT) says: TEXT", never like msxsync's own lines (issue 30, F8).
    bob.type("say meet me at the crown")
    await alice.wait_message(") says: meet me at the crown")
    said = [m for m in await alice.shown() if m.endswith(") says: meet me at the crown")]
    assert re.fullmatch(r"bob \([0-9a-f]{12}\) says: meet me at the crown", said[-1]), said
    await alice.wait_log(") says: meet me at the crown")
    await bob.wait_log("bob (you) says: meet me at the crown")  # the sender sees what they said

    bob.type("say " + "x" * 501)
    await bob.wait_log("msxsync: that message is too long")

    # Chat is text, never Tcl: brackets and braces reach nobody's interpreter, and are shown as typed.
    bob.type("say [exit] {now} $x")
    await alice.wait_message(") says: [exit] {now} $x")
    bob.type("say <b>&amp; héllo ✓</b>")  # XML and UTF-8 arrive as typed
    await alice.wait_message(") says: <b>&amp; héllo ✓</b>")
    assert await alice.byte(STATE) == 1  # still running

    # Quitting on the console ends alice's session cleanly; bob hears that she left.
    alice.type("quit")
    assert alice.process is not None
    assert await asyncio.wait_for(alice.process.wait(), 15) == 0, alice.log()
    assert "session ended (quit)" in alice.log()
    assert alice.pty_slave is not None and os.get_blocking(alice.pty_slave)  # the shell's terminal as it was
    await bob.wait_message("alice left")

    # Closing bob's openMSX window ends his session too.
    with contextlib.suppress(OpenMSXError):
        await bob.tcl("exit")
    assert bob.process is not None
    assert await asyncio.wait_for(bob.process.wait(), 15) == 0, bob.log()
    assert "session ended (openMSX went away" in bob.log()
    assert bob.pty_slave is not None and os.get_blocking(bob.pty_slave)


async def test_ctrl_c_ends_the_session_cleanly(peers: Peers) -> None:
    alice, bob = await start_room(peers, ["alice", "bob"], tty=True)
    await bob.wait_log("(hosted by alice) | sharing with 1 player | players: alice")
    bob.type("peers")  # a small table, at once
    await bob.wait_log("player  path    round trip  last change")
    await bob.wait_log("alice   direct  ")
    await pick_up_item0(alice)
    await alice.write(COINS, 0x11)
    await bob.wait_byte(ITEM0, 1)
    await bob.wait_byte(COINS, 0x11)
    openmsx = bob.openmsx_pid
    assert bob.process is not None and openmsx is not None
    bob.process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(bob.process.wait(), 15) == 0, bob.log()
    assert "session ended (interrupted)" in bob.log()
    assert not openmsx_running(openmsx), "bob's openMSX is still running"
    await alice.wait_message("bob left")
    assert (bob.stored(ITEM0), bob.stored_counter(COINS)) == (1, 11)

    # openMSX crashing ends alice's session too, with the reason.
    assert alice.openmsx_pid is not None and alice.process is not None
    os.kill(alice.openmsx_pid, signal.SIGKILL)
    assert await asyncio.wait_for(alice.process.wait(), 15) == 0, alice.log()
    assert "session ended (openMSX went away: openMSX was killed by SIGKILL)" in alice.log()
    assert alice.stored_counter(COINS) == 11


async def test_arm_after_waits_for_emulated_seconds(peers: Peers) -> None:
    """Alone, with the player's own ROM: armed only once --arm-after emulated seconds passed."""
    alice = await start_alone(peers, "--arm-after", "12", "--rom", str(ROOT / "games" / "demo.rom"))
    await alice.start_game()  # a game in progress at about 7 emulated seconds
    assert await alice.emulated_time() < 11
    await alice.frames(25)  # several of the peer's checks: still too early
    assert SHARING not in alice.log()
    await alice.tcl("set throttle off")
    await alice.wait_log(SHARING)
    await alice.tcl("set throttle on")
    assert await alice.emulated_time() >= 12
    assert "/api/games/demo/rom" not in alice.log(), "her own ROM, nothing downloaded"


async def start_alone(peers: Peers, *args: str) -> Peer:
    alice = peers.new("alice", "--game", "demo", *args, host=True)
    await alice.start()
    await alice.connect()
    await alice.wait_log("alone in the room")
    return alice


CART_ITEM, CART_POKED, CART_COMMAND, CART_ARGUMENT = 0xE020, 0xE021, 0xE100, 0xE101


async def test_late_joiner_without_armed_when_wipes_nothing(peers: Peers, tmp_path: Path) -> None:
    """No armed-when rule: the cartridge clears C000-EFFF when it boots after the BIOS logo."""
    games = cartridge_games(tmp_path / "games")
    alice = peers.new("alice", "--game", "testcart", "--games", str(games), host=True)
    await alice.start()
    await alice.connect()
    await alice.fast_until(SHARING)
    await alice.write(CART_COMMAND, 2)  # the cartridge "picks up an item": E020 becomes 1
    await alice.wait_byte(CART_ITEM, 1)

    bob = peers.new("bob", "--game", "testcart")
    await bob.start()
    await bob.connect()
    await bob.wait_log("got the room's state from")
    await bob.fast_until(SHARING)  # meanwhile his cartridge boots and clears its RAM
    await bob.wait_byte(CART_ITEM, 1)
    await bob.write(CART_ARGUMENT, 0x77)
    await bob.write(CART_COMMAND, 3)  # a change of his own, after the boot: a barrier
    await alice.wait_byte(CART_POKED, 0x77)
    assert await alice.byte(CART_ITEM) == 1, "bob's boot wiped alice's item"


async def test_attach_to_the_players_own_openmsx(peers: Peers) -> None:
    """--attach: the peer uses an openMSX the player started, and leaves it running."""
    alice = peers.new("alice", "--game", "demo", "--attach", host=True)
    alice.tmp.mkdir(parents=True)
    own = await asyncio.create_subprocess_exec(
        peers.openmsx.program,
        "-machine",
        "C-BIOS_MSX1",
        "-cart",
        str(ROOT / "games" / "demo.rom"),
        env={
            **alice.env,
            "OPENMSX_HOME": str(alice.folder / "home"),
            **players_own_openmsx_env(peers.openmsx),
        },
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await alice.connect()  # the socket is there: now the peer can find it too
        await alice.start_game()  # the player is in the middle of a game when the peer attaches
        await alice.start()
        await alice.wait_log(SHARING)
        bob = peers.new("bob", "--game", "demo")
        await bob.start()
        await play(bob)
        await pick_up_item0(bob)
        await alice.wait_byte(ITEM0, 1)

        assert alice.process is not None
        alice.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(alice.process.wait(), 15) == 0, alice.log()
        assert own.returncode is None, "the player's openMSX must keep running"
        assert await alice.tcl("namespace exists msxsync") == "0", "the peer's Tcl is left behind"
        assert "msxsync" not in await alice.tcl("activate_input_layer"), "F10 layer left behind"
        assert "toggle console" in await alice.tcl("bind F10")  # openMSX's own, as before
        assert await alice.byte(ITEM0) == 1  # the player keeps playing alone with the bag
    finally:
        if own.returncode is None:
            own.kill()
        await own.wait()
