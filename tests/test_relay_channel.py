"""The relayed link's pure parts: the sealing channel (`peer.core.mesh.relay`) and the relay path
beside the direct one (`peer.core.mesh.relay_path`, `peer.core.mesh.peer`). A rendezvous that
flips, replays, invents or reorders frames gets each one refused under its own reason; nothing
else is disturbed."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from peer.core.mesh.binding import Role
from peer.core.mesh.dial import RELAYED_RETRY_MAX, DialState
from peer.core.mesh.peer import Carrier, MeshPeer, carrier, state_name
from peer.core.mesh.relay import (
    Ephemeral,
    RelayChannel,
    RelayError,
    RelayRefusal,
    handshake_frame,
    split_handshake,
)
from peer.core.mesh.relay_path import RELAY_AFTER, RELAY_TRANSITIONS, RelayInput, RelayPathError, RelayState
from peer.core.mesh.relay_session import RelaySession
from peer.core.sync import codec


def pair(room: str = "r") -> tuple[RelayChannel, RelayChannel]:
    a, b = Ephemeral.from_secret(os.urandom(32)), Ephemeral.from_secret(os.urandom(32))
    offerer = RelayChannel(ephemeral=a, peer_public=b.public, role=Role.OFFERER, room=room)
    answerer = RelayChannel(ephemeral=b, peer_public=a.public, role=Role.ANSWERER, room=room)
    return offerer, answerer


def refusal(channel: RelayChannel, frame: bytes) -> RelayRefusal:
    with pytest.raises(RelayError) as caught:
        channel.open(frame)
    return caught.value.reason


def test_both_directions_open_in_order_and_gaps_are_allowed() -> None:
    a, b = pair()
    frames = [a.seal(bytes([i]) * 10) for i in range(5)]
    assert b.open(frames[0]) == b"\x00" * 10
    assert b.open(frames[2]) == b"\x02" * 10  # frame 1 dropped by the rendezvous: allowed
    assert a.open(b.seal(b"back")) == b"back"


def test_flipped_bits_invented_replayed_and_reordered_frames_are_refused() -> None:
    a, b = pair()
    first, second, third = a.seal(b"one"), a.seal(b"two"), a.seal(b"three")
    flipped = bytearray(first)
    flipped[-1] ^= 1
    assert refusal(b, bytes(flipped)) is RelayRefusal.TAMPERED
    assert refusal(b, b"\x01" + os.urandom(40)) is RelayRefusal.TAMPERED
    assert b.open(first) == b"one"
    assert b.open(third) == b"three"
    assert refusal(b, first) is RelayRefusal.REPLAYED
    assert refusal(b, second) is RelayRefusal.REORDERED
    assert b.open(a.seal(b"four")) == b"four"  # and the link goes on


def test_frames_of_another_session_room_or_direction_do_not_open() -> None:
    a, b = pair()
    other_a, _ = pair()
    _, other_room = pair("another room")
    assert refusal(b, other_a.seal(b"x")) is RelayRefusal.TAMPERED
    assert refusal(other_room, a.seal(b"x")) is RelayRefusal.TAMPERED
    assert refusal(a, a.seal(b"x")) is RelayRefusal.TAMPERED  # our own frame reflected back


def test_handshake_frames_only_before_admission() -> None:
    a, b = pair()
    assert split_handshake(handshake_frame(b"message")) == b"message"
    with pytest.raises(RelayError):
        split_handshake(a.seal(b"x"))
    assert refusal(b, handshake_frame(b"x" * 40)) is RelayRefusal.UNEXPECTED


def test_a_low_order_key_is_refused() -> None:
    with pytest.raises(RelayError):
        RelayChannel(
            ephemeral=Ephemeral.from_secret(os.urandom(32)),
            peer_public=bytes(32),
            role=Role.OFFERER,
            room="r",
        )


@given(st.binary(max_size=200))
def test_anything_either_opens_or_is_refused(frame: bytes) -> None:
    _, b = pair()
    with pytest.raises(RelayError):
        b.open(frame)


def relay_session(now: float = 0.0) -> RelaySession:
    signer = codec.Signer(SigningKey.generate(), "room", 7)
    peer = bytes(SigningKey.generate().verify_key)
    return RelaySession(
        signer=signer, role=Role.OFFERER, peer=peer, secret=os.urandom(32), room_key=None, now=now
    )


def test_the_offerer_relays_after_a_bounded_time_and_direct_takes_over() -> None:
    peer = MeshPeer.new(b"\x02" * 32, Role.OFFERER, 0.0)
    assert peer.relay_due() == RELAY_AFTER  # unreached since it was listed
    peer.direct.dial(1, 0.1)
    assert peer.direct.get_timer() == pytest.approx(15.1)  # the attempt's own deadline first
    peer.relay.start(relay_session(RELAY_AFTER))
    assert peer.relay_due() is None and state_name(peer.direct.state, peer.relay.state) == "relay-binding"
    peer.relay.admitted()
    peer.direct.relay_carries(RELAY_AFTER + 0.5)
    assert peer.carrier is Carrier.RELAY
    peer.direct.lost(RELAY_AFTER + 1)  # the background direct attempt failed: still relayed
    assert carrier(peer.direct.state, peer.relay.state) is Carrier.RELAY
    assert peer.direct.retry_at is not None and peer.direct.retry_at <= RELAY_AFTER + 1 + RELAYED_RETRY_MAX
    peer.direct.dial(2, peer.direct.retry_at)
    peer.direct.opened()
    peer.direct.admitted()
    assert carrier(peer.direct.state, peer.relay.state) is Carrier.DIRECT  # as soon as it is admitted
    peer.relay.superseded(30.0)
    assert (
        peer.relay.state is RelayState.DRAINING
        and state_name(peer.direct.state, peer.relay.state) == "admitted"
    )


def test_a_lost_relay_waits_again_and_the_answerer_never_starts_one() -> None:
    peer = MeshPeer.new(b"\x02" * 32, Role.OFFERER, 0.0)
    peer.relay.start(relay_session())
    peer.relay.admitted()
    peer.relay.lost()
    assert peer.relay.state is RelayState.OFF and peer.relay.session is None
    answerer = MeshPeer.new(b"\x00" * 32, Role.ANSWERER, 0.0)
    assert answerer.relay_due() is None
    assert answerer.may_follow_relay()
    answerer.relay.start(relay_session())
    assert answerer.may_follow_relay()  # the offerer started over
    answerer.relay.admitted()
    assert not answerer.may_follow_relay()  # relayed already


@given(st.lists(st.sampled_from(list(RelayInput)), max_size=30), st.sampled_from(list(DialState)))
def test_the_relay_path_moves_only_by_its_table_and_the_carrier_follows_both(
    inputs: list[RelayInput], direct: DialState
) -> None:
    path = MeshPeer.new(b"\x02" * 32, Role.OFFERER, 0.0).relay
    for what in inputs:
        before = path.state
        try:
            match what:
                case RelayInput.START:
                    path.start(relay_session())
                case RelayInput.ADMITTED:
                    path.admitted()
                case RelayInput.SUPERSEDED:
                    path.superseded(1.0)
                case RelayInput.DRAINED:
                    path.drained()
                case RelayInput.LOST:
                    path.lost()
        except RelayPathError:
            assert path.state is before
            continue
        assert RELAY_TRANSITIONS[(before, what)] is path.state
        assert (path.session is None) == (path.state is RelayState.OFF)
        peer = MeshPeer.new(b"\x02" * 32, Role.OFFERER, 0.0)
        peer.relay = path
        peer.direct.state = direct
        expected = (
            Carrier.DIRECT
            if direct is DialState.ADMITTED
            else Carrier.RELAY
            if path.state is RelayState.ADMITTED
            else None
        )
        assert peer.carrier is expected
