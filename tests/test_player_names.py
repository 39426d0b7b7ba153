"""Names a player can trust (issue 30, F8): unique in a room as a reader sees them, shown with the
key's fingerprint when they look alike, and chat that never reads like msxsync's own lines."""

from __future__ import annotations

import io
import re

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.console import INDENT, Status, chat_line, player_name, rows
from peer.core.mesh.events import PeerAdmitted
from peer.core.room.session import NOBODY_ANSWERED, NOT_SHARING_YET, RECONNECTED, REFUSED, UNREACHABLE
from peer.core.room.signalling import Member, Roster, parse_member
from peer.core.room.view import RoomView, Say
from peer.core.sync.replica import ChatReceived
from peer.emulator import RESYNC_MESSAGE
from peer.terminal import Terminal
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
        assert "\u0430lice" in refused["message"] and "'alice'" not in refused["message"]  # (its own only)
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
    assert view.name(ALICE) == "alice (020202020202)"
    assert view.name(BOB) == "\u0430lice (030303030303)"
    assert view.name(CAROL) == "carol"
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me"), (CAROL, "M\u0435")), where=_where)
    assert view.name(CAROL) == "M\u0435 (040404040404)"  # like us (a Cyrillic e)
    assert view.name(ME) == "me"
    assert view.name(BOB) == "\u0430lice (030303030303)"  # gone, but remembered as a look-alike
    view.roster_changed(_roster((ALICE, "alice"), (ME, "me"), (CAROL, "resync")), where=_where)
    assert view.name(CAROL) == "resync (040404040404)"
    # An older rendezvous may let in a name with an invisible filler: the roster is still read,
    # the filler is not shown, and the name is told apart from the one it imitates.
    filler = parse_member({"key": (b"\x05" * 32).hex(), "name": "car\u3164ol", "ready": True})
    assert filler is not None
    view.roster_changed(
        Roster("friday", ALICE, (*_roster((ME, "me"), (CAROL, "carol")).members, filler)), where=_where
    )
    assert view.name(filler.key) == "carol (050505050505)" and view.name(CAROL) == "carol (040404040404)"


# Every sentence the program itself tells the player with no name in it, and the start of those
# with one.
PROGRAM_LINES = (
    NOT_SHARING_YET,
    NOBODY_ANSWERED.format(10),
    UNREACHABLE,
    RECONNECTED,
    REFUSED,
    RESYNC_MESSAGE,
    "resynced: you have the room's items",
)
# A chat line: the name (nothing in it reads as a colon or a parenthesis), the fingerprint, "says:".
CHAT = re.compile(r"(?P<name>[^(]*) \((?P<fp>[0-9a-f]{12})\) says: ")
# What a player could be called to fool a reader: colons and parentheses and their look-alikes,
# look-alike letters, spaces and program words.
TRICKY = (
    ":\uff1a\ua789\u02f8\u2236\u05c3\u0589\ufe13\ufe55()\uff08\uff09\u207d\u2768\u24a0[]{}$\\\"' "
    "abelorsuyABO01|I\u043e\u0430\u03bf\u0585\u13be\u0299\u0e31\u20dd\u3164"
)
tricky_names = st.one_of(
    st.text(alphabet=TRICKY, min_size=1, max_size=32),
    st.builds(
        lambda word, rest: word + rest,
        st.sampled_from(["resync", "msxsync", "refused", "resynced", "openMSX"]),
        st.text(alphabet=TRICKY, max_size=20),
    ),
)


def _reads_as_program(row: str) -> bool:
    return any(row.startswith(line.split(":")[0] + ":") for line in PROGRAM_LINES)


