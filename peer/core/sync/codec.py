"""The wire format between peers: versioned, binary, every message signed with Ed25519.

Layout of every message (big-endian)::

    version u8 | kind u8 | session u64 | seq u64 | sender 32 bytes | body ... | signature 64 bytes

The signature covers ``b"msxsync/1\\0" + blake2b(room) + header + body``: protocol version, room,
sender key, the sender's session and per-link sequence number, and the whole body (Lamport values,
addresses, bytes). The room is not sent, only signed, so a message cannot be replayed into another room.

`decode(data, room=..., keys=...)` checks the size first, then that the sender is one of `keys`, then
the signature, and only then parses the body: it returns a verified `Decoded` or raises `DecodeError`
with a short `reason` code, nothing else. `encode` refuses to build anything `decode` would refuse.

Version 2 (merge rules) adds counters: a `WriteBatch` carries, besides byte runs, the sender's new
totals of the counters it changed (its slot is its key and the header's session), and a
`StatePatch` carries contributions (`state.Contribution`) besides byte entries. A version-1 peer
cannot take part in a room with counters, and its messages are refused as `version` (the mesh
tells the player which msxsync the other side runs).

Version 3 (signed authorship): every write keeps its author's signature wherever it travels. A
`WriteBatch` carries, besides its runs and totals, the author's signature of the batch itself
(``b"msxsync/batch/3\0" + blake2b(room) + author + session + lamport + runs + totals``), made once
and the same towards every peer; the receiver rebuilds the `state.SignedBatch` from the header's
sender and session and checks it (`batch_of`). A `StatePatch` (full state, repair, catch-up) is a
list of such signed batches as their authors signed them (`SignedBatch.raw`), each checked by
`open_batch` against the keys of the room's members: a sender can pass on other members' writes,
never change them or make up writes under another key. Runs must be sorted and not overlap, and a
batch may not have more runs than the caller allows (the layout's size), checked before any run is
read. A version-2 peer's messages are refused as `version`.

Version 4 (one ROM per room) adds to the hello (`Nonce`) the sender's `Platform`: its ROM's SHA-1,
its machine and whether the player forced another ROM (`peer.core.room.room_game`). A version-3 peer's
messages are refused as `version`.

Version 5 (issue 18): a `Heartbeat` also carries `roster`, a hash of the room's members as the
sender's rendezvous lists them (`roster_hash`), so that peers given different rosters find out and
say so. A version-4 peer's messages are refused as `version` (the binding tells the player).

Version 6 (issue 30, F3 and F4): a batch's counter total is its author's total over all its sessions
(one slot per author and counter, its newest session's newest total winning; see `merge`), not
one session's, and must lie within the counter's range. The bytes are laid out as in version 5,
but a version-5 peer would add up an author's sessions, so its messages are refused as `version`.

Sequence number 0 is reserved for the identity handshake (`Nonce`, `Proof`), which happens before a
peer is admitted and is not tracked by the replica.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from peer.core.room.room_game import SHA1_SIZE, Platform
from peer.core.sync.clock import MAX_LAMPORT
from peer.core.sync.state import MAX_TOTAL, Run, SignedBatch

PROTOCOL_VERSION = 6
ROSTER_HASH_SIZE = 8
MAX_MESSAGE_SIZE = 64 * 1024  # aiortc's maximum data-channel message
MAX_CHAT_BYTES = 500
MAX_TEXT_BYTES = 200
KEY_SIZE = 32
SIGNATURE_SIZE = 64
DIGEST_SIZE = 32
NONCE_SIZE = 32
_DOMAIN = b"msxsync/1\x00"
_BATCH_DOMAIN = b"msxsync/batch/3\x00"
_BATCH_HEAD = struct.Struct(">32sQQ")  # author, session, lamport
MAX_RUNS = 0xFFFF
_HEADER = struct.Struct(">BBQQ32s")
_RUN = struct.Struct(">HH")
_COUNTER = struct.Struct(">Hq")
HEADER_SIZE = _HEADER.size
_PATCH_HEAD = struct.Struct(">BHHH")  # full, part, parts, batch count
MAX_BATCH_SIZE = MAX_MESSAGE_SIZE - HEADER_SIZE - _PATCH_HEAD.size - 4 - SIGNATURE_SIZE
"""The largest signed batch (its `raw`) one state patch can carry. A larger one could be merged
but never passed on in a full state, repair or catch-up (issue 30, F2): it is refused."""
MIN_MESSAGE_SIZE = HEADER_SIZE + SIGNATURE_SIZE


class Kind(IntEnum):
    WRITE_BATCH = 1
    STATE_PATCH = 2
    DIGEST = 3
    RESYNC_REQUEST = 4
    HEARTBEAT = 5
    CHAT = 6
    NONCE = 7
    PROOF = 8
    BYE = 9


class DecodeError(ValueError):
    """A message that is not a verified, well-formed msxsync message. `reason` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _check_runs(runs: tuple[Run, ...]) -> None:
    end = 0
    for address, data in runs:
        if not (0 <= address <= 0xFFFF and len(data) >= 1 and address + len(data) <= 0x10000):
            raise ValueError(f"run at {address:#x} of {len(data)} bytes leaves the address space")
        if address < end:
            raise ValueError(f"run at {address:#x} is out of order or overlaps the one before")
        end = address + len(data)


