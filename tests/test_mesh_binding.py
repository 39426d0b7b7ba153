"""The pure identity-binding exchange: both honest ends admit; every tampering is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.core.mesh.binding import (
    BIND_TIMEOUT,
    Admitted,
    Binding,
    BindingState,
    RefusalReason,
    Refused,
    Role,
    derive_room_key,
)
from peer.core.sync.codec import Proof

ROOM = "friday"
KEY_A, KEY_B, KEY_X = b"A" * 32, b"B" * 32, b"X" * 32
FP_A, FP_B, FP_X = "sha-256 AA", "sha-256 BB", "sha-256 XX"


def pair(
    *,
    key_a: bytes | None = None,
    key_b: bytes | None = None,
    seen_by_b: str = FP_A,
    nonce_a: bytes = b"a" * 32,
    nonce_b: bytes = b"b" * 32,
) -> tuple[Binding, Binding]:
    a = Binding(
        room=ROOM,
        role=Role.OFFERER,
        local_key=KEY_A,
        peer=KEY_B,
        local_fingerprint=FP_A,
        remote_fingerprint=FP_B,
        local_nonce=nonce_a,
        room_key=key_a,
        now=0.0,
    )
    b = Binding(
        room=ROOM,
        role=Role.ANSWERER,
        local_key=KEY_B,
        peer=KEY_A,
        local_fingerprint=FP_B,
        remote_fingerprint=seen_by_b,
        local_nonce=nonce_b,
        room_key=key_b,
        now=0.0,
    )
    return a, b


def exchange(a: Binding, b: Binding) -> tuple[Proof, Proof]:
    proof_a = a.receive_nonce(b.local_nonce)
    proof_b = b.receive_nonce(a.local_nonce)
    assert isinstance(proof_a, Proof) and isinstance(proof_b, Proof)
    return proof_a, proof_b


def test_honest_pair_admits_both() -> None:
    a, b = pair()
    proof_a, proof_b = exchange(a, b)
    assert a.receive_proof(KEY_B, proof_b) == Admitted(KEY_B)
    assert b.receive_proof(KEY_A, proof_a) == Admitted(KEY_A)
    assert a.state is b.state is BindingState.ADMITTED
    assert a.get_timer() is None


def test_password_room_admits_with_same_password() -> None:
    key = derive_room_key("sesame", ROOM)
    a, b = pair(key_a=key, key_b=key)
    proof_a, proof_b = exchange(a, b)
    assert isinstance(a.receive_proof(KEY_B, proof_b), Admitted)
    assert isinstance(b.receive_proof(KEY_A, proof_a), Admitted)


@pytest.mark.parametrize("other", [None, "sesam"])
def test_wrong_or_missing_password_refused(other: str | None) -> None:
    key = derive_room_key("sesame", ROOM)
    a, b = pair(key_a=key, key_b=None if other is None else derive_room_key(other, ROOM))
    _, proof_b = exchange(a, b)
    outcome = a.receive_proof(KEY_B, proof_b)
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.PASSWORD_MISMATCH


def test_room_key_depends_on_room() -> None:
    assert derive_room_key("pw", "r1") != derive_room_key("pw", "r2")


def test_relay_in_the_middle_is_refused() -> None:
    # The rendezvous swapped fingerprints: B's DTLS peer is X, so B's view differs from A's.
    a, b = pair(seen_by_b=FP_X)
    proof_a, proof_b = exchange(a, b)
    outcome = b.receive_proof(KEY_A, proof_a)
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.FINGERPRINT_MISMATCH
    outcome = a.receive_proof(KEY_B, proof_b)
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.FINGERPRINT_MISMATCH


def test_other_signer_refused() -> None:
    a, b = pair()
    _, proof_b = exchange(a, b)
    outcome = a.receive_proof(KEY_X, proof_b)
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.WRONG_KEY


def test_replayed_proof_from_old_session_refused() -> None:
    old_a, old_b = pair(nonce_a=b"o" * 32)
    _, old_proof_b = exchange(old_a, old_b)
    a, b = pair()
    exchange(a, b)
    outcome = a.receive_proof(KEY_B, old_proof_b)
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.NONCE_MISMATCH


def test_role_claim_must_be_the_other_side() -> None:
    a, b = pair()
    _, proof_b = exchange(a, b)
    outcome = a.receive_proof(KEY_B, dataclasses.replace(proof_b, role=Role.OFFERER.value))
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.ROLE_MISMATCH


def test_out_of_order_messages_refused_and_refusal_is_final() -> None:
    a, b = pair()
    _, proof_b = exchange(a, b)
    assert isinstance(a.receive_nonce(b"c" * 32), Refused)
    outcome = a.receive_proof(KEY_B, proof_b)
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.PROTOCOL
    a2, _ = pair()
    assert isinstance(a2.receive_proof(KEY_B, proof_b), Refused)


def test_echoed_or_short_nonce_refused() -> None:
    a, _ = pair()
    assert isinstance(a.receive_nonce(a.local_nonce), Refused)
    a, _ = pair()
    assert isinstance(a.receive_nonce(b"short"), Refused)


def test_timeout() -> None:
    a, _ = pair()
    assert a.handle_timer(BIND_TIMEOUT - 0.1) is None
    outcome = a.handle_timer(BIND_TIMEOUT)
    assert isinstance(outcome, Refused) and outcome.reason is RefusalReason.TIMEOUT
    assert a.get_timer() is None


FIELDS = ["offerer_fingerprint", "answerer_fingerprint", "offerer_nonce", "answerer_nonce"]


@given(
    field=st.sampled_from([*FIELDS, "password_mac"]),
    flip=st.integers(1, 255),
)
def test_any_flipped_byte_refused(field: str, flip: int) -> None:
    key = derive_room_key_cached()
    a, b = pair(key_a=key, key_b=key)
    _, proof_b = exchange(a, b)
    value = getattr(proof_b, field)
    raw = value.encode() if isinstance(value, str) else value
    raw = bytes([raw[0] ^ flip]) + raw[1:]
    tampered: Any = raw.decode("latin-1") if isinstance(value, str) else raw
    outcome = a.receive_proof(KEY_B, dataclasses.replace(proof_b, **{field: tampered}))
    assert isinstance(outcome, Refused)


_CACHED: list[bytes] = []


def derive_room_key_cached() -> bytes:
    if not _CACHED:
        _CACHED.append(derive_room_key("sesame", ROOM))
    return _CACHED[0]


def test_the_rendezvous_is_shown_a_derivation_not_the_password() -> None:
    from peer.core.mesh.binding import derive_room_key, rendezvous_password

    token = rendezvous_password("hunter2", "friday")
    assert len(token) == 64 and "hunter2" not in token
    assert token == rendezvous_password("hunter2", "friday")
    assert token != rendezvous_password("hunter2", "saturday")
    assert token != rendezvous_password("hunter3", "friday")
    assert bytes.fromhex(token) != derive_room_key("hunter2", "friday")
