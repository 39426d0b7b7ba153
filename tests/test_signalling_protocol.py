"""The signalling client's protocol object (peer.core.room.signalling), without sockets or a loop.

Every frame a rendezvous could send, in every phase, either does what the protocol says or
becomes an event (BadMessage, Disconnect); only the refusals PROTOCOL.md lists end the client.
The hostile inputs are the server's own (tests/hostile.py). Also: the shared patterns in
rendezvous.wire match whole strings, and the rendezvous package has no import cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from peer.core.room.signalling import (
    FATAL_CODES,
    HANDSHAKE_TIMEOUT,
    JOIN_REFUSALS,
    JOIN_TIMEOUT,
    MAX_CAPACITY,
    OUTBOX_SIZE,
    REJOIN_GRACE,
    REJOIN_RETRY,
    BadMessage,
    Disconnect,
    IceServer,
    Notice,
    Phase,
    Refused,
    RejoinRefused,
    RosterChanged,
    SignallingEvent,
    SignallingProtocol,
    SignalReceived,
    Welcomed,
)
from rendezvous import protocol as server_protocol
from rendezvous import wire
from tests.hostile import GARBAGE_TEXTS, KEY, hostile_frames

NONCE = bytes(range(32))
OTHER = bytes.fromhex(KEY)
CLIENT_TYPES = [
    "challenge",
    "welcome",
    "joined",
    "roster",
    "signal",
    "error",
    "member_left",
    "member_kicked",
    "member_joined",
    "chat",
    "",
    "ROSTER",
]
CLIENT_FIELDS = [
    "nonce",
    "version",
    "room",
    "host",
    "members",
    "from",
    "data",
    "code",
    "message",
    "fatal",
    "key",
]


def make(room: str | None = "r") -> tuple[SignallingProtocol, SigningKey]:
    signing = SigningKey.generate()
    return SignallingProtocol(signing_key=signing, name="me", game="demo", room=room), signing


def roster_text(me: bytes, *others: bytes, room: str = "r", kind: str = "roster") -> str:
    members = [{"key": me.hex(), "name": "me", "ready": False}]
    members += [{"key": k.hex(), "name": f"p{i}", "ready": True} for i, k in enumerate(others)]
    return json.dumps({"type": kind, "room": room, "host": me.hex(), "members": members})


def sent(proto: SignallingProtocol) -> list[dict[str, Any]]:
    return [json.loads(text) for text in proto.data_to_send()]


def drive(proto: SignallingProtocol, phase: Phase, now: float = 0.0) -> None:
    """Through a correct handshake up to `phase`."""
    proto.connection_made(now)
    if phase is Phase.AWAIT_CHALLENGE:
        return
    proto.receive_text(
        json.dumps({"type": "challenge", "version": wire.PROTOCOL_VERSION, "nonce": NONCE.hex()}), now
    )
    if phase is Phase.AWAIT_WELCOME:
        return
    proto.receive_text(json.dumps({"type": "welcome", "version": wire.PROTOCOL_VERSION}), now)
    if phase is Phase.JOINING:
        return
    proto.receive_text(roster_text(proto.key, OTHER, kind="joined"), now)
    assert proto.phase is Phase.JOINED


# ---- the happy path ----------------------------------------------------------------------------


def test_handshake_join_and_signals() -> None:
    proto, signing = make()
    proto.connection_made(0.0)
    assert proto.get_timer() == HANDSHAKE_TIMEOUT
    events = proto.receive_text(json.dumps({"type": "challenge", "nonce": NONCE.hex()}), 1.0)
    assert events == []
    (hello,) = sent(proto)
    assert hello["type"] == "hello" and hello["version"] == wire.PROTOCOL_VERSION
    signed = wire.signed_hello_bytes(NONCE)
    VerifyKey(bytes.fromhex(hello["key"])).verify(signed, bytes.fromhex(hello["signature"]))
    # The server's own parser and check accept exactly what the client sent.
    parsed = server_protocol.parse_message(json.dumps(hello))
    assert isinstance(parsed, server_protocol.Hello)
    server_protocol.verify_hello(parsed, NONCE)
    assert proto.receive_text('{"type": "welcome"}', 2.0) == [Welcomed()]
    (join,) = sent(proto)
    assert isinstance(server_protocol.parse_message(json.dumps(join)), server_protocol.Join)
    assert proto.get_timer() == 2.0 + JOIN_TIMEOUT
    (changed,) = proto.receive_text(roster_text(proto.key, OTHER, kind="joined"), 3.0)
    assert isinstance(changed, RosterChanged) and changed.roster.keys == [proto.key, OTHER]
    assert proto.joined and proto.stats.connected and proto.stats.connects == 1
    proto.send_signal(OTHER, {"kind": "offer"})
    (signal,) = sent(proto)
    assert isinstance(server_protocol.parse_message(json.dumps(signal)), server_protocol.Signal)
    message = json.dumps({"type": "signal", "from": OTHER.hex(), "data": {"kind": "answer"}})
    assert proto.receive_text(message, 4.0) == [SignalReceived(OTHER, {"kind": "answer"})]
    assert bytes(signing.verify_key) == proto.key


def test_signals_are_dropped_unless_joined_and_bounded() -> None:
    proto, _ = make()
    proto.send_signal(OTHER, {})
    drive(proto, Phase.JOINED)
    proto.data_to_send()
    for _ in range(OUTBOX_SIZE + 5):
        proto.send_signal(OTHER, {})
    assert len(proto.data_to_send()) == OUTBOX_SIZE
    assert proto.stats.signals_dropped == 1 + 5


def test_rejoin_keeps_missing_members_for_the_grace_then_drops_them() -> None:
    proto, _ = make()
    third = b"\x03" * 32
    drive(proto, Phase.JOINED)
    proto.receive_text(roster_text(proto.key, OTHER, third), 1.0)
    proto.connection_lost()
    assert proto.stats.disconnects == 1 and not proto.joined
    drive(proto, Phase.JOINING, now=100.0)
    (changed,) = proto.receive_text(roster_text(proto.key, OTHER, kind="joined"), 100.0)
    assert isinstance(changed, RosterChanged) and set(changed.roster.keys) == {proto.key, OTHER, third}
    assert proto.get_timer() == 100.0 + REJOIN_GRACE
    assert proto.handle_timer(105.0) == []
    (ended,) = proto.handle_timer(100.0 + REJOIN_GRACE)
    assert isinstance(ended, RosterChanged) and ended.roster.keys == [proto.key, OTHER]
    assert proto.get_timer() is None


def test_member_left_during_the_grace_is_not_kept() -> None:
    proto, _ = make()
    drive(proto, Phase.JOINED)
    proto.connection_lost()
    drive(proto, Phase.JOINING, now=50.0)
    proto.receive_text(json.dumps({"type": "member_left", "key": OTHER.hex()}), 50.0)
    (changed,) = proto.receive_text(roster_text(proto.key, kind="joined"), 50.0)
    assert isinstance(changed, RosterChanged) and changed.roster.keys == [proto.key]


def test_quick_match_takes_the_room_name_it_is_given() -> None:
    proto, _ = make(room=None)
    drive(proto, Phase.JOINING)
    proto.receive_text(roster_text(proto.key, room="quick-7", kind="joined"), 0.0)
    assert proto.room == "quick-7"
    events = proto.receive_text(roster_text(proto.key, room="elsewhere"), 0.0)
    assert [type(e) for e in events] == [BadMessage] and proto.roster is not None
    assert proto.roster.room == "quick-7"


# ---- errors, timeouts and refusals --------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(JOIN_REFUSALS))
def test_join_refusals_end_the_client(code: str) -> None:
    proto, _ = make()
    drive(proto, Phase.JOINING)
    (event,) = proto.receive_text(json.dumps({"type": "error", "code": code, "message": "no"}), 0.0)
    assert event == Refused(code, "no") and proto.phase is Phase.ENDED
    assert proto.receive_text(roster_text(proto.key), 0.0) == []  # nothing happens after the end


def test_our_name_taken_while_we_were_away_is_retried_and_told_not_the_end() -> None:
    """A member who takes a player's name during a blip of that player's connection (issue 30, F8)
    must not end the player's program: on a rejoin, `name_taken` is a refused rejoin, told to the
    player (`RejoinRefused`, once: `peer.core.room.session`) and tried again after REJOIN_RETRY,
    not a silent drop retried every few seconds for ever."""
    proto, _ = make()
    drive(proto, Phase.JOINED)
    proto.connection_lost()
    drive(proto, Phase.JOINING, now=50.0)
    told, dropped = proto.receive_text('{"type":"error","code":"name_taken","message":"m"}', 50.0)
    assert told == RejoinRefused("name_taken", "m")
    assert dropped == Disconnect("rejoin refused: name_taken", REJOIN_RETRY)
    assert proto.phase is Phase.OFFLINE


def test_errors_in_the_room_are_notices_unless_fatal() -> None:
    proto, _ = make()
    drive(proto, Phase.JOINED)
    assert proto.receive_text('{"type":"error","code":"room_full","message":"m"}', 0.0) == [
        Notice("room_full", "m")
    ]
    (event,) = proto.receive_text('{"type":"error","code":"odd","message":"m","fatal":true}', 0.0)
    assert isinstance(event, Disconnect) and proto.phase is Phase.OFFLINE
    assert proto.receive_text('{"type":"kicked"}', 0.0) == []  # the socket is being closed


def test_kicked_ends_the_client() -> None:
    proto, _ = make()
    drive(proto, Phase.JOINED)
    assert proto.receive_text('{"type":"kicked"}', 0.0) == [
        Refused("kicked", "the host removed us from the room")
    ]


@pytest.mark.parametrize("phase", [Phase.AWAIT_CHALLENGE, Phase.AWAIT_WELCOME, Phase.JOINING])
def test_silence_before_joining_times_out(phase: Phase) -> None:
    proto, _ = make()
    drive(proto, phase, now=10.0)
    timer = proto.get_timer()
    assert timer is not None
    assert proto.handle_timer(timer - 0.001) == []
    (event,) = proto.handle_timer(timer)
    assert isinstance(event, Disconnect) and proto.phase is Phase.OFFLINE


@pytest.mark.parametrize(
    "challenge",
    [
        {"type": "challenge", "nonce": "zz" * 32},  # 64 characters, not hex: ValueError before
        {"type": "challenge", "nonce": NONCE.hex() + "\n"},
        {"type": "challenge", "nonce": NONCE.hex()[:-2]},
        {"type": "challenge", "nonce": 7},
        {"type": "welcome"},
    ],
)
def test_a_bad_challenge_means_reconnect(challenge: dict[str, Any]) -> None:
    proto, _ = make()
    proto.connection_made(0.0)
    events = proto.receive_text(json.dumps(challenge), 0.0)
    assert [type(e) for e in events] == [Disconnect] and proto.data_to_send() == []


# ---- hostile input ----------------------------------------------------------------------------

IN_ROOM = [Phase.JOINING, Phase.JOINED]


@pytest.mark.parametrize("phase", IN_ROOM)
@pytest.mark.parametrize("text", GARBAGE_TEXTS, ids=range(len(GARBAGE_TEXTS)))
def test_garbage_in_the_room_is_a_bad_message_and_the_client_carries_on(phase: Phase, text: str) -> None:
    proto, _ = make()
    drive(proto, phase)
    events = proto.receive_text(text, 0.0)
    assert all(isinstance(e, BadMessage | Notice) for e in events), events
    assert proto.phase is phase
    (changed,) = proto.receive_text(roster_text(proto.key, OTHER), 0.0)  # still listening
    assert isinstance(changed, RosterChanged)


@pytest.mark.parametrize("phase", [Phase.AWAIT_CHALLENGE, Phase.AWAIT_WELCOME])
@pytest.mark.parametrize("text", GARBAGE_TEXTS, ids=range(len(GARBAGE_TEXTS)))
def test_garbage_during_the_handshake_means_reconnect(phase: Phase, text: str) -> None:
    proto, _ = make()
    drive(proto, phase)
    events = proto.receive_text(text, 0.0)
    if phase is Phase.AWAIT_WELCOME and text == '{"type":"welcome"}':
        assert events == [Welcomed()]  # the one frame in the list that is right here
        return
    assert isinstance(events[-1], Disconnect) and proto.phase is Phase.OFFLINE


def test_binary_frames_are_skipped() -> None:
    proto, _ = make()
    drive(proto, Phase.JOINED)
    (event,) = proto.receive_binary(b"\x00\xff")
    assert isinstance(event, BadMessage) and proto.joined and proto.stats.malformed == 1


def _is_refusal(frame: str | bytes) -> bool:
    """Whether a frame is one of the refusals that may end the client."""
    if isinstance(frame, bytes):
        return False
    try:
        body = wire.json_object(frame)
    except wire.FrameError:
        return False
    refusal = body.get("type") == "error" and body.get("code") in FATAL_CODES | JOIN_REFUSALS
    return refusal or body.get("type") == "kicked"


@given(phase=st.sampled_from(list(Phase)[1:5]), frames=hostile_frames(CLIENT_TYPES, CLIENT_FIELDS))
@settings(max_examples=300, deadline=None)
def test_fuzzed_frames_only_ever_become_events(phase: Phase, frames: list[str | bytes]) -> None:
    proto, _ = make()
    drive(proto, phase)
    for frame in frames:
        was = proto.phase
        match frame:
            case bytes():
                events = proto.receive_binary(frame)
            case str():
                events = proto.receive_text(frame, 1.0)
        assert all(isinstance(e, SignallingEvent) for e in events)
        if any(isinstance(e, Refused) for e in events):
            assert _is_refusal(frame), frame
        if was in (Phase.OFFLINE, Phase.ENDED):
            assert events == []
        proto.data_to_send()
        proto.handle_timer(1.0)


# ---- the shared patterns, and the import graph --------------------------------------------------


@pytest.mark.parametrize("check", [wire.is_key, wire.is_nonce])
def test_hex_patterns_match_whole_strings(check: Any) -> None:
    good = "ab" * 32
    assert check(good)
    for bad in (good + "\n", "\n" + good, good.upper(), good[:-1], good + "a", 64, None):
        assert not check(bad)


def test_room_and_standby_patterns_match_whole_strings() -> None:
    assert wire.is_valid_room_name("friday night") and not wire.is_valid_room_name("friday\n")
    assert wire.is_standby_url("http://[::1]:4567") and not wire.is_standby_url("http://h:1\n")


def test_the_server_refuses_a_key_with_a_trailing_newline() -> None:
    text = json.dumps({"type": "signal", "to": KEY + "\n", "data": {}})
    with pytest.raises(server_protocol.ProtocolError) as err:
        server_protocol.parse_message(text)
    assert err.value.code == "bad_message"


def test_the_client_protocol_is_pure() -> None:
    code = (
        "import sys, peer.core.room.signalling, rendezvous.wire; "
        "print(sorted({'asyncio', 'aiohttp', 'aiortc', 'socket'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` that `path` imports at run time (TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(package))
    return found


def test_the_rendezvous_package_has_no_import_cycle() -> None:
    folder = Path(__file__).parent.parent / "rendezvous"
    modules = {f"rendezvous.{p.stem}": p for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path, "rendezvous") & set(modules) - {name} for name, path in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == []


# ---- protocol 2: versions and ICE servers ------------------------------------------------------


def test_a_challenge_of_another_version_ends_the_client_naming_both() -> None:
    proto, _ = make()
    proto.connection_made(0.0)
    events = proto.receive_text(json.dumps({"type": "challenge", "version": 1, "nonce": NONCE.hex()}), 0.0)
    assert len(events) == 1 and isinstance(events[0], Refused)
    assert events[0].code == "version_mismatch" and "1" in events[0].message
    assert str(wire.PROTOCOL_VERSION) in events[0].message and proto.phase is Phase.ENDED


@pytest.mark.parametrize("version", [True, "3", 3.0, [3]])
def test_a_challenge_whose_version_is_not_a_number_is_dropped_not_a_mismatch(version: object) -> None:
    """(JSON true is an int to Python: it ended the client as another protocol version.)"""
    proto, _ = make()
    proto.connection_made(0.0)
    events = proto.receive_text(
        json.dumps({"type": "challenge", "version": version, "nonce": NONCE.hex()}), 0.0
    )
    assert [type(event) for event in events] == [Disconnect] and proto.phase is not Phase.ENDED  # try again


def test_the_welcome_hands_over_good_ice_servers_and_reports_bad_ones() -> None:
    proto, _ = make()
    drive(proto, Phase.AWAIT_WELCOME)
    sent(proto)
    servers = [{"urls": ["stun:rv.example:4567"]}, {"urls": ["turn:x:1"], "username": 5}, 7]
    welcome = {"type": "welcome", "version": wire.PROTOCOL_VERSION, "ice_servers": servers}
    events = proto.receive_text(json.dumps(welcome), 0.0)
    assert events[-1] == Welcomed((IceServer(("stun:rv.example:4567",)),))
    assert sum(isinstance(e, BadMessage) for e in events) == 2
    assert proto.phase is Phase.JOINING and sent(proto)[0]["type"] == "join"  # and carries on
    assert proto.ice_servers == (IceServer(("stun:rv.example:4567",)),)


@pytest.mark.parametrize("value", ["stun:x", {"urls": "stun:x"}, [[]] * 100, None])
def test_any_ice_servers_value_leaves_the_welcome_standing(value: object) -> None:
    proto, _ = make()
    drive(proto, Phase.AWAIT_WELCOME)
    events = proto.receive_text(json.dumps({"type": "welcome", "ice_servers": value}), 0.0)
    assert isinstance(events[-1], Welcomed) and proto.phase is Phase.JOINING


def test_a_roster_larger_than_the_rooms_capacity_is_refused() -> None:
    """Issue 18: a lying rendezvous listed 1,100 fake members and the peer dialled them all."""
    proto, _ = make()
    drive(proto, Phase.JOINING)
    fakes = [SigningKey.generate().verify_key.encode() for _ in range(5)]
    joined = json.loads(roster_text(proto.key, OTHER, kind="joined"))
    joined["capacity"] = 4
    (changed,) = proto.receive_text(json.dumps(joined), 1.0)
    assert isinstance(changed, RosterChanged)
    events = proto.receive_text(roster_text(proto.key, *fakes), 2.0)
    assert [type(e) for e in events] == [BadMessage]
    many = [SigningKey.generate().verify_key.encode() for _ in range(MAX_CAPACITY)]
    fresh, _ = make()
    drive(fresh, Phase.JOINING)
    events = fresh.receive_text(roster_text(fresh.key, *many, kind="joined"), 1.0)  # no capacity said
    assert [type(e) for e in events] == [BadMessage]
    joined["capacity"] = 1100
    third, _ = make()
    drive(third, Phase.JOINING)
    joined["members"][0]["key"] = third.key.hex()
    assert [type(e) for e in third.receive_text(json.dumps(joined), 1.0)] == [BadMessage]