def _check_lamport(lamport: int) -> None:
    if not 0 < lamport <= MAX_LAMPORT:
        raise ValueError(f"Lamport value {lamport} is out of range")


Total = tuple[int, int]  # (a counter's first address, the sender's new total there)


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """One frame's local changes from one sender, all under one Lamport value: byte runs, and
    the sender's new totals of the counters it changed."""

    lamport: int
    runs: tuple[Run, ...]
    totals: tuple[Total, ...] = ()
    signature: bytes = bytes(SIGNATURE_SIZE)  # the author's signature of the batch (`sign_batch`)

    @classmethod
    def of(cls, batch: SignedBatch) -> WriteBatch:
        return cls(batch.lamport, batch.runs, batch.totals, batch.id)

    def __post_init__(self) -> None:
        _check_lamport(self.lamport)
        if len(self.signature) != SIGNATURE_SIZE:
            raise ValueError("a batch signature is 64 bytes")
        if len({address for address, _ in self.totals}) != len(self.totals):
            raise ValueError("a batch names one counter twice")
        if not self.runs and not self.totals:
            raise ValueError("a write batch needs at least one run or total")
        _check_runs(self.runs)
        for address, total in self.totals:
            if not (0 <= address <= 0xFFFF and -MAX_TOTAL <= total <= MAX_TOTAL):
                raise ValueError(f"a total of {total} at {address:#x} is out of range")


@dataclass(frozen=True, slots=True)
class StatePatch:
    """Signed batches as their authors signed them (`SignedBatch.raw`): part `part` of `parts` of
    a full state, or a partial patch."""

    full: bool
    part: int
    parts: int
    batches: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.part < self.parts <= 0xFFFF:
            raise ValueError(f"part {self.part} of {self.parts} is impossible")
        if len(self.batches) > 0xFFFF:
            raise ValueError("too many batches in one patch")


@dataclass(frozen=True, slots=True)
class Digest:
    digest: bytes
    max_lamport: int

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE or not 0 <= self.max_lamport <= MAX_LAMPORT:
            raise ValueError("malformed digest")


@dataclass(frozen=True, slots=True)
class ResyncRequest:
    pass


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """`sent_ms` is the sender's wall clock; `echo_ms` the last `sent_ms` it got from the recipient
    and `held_ms` how long it held that before this reply, so the recipient measures RTT."""

    sent_ms: int
    echo_ms: int = 0
    held_ms: int = 0
    roster: bytes = bytes(ROSTER_HASH_SIZE)  # `roster_hash` of the sender's roster; zeros: none yet

    def __post_init__(self) -> None:
        for value in (self.sent_ms, self.echo_ms, self.held_ms):
            if not 0 <= value <= MAX_LAMPORT:
                raise ValueError("heartbeat time out of range")
        if len(self.roster) != ROSTER_HASH_SIZE:
            raise ValueError("a roster hash has 8 bytes")


SESSIONS_PER_SECOND = 1 << 16


def session_floor(wall: float) -> int:
    """The lowest session a peer starting at WALL (seconds since the epoch) may take: sessions
    grow with time, so a restart's session is above its earlier ones even when its disk is lost
    (a counter's slot takes a writer's newest session, `merge`)."""
    return int(wall) * SESSIONS_PER_SECOND


def roster_hash(keys: Collection[bytes]) -> bytes:
    """What a `Heartbeat` says about the roster: the same for the same set of keys, in any order."""
    return hashlib.blake2b(b"".join(sorted(set(keys))), digest_size=ROSTER_HASH_SIZE).digest()