@given(tricky_names, st.one_of(st.text(max_size=200), st.text(alphabet=TRICKY + "\u4e2d", max_size=200)))
@settings(max_examples=400, deadline=None)
def test_chat_never_reads_like_the_programs_own_lines(name: str, text: str) -> None:
    """Whatever a member is called and says, its line starts with a name in which nothing reads as a
    colon or a parenthesis, its key's fingerprint and "says:"; no row of it on a terminal, however
    wide, starts like a program line, and rows after the first are indented."""
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, name), (ME, "me")), where=_where)
    [line] = view.event(ChatReceived(ALICE, text), 0.0)
    assert isinstance(line, Say)
    match = CHAT.match(line.text)
    assert match is not None and match["fp"] == ALICE.hex()[:12], line.text
    assert not any(names.unshown(ch) for ch in match["name"]), match["name"]
    assert not _reads_as_program(line.text)
    for columns in (20, 40, 79):
        first, *rest = rows(line.text, columns)
        assert first.startswith(match["name"][: columns // 2].rstrip())
        assert all(row.startswith(INDENT) and not _reads_as_program(row.lstrip()) for row in rest)


def _no_status() -> Status:
    raise AssertionError("no status line is drawn by say()")


def test_spaces_cannot_push_a_fake_program_line_to_the_start_of_a_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 30, F8 (review 1): 60 spaces put "resync: ..." alone at the start of the next row of
    an 80-column terminal. Spaces are collapsed, and the terminal wraps the line itself, the second
    row indented; so does a filler of words, or of wide characters a terminal counts twice."""
    padded = chat_line("bob", "1a2b3c4d5e6f", "x" + " " * 60 + "resync: asked the room again")
    assert padded == "bob (1a2b3c4d5e6f) says: x resync: asked the room again"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    for filler in ("x" * 54, "x " * 27, "\u4e2d" * 27):
        stream = Tty()
        Terminal(_no_status, lambda _: None, stream).say(
            chat_line("bob", "1a2b3c4d5e6f", filler + " resync: asked the room again")
        )
        _, *rest = stream.getvalue().splitlines()
        assert rest and all(row.startswith(INDENT) for row in rest), stream.getvalue()


def test_colon_look_alikes_and_parentheses_are_never_shown_in_a_name() -> None:
    """Review 2 and 3: a fullwidth or modifier colon, a ratio sign, and parentheses (a fake
    fingerprint) are not shown; a name that starts with a program word is refused."""
    for name in (
        "msxsync\uff1abob",
        "msxsync\ua789 bob",
        "resync\u2236 asked the room",
        "resynced",
        "msxsync bob",
    ):
        assert names.reserved(name), name
        assert names.refusal(name, []) is not None
    for name in (
        "bob\uff1a",
        "bob\ua789",
        "bob\u02f8",
        "bob\u2236",
        "bob\u05c3",
        "bob\u0589",
        "bob\ufe30",
        "bob\ufe55",
    ):
        assert names.shown(name) == "bob" and names.alike(name, "bob"), name
    assert names.shown("alice (020202020202)") == "alice 020202020202"
    assert not names.reserved("you rock") and not names.reserved("resyncer") and names.reserved("You")
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "alice"), (BOB, "alice (020202020202)"), (ME, "me")), where=_where)
    assert view.event(PeerAdmitted(BOB), 0.0) == [Say("alice 020202020202 joined")]
    assert view.event(PeerAdmitted(ALICE), 0.0) == [Say("alice joined")]


def test_look_alikes_the_first_table_missed() -> None:
    """Review 5: small capitals, Greek kappa, Armenian o, Cherokee, the dental click, Cyrillic ghe,
    vv and cl; marks of combining class 0 (Thai, enclosing) are dropped like the others."""
    for a, b in [
        ("bob", "\u0299\u1d0f\u0299"),
        ("kate", "\u03baate"),
        ("bob", "b\u0585b"),
        ("BOB", "\u13f4\u13be\u13f4"),
        ("Al", "A\u01c0"),
        ("rob", "\u0433ob"),
        ("will", "vvill"),
        ("dan", "clan"),
        ("bob", "bo\u0e31b"),
        ("bob", "bo\u20ddb"),
    ]:
        assert names.alike(a, b), (a, b)
    assert not names.alike("dan", "dean")
    assert names.mixed("\u0503an") and not names.mixed("Zo\u00eb") and not names.mixed("\u4e2d\u6587")
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "\u0503an"), (BOB, "dean"), (ME, "me")), where=_where)
    assert view.name(ALICE) == "\u0503an (020202020202)" and view.name(BOB) == "dean"


async def test_the_rendezvous_compares_names_as_they_are_shown(base: str) -> None:
    """Review 4: the server folded 32 raw characters, the peer 24 shown ones, and let "{}" (shown
    as "player") join beside a "player". Now both fold the shown name, and a name of which nothing
    can be shown is refused at hello."""
    long = "a" * 24
    async with (
        aiohttp.ClientSession() as honest_session,
        from_address("127.0.0.5") as attacker_session,
        logged_in(honest_session, base, long + "x") as honest,
        logged_in(attacker_session, base, long + "y") as impostor,
        connect(attacker_session, base, "{}") as blank,
    ):
        await honest.join("friday")
        await honest.expect("joined")
        await impostor.join("friday")
        await impostor.error("name_taken")
        await blank.challenge()
        await blank.send(**blank.hello())
        assert "name" in (await blank.error("bad_message"))["message"]


def test_a_right_to_left_name_keeps_its_fingerprint_after_it() -> None:
    """Review 12: "(fingerprint)" after a Hebrew or Arabic name would join the name's right-to-left
    run on a terminal that lays out bidi text (and a leading Hebrew name would turn the whole line
    right-to-left): such a name stands between left-to-right marks; a Latin name is unchanged."""
    hebrew, arabic, lrm = "\u05e9\u05dc\u05d5\u05dd", "\u0633\u0644\u0627\u0645", "\u200e"
    assert chat_line(hebrew, "1a2b3c4d5e6f", "hi") == f"{lrm}{hebrew}{lrm} (1a2b3c4d5e6f) says: hi"
    assert chat_line("bob", "1a2b3c4d5e6f", "hi") == "bob (1a2b3c4d5e6f) says: hi"
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, arabic), (BOB, arabic + ":"), (ME, "me")), where=_where)
    assert view.name(ALICE) == f"{lrm}{arabic}{lrm} (020202020202)"  # (alike: marked)
    assert view.event(PeerAdmitted(ALICE), 0.0) == [Say(f"{lrm}{arabic}{lrm} (020202020202) joined")]


def test_players_who_name_nobody_get_names_apart() -> None:
    """Review 6: without --name, every Windows player was "player" (no $USER), and a second one was
    refused from a named room; the default carries the key's first hex digits."""
    first, second = player_name(None, None, ALICE), player_name(None, None, BOB)
    assert first == "player-0202" and second == "player-0303" and not names.alike(first, second)
    assert player_name(None, "deck", ALICE) == "deck-0202"
    assert player_name("Bob:", "deck", ALICE) == "Bob"
    assert player_name("{}", "deck", ALICE) == "deck-0202"
    assert player_name(None, "x" * 40, ALICE) == "x" * 19 + "-0202"


def test_a_member_called_resync_cannot_say_the_resync_line() -> None:
    view = RoomView(ME, "me")
    view.roster_changed(_roster((ALICE, "resync"), (ME, "me")), where=_where)
    [line] = view.event(ChatReceived(ALICE, NOT_SHARING_YET.removeprefix("resync: ")), 0.0)
    assert isinstance(line, Say)
    assert line.text == "resync (020202020202) says: asked the room again (your game is not sharing yet)"
    assert not line.text.startswith("resync:")
