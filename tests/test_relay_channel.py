"""The relayed link's pure parts: the sealing channel (`peer.core.mesh.relay`) and the relayed states of
the dial machine (`peer.core.mesh.dial`). A rendezvous that flips, replays, invents or reorders frames
gets each one refused under its own reason; nothing else is disturbed."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.core.mesh.binding import Role
from peer.core.mesh.dial import RELAY_AFTER, DialMachine, DialState, StartRelay
from peer.core.mesh.relay import (
    Ephemeral,
    RelayChannel,
    RelayError,
    RelayRefusal,
    handshake_frame,
    split_handshake,
)


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


def test_the_offerer_relays_after_a_bounded_time_and_direct_takes_over() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    assert dial.handle_timer(RELAY_AFTER, relay=False) != StartRelay()
    dial.dial(1, 0.1)
    assert dial.get_timer(relay=True) == pytest.approx(15.1)  # the attempt's own deadline first
    assert dial.handle_timer(RELAY_AFTER, relay=True) == StartRelay()
    dial.relay()
    dial.relay_admitted(RELAY_AFTER + 0.5)
    assert dial.state is DialState.RELAYED
    dial.lost(RELAY_AFTER + 1)  # the background direct attempt failed: still relayed
    assert dial.state is DialState.RELAYED and dial.retry_at is not None
    dial.dial(2, dial.retry_at)
    dial.opened()
    dial.admitted()
    assert dial.state.value == "admitted"


def test_a_lost_relay_waits_again_and_the_answerer_never_starts_one() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    dial.relay()
    dial.relay_admitted(1.0)
    dial.relay_lost(2.0)
    assert dial.state is DialState.WAITING and dial.unreached_since == 2.0
    answerer = DialMachine(offerer=False, now=0.0)
    assert answerer.handle_timer(RELAY_AFTER * 2, relay=True) != StartRelay()
