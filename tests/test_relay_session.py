"""One relay session, pure (`peer.core.mesh.relay_session`): two of them bind and talk in memory, and
whatever a rendezvous could do to the frames comes out as a typed outcome, never an exception."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from peer.core.mesh.binding import BIND_TIMEOUT, Binding, RefusalReason, Role
from peer.core.mesh.relay import RELAY_FINGERPRINT, SEALED, RelayRefusal, handshake_frame
from peer.core.mesh.relay_session import (
    RELAY_DRAIN,
    Admitted,
    Drained,
    Dropped,
    Opened,
    Refused,
    RelaySession,
    Reply,
    is_relay_nonce,
    stray,
)
from peer.core.sync import codec

ROOM = "room"


def session(key: SigningKey, peer: SigningKey, role: Role, now: float = 0.0, room_key: bytes | None = None):
    return RelaySession(
        signer=codec.Signer(key, ROOM, 7),
        role=role,
        peer=bytes(peer.verify_key),
        secret=os.urandom(32),
        room_key=room_key,
        now=now,
    )


def reply(outcome: object) -> bytes:
    assert isinstance(outcome, Reply), outcome
    return outcome.frame


def bound() -> tuple[RelaySession, RelaySession, set[bytes]]:
    """An offerer and an answerer, admitted both ways through an in-memory 'rendezvous'."""
    a_key, b_key = SigningKey.generate(), SigningKey.generate()
    keys = {bytes(a_key.verify_key), bytes(b_key.verify_key)}
    a, b = session(a_key, b_key, Role.OFFERER), session(b_key, a_key, Role.ANSWERER)
    a_nonce, b_nonce = a.start().frame, b.start().frame
    assert is_relay_nonce(a_nonce) and is_relay_nonce(b_nonce)
    b_proof = reply(b.receive(a_nonce, keys))
    a_proof = reply(a.receive(b_nonce, keys))
    assert not is_relay_nonce(a_proof)
    assert not a.admitted and not b.admitted
    assert a.receive(b_proof, keys) == Admitted()
    assert b.receive(a_proof, keys) == Admitted()
    assert a.admitted and b.admitted
    return a, b, keys


def test_two_sessions_bind_then_seal_both_ways() -> None:
    a, b, keys = bound()
    assert b.receive(a.seal(b"hello"), keys) == Opened(b"hello")
    assert a.receive(b.seal(b"back"), keys) == Opened(b"back")
    assert a.get_timer() is None and b.get_timer() is None  # bound: no deadline left


def test_a_tampered_replayed_or_handshake_frame_after_admission_is_dropped_and_the_session_goes_on() -> None:
    a, b, keys = bound()
    first = a.seal(b"one")
    flipped = bytearray(first)
    flipped[-1] ^= 1
    assert b.receive(bytes(flipped), keys) == Dropped(RelayRefusal.TAMPERED, "frame 1 does not open")
    assert b.receive(first, keys) == Opened(b"one")
    dropped = b.receive(first, keys)
    assert isinstance(dropped, Dropped) and dropped.counter == "relay_replayed"
    late_nonce = handshake_frame(b"x" * 60)
    assert b.receive(late_nonce, keys) == Dropped(
        RelayRefusal.UNEXPECTED, "a handshake frame after admission"
    )
    assert b.receive(a.seal(b"two"), keys) == Opened(b"two")


def test_frames_before_admission() -> None:
    a_key, b_key = SigningKey.generate(), SigningKey.generate()
    keys = {bytes(a_key.verify_key), bytes(b_key.verify_key)}
    a = session(a_key, b_key, Role.OFFERER)
    sealed = bytes([SEALED]) + os.urandom(40)
    assert a.receive(sealed, keys) == Dropped(RelayRefusal.UNEXPECTED, "a sealed frame before admission")
    assert a.receive(b"", keys) == Dropped(RelayRefusal.MALFORMED, "empty frame")
    assert a.receive(b"\x07abc", keys) == Dropped(RelayRefusal.MALFORMED, "frame kind 7")
    with pytest.raises(RuntimeError):
        a.seal(b"too early")
    # A handshake frame that is no codec message ends the binding: the session is over.
    refused = a.receive(handshake_frame(b"garbage"), keys)
    assert isinstance(refused, Refused) and refused.reason is RefusalReason.BAD_MESSAGE
    assert refused.counter == "relay_binding_bad-message"
    assert refused.sentence == "relay binding failed: bad-message"


def test_a_proof_from_an_outsider_or_with_the_wrong_password_refuses_the_session() -> None:
    a_key, b_key, outsider = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    keys = {bytes(a_key.verify_key), bytes(b_key.verify_key)}
    a = session(a_key, b_key, Role.OFFERER)
    impostor = session(outsider, a_key, Role.ANSWERER)
    refused = a.receive(impostor.start().frame, keys)
    assert isinstance(refused, Refused) and refused.reason is RefusalReason.UNKNOWN_KEY
    a = session(a_key, b_key, Role.OFFERER, room_key=b"k" * 32)
    b = session(b_key, a_key, Role.ANSWERER, room_key=b"x" * 32)
    b_proof = reply(b.receive(a.start().frame, keys))
    reply(a.receive(b.start().frame, keys))
    assert a.receive(b_proof, keys) == Refused(
        RefusalReason.PASSWORD_MISMATCH, "room password proof does not verify"
    )


def test_a_low_order_relay_key_ends_the_session_as_tampered() -> None:
    """A peer whose signed nonce is no usable X25519 key: its proof verifies, the channel cannot be."""
    a_key, b_key = SigningKey.generate(), SigningKey.generate()
    keys = {bytes(a_key.verify_key), bytes(b_key.verify_key)}
    a = session(a_key, b_key, Role.OFFERER)
    b = Binding(
        room=ROOM,
        role=Role.ANSWERER,
        local_key=bytes(b_key.verify_key),
        peer=bytes(a_key.verify_key),
        local_fingerprint=RELAY_FINGERPRINT,
        remote_fingerprint=RELAY_FINGERPRINT,
        local_nonce=bytes(32),
        room_key=None,
        now=0.0,
    )

    def frame(body: codec.Body) -> bytes:
        return handshake_frame(codec.encode(body, signing_key=b_key, room=ROOM, session=1, seq=0))

    a_nonce = a.start().frame[1:]
    proof = b.receive(a_nonce, keys)
    assert isinstance(proof, codec.Proof)
    reply(a.receive(frame(codec.Nonce(bytes(32))), keys))
    refused = a.receive(frame(proof), keys)
    assert refused == Refused(RelayRefusal.TAMPERED, "the peer's relay key is not usable")
    assert isinstance(refused, Refused) and refused.counter == "relay_tampered"
    assert refused.sentence == "relay_tampered: the peer's relay key is not usable"
    assert not a.admitted


def test_a_binding_not_done_in_time_is_refused_once() -> None:
    a_key, b_key = SigningKey.generate(), SigningKey.generate()
    a = session(a_key, b_key, Role.OFFERER, now=5.0)
    assert a.get_timer() == 5.0 + BIND_TIMEOUT
    assert a.handle_timer(5.0 + BIND_TIMEOUT - 0.01) is None
    refused = a.handle_timer(5.0 + BIND_TIMEOUT)
    assert isinstance(refused, Refused) and refused.reason is RefusalReason.TIMEOUT
    assert refused.counter == "relay_binding_timeout"
    assert a.get_timer() is None and a.handle_timer(100.0) is None


def test_after_a_direct_link_took_over_frames_in_flight_still_open_until_the_drain_ends() -> None:
    a, b, keys = bound()
    in_flight = a.seal(b"late")
    b.drain(50.0)
    assert b.get_timer() == 50.0 + RELAY_DRAIN
    assert b.handle_timer(50.0 + RELAY_DRAIN - 0.01) is None
    assert b.receive(in_flight, keys) == Opened(b"late")
    assert b.handle_timer(50.0 + RELAY_DRAIN) == Drained()


def test_a_frame_outside_any_session() -> None:
    a_key, b_key = SigningKey.generate(), SigningKey.generate()
    nonce = session(a_key, b_key, Role.OFFERER).start().frame
    assert stray(nonce) == Dropped(RelayRefusal.UNEXPECTED, "a handshake frame outside a relay session")
    assert stray(b"") == Dropped(RelayRefusal.MALFORMED, "empty frame")
    assert stray(bytes([SEALED, 0, 0])).reason is RelayRefusal.UNEXPECTED
    assert not is_relay_nonce(b"") and not is_relay_nonce(bytes([SEALED]) + nonce[1:])


@given(frame=st.binary(max_size=300), admitted=st.booleans())
def test_any_frame_is_an_outcome_never_an_exception(frame: bytes, admitted: bool) -> None:
    if admitted:
        _, b, keys = bound()
    else:
        a_key, b_key = SigningKey.generate(), SigningKey.generate()
        keys = {bytes(a_key.verify_key), bytes(b_key.verify_key)}
        b = session(b_key, a_key, Role.ANSWERER)
    outcome = b.receive(frame, keys)
    assert isinstance(outcome, Dropped | Refused)  # (random bytes carry no valid signature)
