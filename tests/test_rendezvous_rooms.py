"""The pure room rules and wire parsing of the rendezvous, without any network."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from peer.core.room.signalling import Member, Roster
from peer.core.room.view import RoomView
from rendezvous import names, protocol
from rendezvous.protocol import PROTOCOL_VERSION, ProtocolError, RateLimiter, parse_message
from rendezvous.rooms import MAX_PAST, Deliver, Lobby, LobbyLimits, PasswordCheck, RoomError, recipients

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def types_for(out: list[Deliver], key: str) -> list[str]:
    return [str(d.message["type"]) for d in out if d.to == key]


def lobby(**limits: int) -> Lobby:
    return Lobby(LobbyLimits(**limits))


def test_first_member_hosts_and_everyone_gets_the_roster() -> None:
    rooms = lobby()
    out = rooms.join(A, "Alice", "demo", "r1", None)
    assert types_for(out, A) == ["joined", "roster"]
    out = rooms.join(B, "Bob", "demo", "r1", None)
    assert types_for(out, B) == ["joined", "roster"]
    assert types_for(out, A) == ["member_joined", "roster"]
    roster = out[-1].message
    assert roster["host"] == A
    assert [m["key"] for m in roster["members"]] == [A, B]  # type: ignore[attr-defined]


def test_host_leaving_hands_over_to_earliest_remaining_joiner() -> None:
    rooms = lobby()
    for key in (A, B, C):
        rooms.join(key, key[:1], "demo", "r", None)
    out = rooms.leave(A)
    assert types_for(out, A) == ["left"]
    assert types_for(out, B) == ["member_left", "roster"]
    assert out[-1].message["host"] == B
    out = rooms.disconnect(B)
    assert recipients(out) == {C}
    assert out[-1].message["host"] == C
    rooms.disconnect(C)
    assert rooms.room_count == 0


def test_refusals_leave_state_unchanged() -> None:
    rooms = lobby(room_capacity=2)
    rooms.join(A, "a", "demo", "r", None)
    with pytest.raises(RoomError) as err:
        rooms.join(A, "a", "demo", "other", None)
    assert err.value.code == "already_in_room"
    with pytest.raises(RoomError) as err:
        rooms.join(B, "b", "galious", "r", None)
    assert err.value.code == "wrong_game"
    rooms.join(B, "b", "demo", "r", None)
    with pytest.raises(RoomError) as err:
        rooms.join(C, "c", "demo", "r", None)
    assert err.value.code == "room_full"
    with pytest.raises(RoomError) as err:
        rooms.join(C, "c", "demo", "big", 3)
    assert err.value.code == "bad_message"
    with pytest.raises(RoomError) as err:
        rooms.leave(C)
    assert err.value.code == "not_in_room"
    with pytest.raises(RoomError) as err:
        rooms.chat(C, "x")
    assert err.value.code == "not_in_room"
    assert [s.players for s in rooms.summaries()] == [2]


def test_max_rooms() -> None:
    rooms = lobby(max_rooms=1)
    rooms.join(A, "a", "demo", "r", None)
    with pytest.raises(RoomError) as err:
        rooms.join(B, "b", "demo", None, None)
    assert err.value.code == "too_many_rooms"


def test_password_flow_uses_checks_from_the_adapter() -> None:
    rooms = lobby()
    plan = rooms.plan_join(A, "demo", "secret", "pw")
    assert plan.hash_new_password and plan.verify_against is None
    rooms.join(A, "a", "demo", "secret", None, PasswordCheck(new_hash=b"HASH"))
    with pytest.raises(RoomError) as err:
        rooms.plan_join(B, "demo", "secret", None)
    assert err.value.code == "password_required"
    plan = rooms.plan_join(B, "demo", "secret", "guess")
    assert plan.verify_against == b"HASH"
    with pytest.raises(RoomError) as err:
        rooms.join(B, "b", "demo", "secret", None, PasswordCheck(plan.verify_against, False))
    assert err.value.code == "wrong_password"
    with pytest.raises(RoomError) as err:  # verified against some other (older) hash
        rooms.join(B, "b", "demo", "secret", None, PasswordCheck(b"HASH2", True))
    assert err.value.code == "try_again"
    out = rooms.join(B, "b", "demo", "secret", None, PasswordCheck(plan.verify_against, True))
    assert out[0].message["password"] is True


def test_kick_is_for_the_host_and_bans() -> None:
    rooms = lobby()
    for key in (A, B, C):
        rooms.join(key, key[:1], "demo", "r", None)
    with pytest.raises(RoomError) as err:
        rooms.kick(B, C)
    assert err.value.code == "not_host"
    with pytest.raises(RoomError) as err:
        rooms.kick(A, A)
    assert err.value.code == "bad_target"
    out = rooms.kick(A, C)
    assert types_for(out, C) == ["kicked"]
    assert types_for(out, B) == ["member_kicked", "roster"]
    with pytest.raises(RoomError) as err:
        rooms.join(C, "c", "demo", "r", None)
    assert err.value.code == "banned"


def test_quick_match_fills_rooms_of_the_game_then_opens_new_ones() -> None:
    rooms = lobby()
    rooms.join(D, "d", "demo", "named", 2)  # a named room is never handed out by quick match
    joined = [rooms.join(k, k[:1], "demo", None, 2)[0].message["room"] for k in (A, B, C)]
    assert joined[0] == joined[1] != joined[2]
    assert str(joined[0]).startswith("quick-")
    other = rooms.join("e" * 64, "e", "galious", None, 2)[0].message["room"]
    assert other not in joined
    with pytest.raises(RoomError) as err:
        rooms.plan_join("f" * 64, "demo", None, "pw")
    assert err.value.code == "bad_message"


def test_relay_only_within_the_room() -> None:
    rooms = lobby()
    rooms.join(A, "a", "demo", "r", None)
    rooms.join(B, "b", "demo", "r", None)
    rooms.join(C, "c", "demo", "s", None)
    out = rooms.relay(A, B, {"sdp": "x"})
    assert out == [Deliver(B, {"type": "signal", "from": A, "room": "r", "data": {"sdp": "x"}})]
    for target in (C, A, D):
        with pytest.raises(RoomError) as err:
            rooms.relay(A, target, {})
        assert err.value.code == "bad_target"
    assert recipients(rooms.chat(A, "hi")) == {A, B}


# Names players could pick to pass for each other: alike as a reader sees them (case, look-alike
# letters, what a name is not shown with, what is cut after `names.MAX_SHOWN` characters).
LOOK_ALIKES = (
    "bob",
    "Bob",
    "B\u043eb",
    "b0b",
    "bob:",
    "(bob)",
    "\u0299\u1d0f\u0299",
    "a" * 24 + "x",
    "a" * 24 + "y",
    "alice",
)

ops = st.lists(
    st.tuples(
        st.sampled_from(["join", "quick", "leave", "disconnect", "kick", "ready"]),
        st.sampled_from([A, B, C, D]),
        st.sampled_from([A, B, C, D]),
        st.sampled_from(["r1", "r2"]),
        st.sampled_from(LOOK_ALIKES),
    ),
    max_size=60,
)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_invariants_hold_under_any_sequence(sequence: list[tuple[str, str, str, str, str]]) -> None:
    """Rooms hold 1 to capacity members, a key is in one room at most, and no room holds two names
    a player could take for each other as the peer shows them (issue 30, F8)."""
    rooms = lobby(room_capacity=3, max_rooms=3)
    for op, key, other, room, name in sequence:
        try:
            match op:
                case "join":
                    rooms.join(key, name, "demo", room, None)
                case "quick":
                    rooms.join(key, name, "demo", None, None)
                case "leave":
                    rooms.leave(key)
                case "disconnect":
                    rooms.disconnect(key)
                case "kick":
                    rooms.kick(key, other)
                case "ready":
                    rooms.set_ready(key, True)
        except RoomError:
            pass
        seen: set[str] = set()
        for summary in rooms.summaries():
            room_obj = rooms.room(summary.name)
            assert room_obj is not None
            assert 1 <= len(room_obj.members) <= room_obj.capacity <= 3
            keys = room_obj.member_keys()
            assert not seen & set(keys)
            seen |= set(keys)
            assert all(rooms.room_of(k) is room_obj for k in keys)
            view = RoomView(b"\x00" * 32, "observer")
            members = tuple(Member(bytes.fromhex(m.key), m.name, True) for m in room_obj.members)
            view.roster_changed(Roster(room_obj.name, members[0].key, members), where=lambda: "here")
            shown = list(view.names.values())
            assert not any(names.alike(a, b) for i, a in enumerate(shown) for b in shown[i + 1 :]), shown
        assert rooms.room_count <= 3


# --- wire parsing ------------------------------------------------------------------------


def signed_hello(nonce: bytes, key: SigningKey | None = None, version: int = PROTOCOL_VERSION) -> str:
    key = key or SigningKey.generate()
    signature = key.sign(protocol.signed_hello_bytes(nonce)).signature
    return json.dumps(
        {
            "type": "hello",
            "version": version,
            "name": " Alice ",
            "key": key.verify_key.encode().hex().upper(),
            "signature": signature.hex(),
        }
    )


def test_hello_proof() -> None:
    nonce = bytes(range(32))
    hello = parse_message(signed_hello(nonce))
    assert isinstance(hello, protocol.Hello)
    assert hello.name == "Alice" and hello.key == hello.key.lower()
    protocol.verify_hello(hello, nonce)
    with pytest.raises(ProtocolError) as err:
        protocol.verify_hello(hello, bytes(32))
    assert err.value.code == "bad_signature" and err.value.fatal


def test_version_mismatch_names_both_versions() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_message(signed_hello(bytes(32), version=7))
    assert err.value.code == "version_mismatch" and err.value.fatal
    assert str(PROTOCOL_VERSION) in err.value.message and "7" in err.value.message


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "bad_json"),
        ("[1]", "bad_json"),
        ("{}", "bad_message"),
        ('{"type": 3}', "bad_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "join", "game": "../x"}', "bad_message"),
        ('{"type": "join", "game": "demo", "room": "a/b"}', "bad_message"),
        ('{"type": "join", "game": "demo", "capacity": true}', "bad_message"),
        ('{"type": "ready", "ready": 1}', "bad_message"),
        ('{"type": "signal", "to": "xyz", "data": {}}', "bad_message"),
        ('{"type": "signal", "to": "' + A + '", "data": []}', "bad_message"),
        ('{"type": "chat", "text": ""}', "bad_message"),
        ('{"type": "chat", "text": "' + "x" * 501 + '"}', "bad_message"),
        (f'{{"type":"hello", "version":{PROTOCOL_VERSION}, "name": "\\u0000", "key": "{A}"}}', "bad_message"),
        ("[" * 100000, "bad_json"),
    ],
)
def test_garbage_gets_a_code(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_message(text)
    assert err.value.code == code
    assert err.value.message.endswith(".")


@given(st.text(max_size=200))
def test_parser_fuzz_only_raises_protocol_errors(text: str) -> None:
    try:
        parse_message(text)
    except ProtocolError as exc:
        assert exc.code


def test_rate_limiter_limits_then_calls_a_flood() -> None:
    limiter = RateLimiter(rate=10.0, burst=3, now=0.0)
    assert [limiter.admit(0.0) for _ in range(3)] == ["ok"] * 3
    assert limiter.admit(0.0) == "limited"
    assert limiter.admit(0.0) == "drop"
    assert limiter.admit(0.5) == "ok"  # refilled: forgiven
    results = [limiter.admit(0.5) for _ in range(8)]
    assert results[-1] == "flood"


def test_pure_modules_do_not_import_the_network() -> None:
    code = (
        "import sys, rendezvous.rooms, rendezvous.protocol; "
        "bad = {'asyncio', 'aiohttp', 'socket'} & set(sys.modules); print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_standby_url_is_carried_in_the_roster_and_validated():
    from rendezvous import protocol
    from rendezvous.rooms import RoomMember

    assert RoomMember("k", "n", standby="http://10.0.0.2:4567").to_json()["standby"] == "http://10.0.0.2:4567"
    assert "standby" not in RoomMember("k", "n").to_json()
    good = protocol.parse_message('{"type":"join","game":"demo","room":null,"standby":"http://[::1]:4567"}')
    assert isinstance(good, protocol.Join)
    assert good.standby == "http://[::1]:4567"
    for bad in ["file:///etc/passwd", "http://host", "http://a b:1", "javascript:1", "http://x:1/path"]:
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_message(f'{{"type":"join","game":"demo","room":null,"standby":"{bad}"}}')


def test_rosters_name_the_members_who_left_most_recent_last_and_bounded() -> None:
    rooms = lobby()
    for key in (A, B, C):
        rooms.join(key, key[:1], "demo", "r", None)
    rooms.leave(A)
    out = rooms.disconnect(B)
    assert out[-1].message["past"] == [A, B]
    joined = rooms.join(A, "a", "demo", "r", None)  # back again: a member, not past
    assert joined[0].message["past"] == [B]
    room = rooms._rooms["r"]
    for number in range(MAX_PAST + 5):
        room.remember(f"{number:064x}")
    assert len(room.past) == MAX_PAST and room.past[-1] == f"{MAX_PAST + 4:064x}"


def test_throw_away_keys_do_not_push_a_member_who_stayed_off_the_past_list() -> None:
    """Issue 30, F5: 64 keys that joined and left within 0.2 s pushed a real player off the list
    (and a joiner then refused that player's writes); now the shortest stays go first."""
    rooms = lobby()
    rooms.join(A, "a", "demo", "r", None, now=0.0)
    rooms.join(B, "b", "demo", "r", None, now=0.0)
    rooms.leave(B, now=600.0)  # played for ten minutes
    for number in range(MAX_PAST + 10):
        throw_away = f"{number:064x}"
        rooms.join(throw_away, "x", "demo", "r", None, now=600.0 + number * 0.003)
        rooms.leave(throw_away, now=600.0 + number * 0.003 + 0.002)
    room = rooms.room("r")
    assert room is not None and len(room.past) == MAX_PAST
    assert B in room.past and room.past[-1] == f"{MAX_PAST + 9:064x}"  # the latest kept too
    # Keys that stayed longer than B push B out; a return adds to a member's time.
    rooms.join(C, "c", "demo", "r", None, now=700.0)
    rooms.leave(C, now=1000.0)
    rooms.join(C, "c", "demo", "r", None, now=1000.0)
    rooms.disconnect(C, now=1400.0)
    assert room.tenure[C] == 700.0
    for number in range(MAX_PAST - 1):
        long_stay = f"{number + 1000:064x}"
        rooms.join(long_stay, "y", "demo", "r", None, now=2000.0)
        rooms.leave(long_stay, now=2650.0)
    assert B not in room.past and C in room.past


@settings(max_examples=50, deadline=None)
@given(st.floats(1.0, 36_000.0), st.lists(st.floats(0.0, 0.99), max_size=3 * MAX_PAST))
def test_no_churn_of_shorter_stays_pushes_a_player_off_the_past_list(
    stayed: float, churn: list[float]
) -> None:
    rooms = lobby()
    rooms.join(A, "a", "demo", "r", None, now=0.0)
    rooms.join(B, "b", "demo", "r", None, now=0.0)
    rooms.leave(B, now=stayed)
    at = stayed
    for number, stay in enumerate(churn):
        throw_away = f"{number + 1:064x}"
        rooms.join(throw_away, "x", "demo", "r", None, now=at)
        at += stay
        rooms.leave(throw_away, now=at)
        room = rooms.room("r")
        assert room is not None and len(room.past) <= MAX_PAST and B in room.past