def _check_text(text: str, limit: int) -> None:
    if len(text.encode("utf-8")) > limit:
        raise ValueError(f"text is longer than {limit} bytes")


@dataclass(frozen=True, slots=True)
class Chat:
    text: str

    def __post_init__(self) -> None:
        _check_text(self.text, MAX_CHAT_BYTES)


@dataclass(frozen=True, slots=True)
class Nonce:
    """The binding's hello: a fresh nonce, and what the sender's game runs (None: not said)."""

    nonce: bytes
    platform: Platform | None = None

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError("a nonce is 32 bytes")


@dataclass(frozen=True, slots=True)
class Proof:
    """Identity binding: the sender's role and what it saw of both DTLS fingerprints and nonces."""

    role: int
    offerer_fingerprint: str
    answerer_fingerprint: str
    offerer_nonce: bytes
    answerer_nonce: bytes
    password_mac: bytes = b""

    def __post_init__(self) -> None:
        if self.role not in (0, 1):
            raise ValueError("role is 0 (offerer) or 1 (answerer)")
        _check_text(self.offerer_fingerprint, MAX_TEXT_BYTES)
        _check_text(self.answerer_fingerprint, MAX_TEXT_BYTES)
        if len(self.offerer_nonce) != NONCE_SIZE or len(self.answerer_nonce) != NONCE_SIZE:
            raise ValueError("nonces are 32 bytes")
        if len(self.password_mac) not in (0, 32):
            raise ValueError("a password MAC is 32 bytes or absent")


@dataclass(frozen=True, slots=True)
class Bye:
    reason: str = ""

    def __post_init__(self) -> None:
        _check_text(self.reason, MAX_TEXT_BYTES)


Body = WriteBatch | StatePatch | Digest | ResyncRequest | Heartbeat | Chat | Nonce | Proof | Bye


@dataclass(frozen=True, slots=True)
class Decoded:
    """A verified message. `signature` identifies it (Ed25519 signatures are deterministic)."""

    session: int
    seq: int
    sender: bytes
    body: Body
    signature: bytes


def room_id(room: str) -> bytes:
    return hashlib.blake2b(room.encode("utf-8"), digest_size=32, person=b"msxsync-room").digest()


# ---- encoding ---------------------------------------------------------------------------------


def _pack_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def _pack_runs(runs: tuple[Run, ...]) -> bytes:
    parts = [struct.pack(">H", len(runs))]
    for address, data in runs:
        parts += [_RUN.pack(address, len(data)), data]
    return b"".join(parts)


def _pack_patch(patch: StatePatch) -> bytes:
    parts = [_PATCH_HEAD.pack(patch.full, patch.part, patch.parts, len(patch.batches))]
    for raw in patch.batches:
        parts += [struct.pack(">I", len(raw)), raw]
    return b"".join(parts)


def _pack_totals(totals: tuple[Total, ...]) -> bytes:
    return struct.pack(">H", len(totals)) + b"".join(_COUNTER.pack(a, t) for a, t in totals)


def _pack_body(body: Body) -> tuple[Kind, bytes]:
    match body:
        case WriteBatch(lamport, runs, totals, signature):
            return Kind.WRITE_BATCH, struct.pack(">Q", lamport) + _pack_runs(runs) + _pack_totals(
                totals
            ) + signature
        case StatePatch():
            return Kind.STATE_PATCH, _pack_patch(body)
        case Digest(digest, max_lamport):
            return Kind.DIGEST, digest + struct.pack(">Q", max_lamport)
        case ResyncRequest():
            return Kind.RESYNC_REQUEST, b""
        case Heartbeat(sent_ms, echo_ms, held_ms, roster):
            return Kind.HEARTBEAT, struct.pack(">QQQ", sent_ms, echo_ms, held_ms) + roster
        case Chat(text):
            return Kind.CHAT, _pack_text(text)
        case Nonce(nonce, platform):
            return Kind.NONCE, nonce + _pack_platform(platform)
        case Proof():
            return Kind.PROOF, _pack_proof(body)
        case Bye(reason):
            return Kind.BYE, _pack_text(reason)
    raise TypeError(f"cannot encode {body!r}")


_HAS_PLATFORM, _FORCED = 1, 2


def _pack_platform(platform: Platform | None) -> bytes:
    if platform is None:
        return b"\x00"
    flags = _HAS_PLATFORM | (_FORCED if platform.forced else 0)
    return bytes([flags]) + platform.rom + _pack_text(platform.machine)


