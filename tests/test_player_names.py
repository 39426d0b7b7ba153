"""Names a player can trust (issue 30, F8): unique in a room as a reader sees them, shown with the
key's fingerprint when they look alike, and chat that never reads like msxsync's own lines."""

from __future__ import annotations

import re

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.core.room.session import NOBODY_ANSWERED, NOT_SHARING_YET, RECONNECTED, REFUSED, UNREACHABLE
from peer.core.room.signalling import Member, Roster, parse_member
from peer.core.room.view import RoomView, Say
from peer.core.sync.replica import ChatReceived
from rendezvous import names
from tests.rendezvous_support import connect, from_address, logged_in

ME, ALICE, BOB, CAROL = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32
CYRILLIC_O = "\u043e"
GREEK_O = "\u03bf"


def _roster(*members: tuple[bytes, str]) -> Roster:
    return Roster("friday", ALICE, tuple(Member(key, name, True, None) for key, name in members))


def _where() -> str:
    return "on rendezvous.example:8765"


def test_names_fold_to_one_skeleton_when_they_look_alike() -> None:
    """The pure fold: case, accents, fullwidth, Cyrillic/Greek look-alikes, I/l/1 and O/0, the
    characters a peer never shows; different names stay different."""
    for a, b in [
        ("Bob", "bob"),
        ("Bob", f"B{CYRILLIC_O}b"),
        ("Bob", f"B{GREEK_O}b"),
        ("\u0412\u041e\u0412", "BOB"),  # Cyrillic VE O VE
        ("Bob", "B\u00f3b"),  # o with acute
        ("Bob", "B" + "o\u0301" + "b"),  # o and a combining acute
        ("Bob", "\uff22\uff4f\uff42"),  # fullwidth
        ("AI", "Al"),
        ("player1", "playerl"),
        ("B0b", "BOb"),
        ("Bob:", "Bob"),
        ("[bob]", "bob"),
        ("modern", "modem"),
    ]:
        assert names.alike(a, b), (a, b)
    for a, b in [("Bob", "Rob"), ("player1", "player2"), ("alice", "alicia")]:
        assert not names.alike(a, b), (a, b)
    for word in ("resync", "Resync:", "re-sync", "r\u0435sync", "MSXSYNC", "msx sync", "You", "openMSX"):
        assert names.reserved(word), word
    assert not names.reserved("bob") and not names.reserved("resyncer") and not names.reserved("yours")
    for hidden in ("\u202e", "\u200b", "\u200d", "\u2066", "\u3164", "\u034f", "\ufe0f", "\u2800", "\u115f"):
        assert not names.visible(f"bo{hidden}b"), hex(ord(hidden))
    assert names.visible("Bob the 2nd") and names.visible("Zo\u00eb")


async def test_the_rendezvous_refuses_a_look_alike_name_in_the_same_room(base: str) -> None:
    """A real server over a real socket: a second "alice" (Cyrillic a), "resync", and an invisible
    filler are refused with their codes; the look-alike is welcome in another room."""
    async with (
        aiohttp.ClientSession() as honest_session,
        from_address("127.0.0.5") as attacker_session,
        logged_in(honest_session, base, "alice") as alice,
        logged_in(attacker_session, base, "\u0430lice") as impostor,
        logged_in(attacker_session, base, "resync") as program,
    ):
        await alice.join("friday")
        joined = await alice.expect("joined")
        await impostor.join("friday")
        refused = await impostor.error("name_taken")
        assert "another name" in refused["message"]
        await program.join("friday")
        await program.error("name_reserved")
        await program.join("other")
        await program.error("name_reserved")  # whatever the room
        await impostor.join("other")
        assert (await impostor.expect("joined"))["room"] == "other"
        roster = await alice.expect("roster")
        assert [m["name"] for m in roster["members"]] == ["alice"] == [m["name"] for m in joined["members"]]


async def test_an_invisible_filler_in_a_name_is_refused_at_hello(base: str) -> None:
    """Bidi overrides and zero-width characters were refused already (not printable); a Hangul
    filler is printable to Python and shows nothing."""
    async with (
        from_address("127.0.0.5") as attacker_session,
        connect(attacker_session, base, "bo\u3164b") as ws,
    ):
        await ws.challenge()
        await ws.send(**ws.hello())
        body = await ws.error("bad_message")
        assert "name" in body["message"]


def test_the_peer_shows_look_alike_names_with_their_fingerprints() -> None:
    """The roster is the rendezvous's word: two members called alike, one called like us, and one
    called `resync` are each shown with their key's fingerprint; a name like nobody's is not."""
    view = RoomView(ME, "me")
    view.roster_changed(
        _roster((ALICE, "alice"), (BOB, f"{chr(0x0430)}lice"), (ME, "me"), (CAROL, "carol")), where=_where
    )
    assert view.name(ALICE) == "alice (02020202)"
    assert view.name(BOB) == "\u0430lice (03030303)"
    assert view.name(CAROL) == "carol"
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me"), (CAROL, "M\u0435")), where=_where)
    assert view.name(CAROL) == "M\u0435 (04040404)"  # like us (a Cyrillic e)
    assert view.name(ME) == "me"
    assert view.name(BOB) == "\u0430lice (03030303)"  # gone, but remembered as a look-alike
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me"), (CAROL, "resync")), where=_where)
    assert view.name(CAROL) == "resync (04040404)"
    # An older rendezvous may let in a name with an invisible filler: the roster is still read,
    # the filler is not shown, and the name is told apart from the one it imitates.
    filler = parse_member({"key": (b"\x05" * 32).hex(), "name": "car\u3164ol", "ready": True})
    assert filler is not None
    view.roster_changed(
        Roster("friday", ALICE, (*_roster((ME, "me"), (CAROL, "carol")).members, filler)), where=_where
    )
    assert view.name(filler.key) == "carol (05050505)" and view.name(CAROL) == "carol (04040404)"


# Every sentence the program itself tells the player with no name in it.
PROGRAM_LINES = (NOT_SHARING_YET, NOBODY_ANSWERED.format(10), UNREACHABLE, RECONNECTED, REFUSED)
CHAT = re.compile(r"[^:]* \([0-9a-f]{8}\) says: ")


@given(st.text(min_size=1, max_size=32), st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_chat_never_reads_like_the_programs_own_lines(name: str, text: str) -> None:
    """Whatever a member is called and says, its line starts with a colon-free name, its key's
    fingerprint and "says:" (program lines never do), and is none of the program's lines."""
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, name), (ME, "me")), where=_where)
    [line] = view.event(ChatReceived(ALICE, text), 0.0)
    assert isinstance(line, Say)
    assert CHAT.match(line.text), line.text
    assert line.text not in PROGRAM_LINES
    assert not any(CHAT.match(program) for program in PROGRAM_LINES)


def test_a_member_called_resync_cannot_say_the_resync_line() -> None:
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "resync"), (ME, "me")), where=_where)
    [line] = view.event(ChatReceived(ALICE, NOT_SHARING_YET.removeprefix("resync: ")), 0.0)
    assert isinstance(line, Say)
    assert line.text == "resync (02020202) says: asked the room again (your game is not sharing yet)"
    assert not line.text.startswith("resync:")
