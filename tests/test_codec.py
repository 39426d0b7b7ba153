"""The signed wire codec: round trips, and a fuzz that only ever yields verified messages or DecodeError."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from peer.core.room.room_game import Platform
from peer.core.sync import codec
from peer.core.sync.codec import DecodeError, decode, encode

KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)
SENDER = bytes(KEY.verify_key)
ROOM = "room-1"


def runs():
    return st.lists(
        st.integers(0, 0xFFF0).flatmap(
            lambda address: st.tuples(st.just(address), st.binary(min_size=1, max_size=8))
        ),
        min_size=1,
        max_size=16,
    ).map(_ordered)


def _ordered(runs):
    """Runs sorted, with any that overlap the one before left out (what a batch may carry)."""
    kept, end = [], 0
    for address, data in sorted(runs):
        if address >= end:
            kept.append((address, data))
            end = address + len(data)
    return tuple(kept)


batches = st.lists(st.binary(max_size=80), max_size=6).map(tuple)

bodies = st.one_of(
    st.builds(codec.WriteBatch, lamport=st.integers(1, 2**63 - 1), runs=runs()),
    st.builds(codec.StatePatch, full=st.booleans(), part=st.just(0), parts=st.just(1), batches=batches),
    st.builds(codec.Digest, digest=st.binary(min_size=32, max_size=32), max_lamport=st.integers(0, 2**40)),
    st.just(codec.ResyncRequest()),
    st.builds(codec.Heartbeat, sent_ms=st.integers(0, 2**50), echo_ms=st.integers(0, 2**50)),
    st.builds(codec.Chat, text=st.text(max_size=100)),
    st.builds(
        codec.Nonce,
        nonce=st.binary(min_size=32, max_size=32),
        platform=st.none()
        | st.builds(
            Platform,
            rom=st.binary(min_size=20, max_size=20),
            machine=st.sampled_from(["", "C-BIOS_MSX1", "Panasonic_FS-A1GT"]),
            forced=st.booleans(),
        ),
    ),
    st.builds(
        codec.Proof,
        role=st.sampled_from([0, 1]),
        offerer_fingerprint=st.text(max_size=40),
        answerer_fingerprint=st.text(max_size=40),
        offerer_nonce=st.binary(min_size=32, max_size=32),
        answerer_nonce=st.binary(min_size=32, max_size=32),
        password_mac=st.sampled_from([b"", b"m" * 32]),
    ),
    st.builds(codec.Bye, reason=st.text(max_size=20)),
)


def signed(body, seq=1):
    return encode(body, signing_key=KEY, room=ROOM, session=7, seq=seq)


@given(bodies, st.integers(0, 2**64 - 1))
def test_round_trip(body, seq):
    message = decode(signed(body, seq), room=ROOM, keys={SENDER})
    assert message.body == body
    assert (message.session, message.seq, message.sender) == (7, seq, SENDER)


@given(bodies, st.data())
def test_any_flipped_bit_is_rejected(body, data):
    message = bytearray(signed(body))
    bit = data.draw(st.integers(0, len(message) * 8 - 1))
    message[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecodeError):
        decode(bytes(message), room=ROOM, keys={SENDER})


@given(st.binary(max_size=300))
def test_random_bytes_never_decode_to_anything_but_an_error(blob):
    with pytest.raises(DecodeError):
        decode(blob, room=ROOM, keys={SENDER})


@given(bodies, st.data())
def test_mutated_messages_decode_verified_or_raise(body, data):
    message = bytearray(signed(body))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(message)))
        action = data.draw(st.sampled_from(["insert", "delete", "set"]))
        if action == "insert":
            message.insert(position, data.draw(st.integers(0, 255)))
        elif position < len(message):
            if action == "delete":
                del message[position]
            else:
                message[position] = data.draw(st.integers(0, 255))
    try:
        result = decode(bytes(message), room=ROOM, keys={SENDER})
    except DecodeError:
        return
    assert bytes(message) == signed(body) and result.body == body


def test_signature_binds_room_and_sender():
    message = signed(codec.Chat("hi"))
    with pytest.raises(DecodeError, match="bad_signature"):
        decode(message, room="another room", keys={SENDER})
    with pytest.raises(DecodeError, match="unknown_sender"):
        decode(message, room=ROOM, keys={bytes(OTHER.verify_key)})


def test_a_message_signed_by_someone_else_is_refused():
    forged = bytearray(encode(codec.Chat("x"), signing_key=OTHER, room=ROOM, session=1, seq=1))
    forged[18:50] = SENDER  # claim to be SENDER
    with pytest.raises(DecodeError, match="bad_signature"):
        decode(bytes(forged), room=ROOM, keys={SENDER})


def test_size_is_checked_before_anything_else():
    with pytest.raises(DecodeError, match="too_large"):
        decode(b"\x01" * (codec.MAX_MESSAGE_SIZE + 1), room=ROOM, keys={SENDER})
    with pytest.raises(ValueError, match="exceeds"):
        signed(codec.WriteBatch(1, tuple((a, b"x" * 200) for a in range(0, 0xFF00, 200))))


def test_other_protocol_version_is_named():
    message = bytearray(signed(codec.Chat("x")))
    message[0] = 5
    with pytest.raises(DecodeError, match="protocol 5, this peer speaks 6"):
        decode(bytes(message), room=ROOM, keys={SENDER})


def test_heartbeats_carry_a_roster_hash_that_ignores_order():
    keys = [bytes([n]) * 32 for n in range(3)]
    assert codec.roster_hash(keys) == codec.roster_hash(list(reversed(keys)))
    assert codec.roster_hash(keys) != codec.roster_hash(keys[:2])
    beat = codec.Heartbeat(5, 4, 3, codec.roster_hash(keys))
    assert decode(signed(beat), room=ROOM, keys={SENDER}).body == beat


@pytest.mark.parametrize(
    "build",
    [
        lambda: codec.WriteBatch(0, ((0, b"x"),)),
        lambda: codec.WriteBatch(1, ()),
        lambda: codec.WriteBatch(1, ((0xFFFF, b"xy"),)),
        lambda: codec.Chat("x" * 501),
        lambda: codec.Nonce(b"short"),
        lambda: codec.Nonce(b"n" * 32, Platform(b"short")),
        lambda: codec.Nonce(b"n" * 32, Platform(b"s" * 20, "a\nb")),
        lambda: codec.StatePatch(True, 1, 1, ()),
        lambda: codec.WriteBatch(1, ((5, b"xy"), (6, b"z"))),
        lambda: codec.WriteBatch(1, ((6, b"x"), (5, b"z"))),
    ],
)
def test_invalid_bodies_cannot_be_built(build):
    with pytest.raises(ValueError):
        build()


def _batch(key=KEY, lamport=7, runs=((0xE000, b"\x05"),), session=3):
    return codec.sign_batch(key, room=ROOM, session=session, lamport=lamport, runs=runs, totals=())


def test_a_signed_batch_opens_only_unchanged_and_by_a_member():
    batch = _batch()
    opened = codec.open_batch(batch.raw, room=ROOM, authors={SENDER})
    assert (opened.author, opened.lamport, opened.runs, opened.session) == (
        SENDER,
        7,
        ((0xE000, b"\x05"),),
        3,
    )
    with pytest.raises(DecodeError, match="unknown_author"):
        codec.open_batch(batch.raw, room=ROOM, authors={bytes(OTHER.verify_key)})
    with pytest.raises(DecodeError, match="bad_batch_signature"):
        codec.open_batch(batch.raw, room="another room", authors={SENDER})
    changed = bytearray(batch.raw)
    changed[-65] ^= 0xFA  # the byte's value: 0x05 becomes 0xFF
    with pytest.raises(DecodeError, match="bad_batch_signature"):
        codec.open_batch(bytes(changed), room=ROOM, authors={SENDER})


def test_a_batch_with_more_runs_than_allowed_is_refused_before_its_runs_are_read():
    runs = tuple((0xE000 + 2 * n, b"\x01") for n in range(40))
    with pytest.raises(DecodeError, match="too_many_runs"):
        codec.open_batch(_batch(runs=runs).raw, room=ROOM, authors={SENDER}, max_runs=32)
    message = signed(codec.WriteBatch.of(_batch(runs=runs)))
    with pytest.raises(DecodeError, match="too_many_runs"):
        decode(message, room=ROOM, keys={SENDER}, max_runs=32)


def test_a_write_batch_carries_its_authors_signature():
    batch = _batch()
    decoded = decode(signed(codec.WriteBatch.of(batch)), room=ROOM, keys={SENDER})
    assert isinstance(decoded.body, codec.WriteBatch)
    assert codec.batch_of(SENDER, 3, decoded.body, room=ROOM) == batch
    with pytest.raises(DecodeError, match="bad_batch_signature"):
        codec.batch_of(SENDER, 4, decoded.body, room=ROOM)  # another session: not what was signed