def _read_platform(reader: _Reader) -> Platform | None:
    flags = reader.number(">B")
    if flags & ~(_HAS_PLATFORM | _FORCED) or flags == _FORCED:
        raise DecodeError("malformed", f"hello flags {flags:#x}")
    if not flags & _HAS_PLATFORM:
        return None
    rom = reader.take(SHA1_SIZE)
    machine = reader.text()
    try:
        return Platform(rom, machine, bool(flags & _FORCED))
    except ValueError as exc:
        raise DecodeError("malformed", str(exc)) from None


def _pack_proof(proof: Proof) -> bytes:
    return b"".join(
        [
            bytes([proof.role]),
            _pack_text(proof.offerer_fingerprint),
            _pack_text(proof.answerer_fingerprint),
            proof.offerer_nonce,
            proof.answerer_nonce,
            bytes([len(proof.password_mac)]),
            proof.password_mac,
        ]
    )


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signs our messages: our key, in one room, in one session (the three go together in
    every message header and signature, so they travel as one)."""

    signing_key: SigningKey
    room: str
    session: int

    @property
    def key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def encode(self, body: Body, seq: int = 0) -> bytes:
        """`body` signed as one message (seq 0: the handshakes, outside the sync sequence)."""
        return encode(body, signing_key=self.signing_key, room=self.room, session=self.session, seq=seq)


def encode(body: Body, *, signing_key: SigningKey, room: str, session: int, seq: int) -> bytes:
    """Build and sign one message; raises ValueError for anything `decode` would refuse."""
    if not (0 <= session < 2**64 and 0 <= seq < 2**64):
        raise ValueError("session and seq are unsigned 64-bit numbers")
    kind, payload = _pack_body(body)
    header = _HEADER.pack(PROTOCOL_VERSION, kind, session, seq, bytes(signing_key.verify_key))
    signature = signing_key.sign(_DOMAIN + room_id(room) + header + payload).signature
    message = header + payload + signature
    if len(message) > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return message


# ---- decoding ---------------------------------------------------------------------------------


class _Reader:
    """Reads fields from a body; any overrun or leftover is a DecodeError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise DecodeError("truncated", "the body ends early")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        return tuple(layout.unpack(self.take(layout.size)))

    def number(self, fmt: str) -> int:
        value: int = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def text(self) -> str:
        raw = self.take(self.number(">H"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("malformed", "text is not UTF-8") from None

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise DecodeError("malformed", "trailing bytes after the body")


def _read_runs(reader: _Reader, max_runs: int = MAX_RUNS) -> tuple[Run, ...]:
    count = reader.number(">H")
    if count > max_runs:
        raise DecodeError("too_many_runs", f"{count} runs, at most {max_runs}")
    runs = []
    end = 0
    for _ in range(count):
        address, length = reader.unpack(_RUN)
        if address < end or length == 0:
            raise DecodeError("malformed", "runs out of order, overlapping or empty")
        end = address + length
        runs.append((address, reader.take(length)))
    return tuple(runs)


def _read_totals(reader: _Reader) -> tuple[Total, ...]:
    totals = tuple(reader.unpack(_COUNTER) for _ in range(reader.number(">H")))
    return tuple((a, t) for a, t in totals)


def _read_patch(reader: _Reader) -> StatePatch:
    full, part, parts, count = reader.unpack(_PATCH_HEAD)
    if full > 1:
        raise DecodeError("malformed", "bad flag")
    batches = tuple(reader.take(reader.number(">I")) for _ in range(count))
    return StatePatch(bool(full), part, parts, batches)


def _read_proof(reader: _Reader) -> Proof:
    role = reader.number(">B")
    offerer_fp, answerer_fp = reader.text(), reader.text()
    offerer_nonce, answerer_nonce = reader.take(NONCE_SIZE), reader.take(NONCE_SIZE)
    mac = reader.take(reader.number(">B"))
    return Proof(role, offerer_fp, answerer_fp, offerer_nonce, answerer_nonce, mac)


def _read_body(kind: int, reader: _Reader, max_runs: int) -> Body:
    match kind:
        case Kind.WRITE_BATCH:
            lamport = reader.number(">Q")
            runs = _read_runs(reader, max_runs)
            totals = _read_totals(reader)
            return WriteBatch(lamport, runs, totals, reader.take(SIGNATURE_SIZE))
        case Kind.STATE_PATCH:
            return _read_patch(reader)
        case Kind.DIGEST:
            return Digest(reader.take(DIGEST_SIZE), reader.number(">Q"))
        case Kind.RESYNC_REQUEST:
            return ResyncRequest()
        case Kind.HEARTBEAT:
            times = reader.number(">Q"), reader.number(">Q"), reader.number(">Q")
            return Heartbeat(*times, reader.take(ROSTER_HASH_SIZE))
        case Kind.CHAT:
            return Chat(reader.text())
        case Kind.NONCE:
            return Nonce(reader.take(NONCE_SIZE), _read_platform(reader))
        case Kind.PROOF:
            return _read_proof(reader)
        case Kind.BYE:
            return Bye(reader.text())
    raise DecodeError("unknown_kind", f"message kind {kind}")


def decode(data: bytes, *, room: str, keys: Collection[bytes], max_runs: int = MAX_RUNS) -> Decoded:
    """Verify and parse one message from a sender in `keys`, or raise DecodeError."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise DecodeError("too_large", f"{len(data)} bytes")
    if len(data) < MIN_MESSAGE_SIZE:
        raise DecodeError("truncated", f"{len(data)} bytes is shorter than any message")
    version, kind, session, seq, sender = _HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise DecodeError("version", f"protocol {version}, this peer speaks {PROTOCOL_VERSION}")
    if sender not in keys:
        raise DecodeError("unknown_sender")
    signed, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    try:
        VerifyKey(sender).verify(_DOMAIN + room_id(room) + signed, signature)
    except BadSignatureError:
        raise DecodeError("bad_signature") from None
    reader = _Reader(signed[HEADER_SIZE:])
    try:
        body = _read_body(kind, reader, max_runs)
    except ValueError as exc:  # a dataclass refused the values (DecodeError is a ValueError too)
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError("malformed", str(exc)) from None
    reader.finish()
    return Decoded(session, seq, sender, body, signature)


# ---- signed batches ---------------------------------------------------------------------------


def _batch_content(author: bytes, session: int, batch: WriteBatch) -> bytes:
    head = _BATCH_HEAD.pack(author, session, batch.lamport)
    return head + _pack_runs(batch.runs) + _pack_totals(batch.totals)


def sign_batch(
    signing_key: SigningKey,
    *,
    room: str,
    session: int,
    lamport: int,
    runs: tuple[Run, ...],
    totals: tuple[Total, ...],
) -> SignedBatch:
    """Sign one local write once; the result travels unchanged to every peer and to the disk."""
    author = bytes(signing_key.verify_key)
    content = _batch_content(author, session, WriteBatch(lamport, runs, totals))
    signature = signing_key.sign(_BATCH_DOMAIN + room_id(room) + content).signature
    return SignedBatch(author, session, lamport, runs, totals, content + signature)


def batch_of(sender: bytes, session: int, batch: WriteBatch, *, room: str) -> SignedBatch:
    """The signed batch a received `WriteBatch` carries, its author's signature checked."""
    content = _batch_content(sender, session, batch)
    _verify(sender, room, content, batch.signature)
    return SignedBatch(sender, session, batch.lamport, batch.runs, batch.totals, content + batch.signature)


def open_batch(
    raw: bytes, *, room: str, authors: Collection[bytes] | None, max_runs: int = MAX_RUNS
) -> SignedBatch:
    """Verify and parse a signed batch by one of `authors` (None: by anyone, for this peer's own
    disk, whose batches were checked when they were accepted), or raise DecodeError."""
    if len(raw) < _BATCH_HEAD.size + 4 + SIGNATURE_SIZE:
        raise DecodeError("truncated", "a signed batch is too short")
    author, session, lamport = _BATCH_HEAD.unpack_from(raw)
    if authors is not None and author not in authors:
        raise DecodeError("unknown_author", author.hex()[:8])
    content, signature = raw[:-SIGNATURE_SIZE], raw[-SIGNATURE_SIZE:]
    _verify(author, room, content, signature)
    reader = _Reader(content[_BATCH_HEAD.size :])
    try:
        runs = _read_runs(reader, max_runs)
        totals = _read_totals(reader)
        reader.finish()
        WriteBatch(lamport, runs, totals, signature)  # the same rules as a batch sent directly
    except ValueError as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError("malformed", str(exc)) from None
    return SignedBatch(author, session, lamport, runs, totals, bytes(raw))


def _verify(author: bytes, room: str, content: bytes, signature: bytes) -> None:
    try:
        VerifyKey(author).verify(_BATCH_DOMAIN + room_id(room) + content, signature)
    except BadSignatureError:
        raise DecodeError("bad_batch_signature") from None
