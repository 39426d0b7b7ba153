"""The room as the player sees it (peer.core.room.view): names, host, and the sentences worth telling."""

from __future__ import annotations

from peer.console import PeerLine
from peer.core.mesh.events import LinkLost, LinkStatistics, PathChanged, PeerAdmitted, PeerRefused
from peer.core.mesh.paths import Path
from peer.core.room.signalling import Member, Roster
from peer.core.room.view import Note, RoomView, Say
from peer.core.sync.replica import BytesChanged, ChatReceived, PeerStatistics, Repaired, RosterDiffers

ME, ALICE, BOB = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
URL = "ws://rendezvous.example:8765/ws"


def WHERE() -> str:
    return "on rendezvous.example:8765"


def _roster(*members: tuple[bytes, str], host: bytes = ALICE, standby: str | None = None) -> Roster:
    return Roster("friday", host, tuple(Member(key, name, True, standby) for key, name in members))


def test_the_first_roster_says_who_and_where_and_later_ones_who_left() -> None:
    view = RoomView(ME, "me")
    first = view.roster_changed(_roster((ALICE, "alice"), (ME, "me-as-listed"), (BOB, "bob")), where=WHERE)
    assert first == [Say("you are me, in room friday (on rendezvous.example:8765)")]
    later = view.roster_changed(_roster((ALICE, "alice"), (ME, "me")), where=WHERE)
    assert later == [Say("bob left")]
    assert view.name(BOB) == "bob"  # gone from the roster, not from memory
    assert view.name(b"\x09" * 32) == "090909090909"
    assert view.name(ME) == "me"  # the player's own name, whatever the roster lists


def test_a_new_first_member_is_logged_and_a_takeover_told_once() -> None:
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me")), where=WHERE)
    assert view.roster_changed(_roster((ME, "me"), host=ME), where=WHERE) == [
        Note("the room's first member is now me"),
        Say("alice left"),
    ]
    assert view.host_moved(ME) == []  # already the host
    assert view.host_moved(None) == []
    view.roster_changed(_roster((ME, "me"), (BOB, "bob"), host=ME), where=WHERE)
    assert view.host_moved(BOB) == [Say("bob now hosts the room")]
    assert view.host_moved(ME) == [Say("you now host the room")]


def test_hosted_by_a_player_only_when_their_program_is_the_rendezvous() -> None:
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me"), standby=URL), where=WHERE)
    assert view.server(hosting=False, unreachable=False, url=URL) == "hosted by alice"
    assert view.server(hosting=False, unreachable=False, url="ws://elsewhere:1/ws") == "on elsewhere:1"
    assert view.server(hosting=True, unreachable=False, url=URL) == "you host it"
    assert view.server(hosting=False, unreachable=True, url=URL) == "server unreachable, retrying"
    assert view.first_member == ALICE


def test_mesh_events_in_the_players_words() -> None:
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me")), where=WHERE)
    assert view.event(PeerAdmitted(ALICE), 0.0) == [Say("alice joined")]
    chat = view.event(ChatReceived(ALICE, "hi\x1b[2J"), 0.0)
    assert chat == [Say("alice (020202020202) says: hi[2J")]  # no escape sequence reaches the terminal
    assert view.event(PathChanged(ALICE, Path.RELAYED), 0.0) == [
        Say("alice can only be reached through the server's relay")
    ]
    assert view.event(PathChanged(ALICE, Path.RELAYED), 1.0) == []  # once per player
    assert view.event(PathChanged(ALICE, Path.DIRECT), 1.0) == []
    assert view.event(LinkLost(ALICE, "silent"), 0.0) == [Note("connection to alice lost: silent")]
    assert view.event(PeerRefused(ALICE, "different-game", "plays a different ROM"), 0.0) == [
        Note("not sharing with alice: it plays a different ROM")
    ]
    assert view.event(PeerRefused(ALICE, "password-mismatch", ""), 0.0) == []
    assert view.event(Repaired(ALICE), 0.0) == [Note("repaired differences with alice")]
    assert view.event(RosterDiffers(ALICE), 0.0) == [
        Say("alice sees other players than you: the server may split the room")
    ]
    assert view.event(RosterDiffers(ALICE, True), 0.0) == [Say("alice and you see the same players again")]


def test_peer_lines_say_when_each_players_last_change_came() -> None:
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me"), (BOB, "bob")), where=WHERE)
    assert view.event(BytesChanged(ALICE, ((0xC000, b"\x01"),)), 100.0) == []
    statistics = {
        ALICE: LinkStatistics(sync=PeerStatistics(rtt=0.012), path=Path.DIRECT),
        BOB: LinkStatistics(),
    }
    assert view.peer_lines(statistics, {ALICE}, 103.5) == (
        PeerLine("alice", True, 0.012, 3.5, "direct"),
        PeerLine("bob", False, None, None, None),
    )


def test_a_far_clock_is_told_once_per_peer_and_says_whose_is_ahead() -> None:
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me"), (BOB, "bob")), where=WHERE)
    statistics = {
        ALICE: LinkStatistics(sync=PeerStatistics(skew=-41.0)),
        BOB: LinkStatistics(sync=PeerStatistics(skew=3.0)),
    }
    told = view.clock_warnings(statistics)
    assert len(told) == 1 and isinstance(told[0], Say)
    assert "your clock and alice's differ by 41 s (yours is ahead)" in told[0].text
    assert view.clock_warnings(statistics) == []
    statistics[BOB] = LinkStatistics(sync=PeerStatistics(skew=25.0))
    assert "(bob's is ahead)" in view.clock_warnings(statistics)[0].text
