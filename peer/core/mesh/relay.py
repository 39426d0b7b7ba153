"""The relayed link: mesh messages through the rendezvous, and why the rendezvous cannot forge them.

When two players reach each other neither directly nor through TURN, the rendezvous passes their
mesh messages along its WebSocket (PROTOCOL.md, "Relay"). There is no DTLS on that path, so this
module supplies what DTLS gives the direct path, from the same identity binding (`binding`).

Threat model. The rendezvous (or anyone who controls it) sees every relayed frame and may drop,
delay, duplicate, reorder, alter or invent frames, and may replay anything it saw earlier (an
older relay session of the same players, another pair's frames). It does not hold any player's
Ed25519 key, nor the room password (it only sees an Argon2id derivation in another domain). What
must hold, as on the direct path:
- **Identity**: a relayed link is admitted only after the binding exchange of `binding`: each side
  sends a fresh 32-byte nonce, then a proof signed with its Ed25519 key over (room, role, both
  nonces, the relay "fingerprints" `RELAY_FINGERPRINT`) with the room-password MAC. On the relay
  each nonce is an ephemeral X25519 public key. A proof from a direct link (DTLS fingerprints)
  or an older relay session (other nonces) does not verify here.
- **A key the rendezvous does not know**: both sides compute X25519(own secret, peer's nonce).
  The nonces are authenticated by the signed proofs, so a rendezvous that swaps them in transit
  makes the proofs fail (nonce mismatch); it cannot learn the shared secret. From it come two
  keys, one per direction, bound to the room and both nonces.
- **Integrity, order and freshness**: after admission every frame is sealed with
  ChaCha20-Poly1305 (IETF) under its direction's key, with a 64-bit counter that starts at 1 and
  grows by one per frame as the nonce. A flipped bit or an invented frame fails to open
  (`tampered`); a counter at or below the highest seen is refused (`replayed` if it was seen,
  `reordered` if not); a frame from another link or session has another key and fails to open.
  Gaps are allowed: the rendezvous may drop (its byte-rate limits do), and the replica already
  treats a sequence gap as loss and resyncs. Inside the seal travel the same signed codec
  messages as on the direct path, which the replica verifies again as always.
- **Confidentiality**: the seal also hides the game's bytes and chat from the rendezvous.
What the rendezvous can still do: drop everything (the players then see a lost link), delay
frames (latency), and learn that two players talk, when, and how much.

Pure: randomness (the ephemeral secret) comes in as an argument; no I/O, no clock.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from peer.core.mesh.binding import NONCE_SIZE, Role

RELAY_FINGERPRINT = "msxsync-relay x25519"  # what a relayed binding has instead of DTLS fingerprints
HANDSHAKE = 0  # frame kinds: a plain codec message (Nonce or Proof, before admission) ...
SEALED = 1  # ... or a sealed one
_COUNTER = struct.Struct(">Q")
TAG_SIZE = 16
OVERHEAD = 1 + _COUNTER.size + TAG_SIZE  # of a sealed frame over the message it carries
WINDOW = 256  # recent counters remembered to tell a replay from a reordering
_KEY_DOMAIN = b"msxsync-relay-key\x00"


class RelayRefusal(enum.Enum):
    """Why a relayed frame was refused; the values are the counters' names."""

    MALFORMED = "relay_malformed"  # too short, or an unknown kind
    UNEXPECTED = "relay_unexpected"  # a sealed frame before admission, or a plain one after
    TAMPERED = "relay_tampered"  # does not open: altered, invented, or from another link
    REPLAYED = "relay_replayed"  # a counter already opened
    REORDERED = "relay_reordered"  # a counter below the highest, never seen


class RelayError(ValueError):
    def __init__(self, reason: RelayRefusal, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """Our X25519 key pair for one relay session; `public` is our binding nonce."""

    secret: bytes
    public: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> Ephemeral:
        if len(secret) != NONCE_SIZE:
            raise ValueError(f"an X25519 secret is {NONCE_SIZE} bytes")
        return cls(secret, nacl.bindings.crypto_scalarmult_base(secret))


def handshake_frame(message: bytes) -> bytes:
    """A Nonce or Proof codec message as sent before admission (signed, not sealed)."""
    return bytes([HANDSHAKE]) + message


def split_handshake(frame: bytes) -> bytes:
    """The codec message in a handshake frame; RelayError for anything else."""
    if not frame:
        raise RelayError(RelayRefusal.MALFORMED, "empty frame")
    if frame[0] == SEALED:
        raise RelayError(RelayRefusal.UNEXPECTED, "a sealed frame before admission")
    if frame[0] != HANDSHAKE:
        raise RelayError(RelayRefusal.MALFORMED, f"frame kind {frame[0]}")
    return frame[1:]


class RelayChannel:
    """Sealing and opening for one admitted relay session, from our side.

    Built once the binding admitted the peer, from our ephemeral pair and the peer's nonce (its
    ephemeral public key), which the peer's signed proof covered."""

    def __init__(self, *, ephemeral: Ephemeral, peer_public: bytes, role: Role, room: str) -> None:
        try:
            shared = nacl.bindings.crypto_scalarmult(ephemeral.secret, peer_public)
        except nacl.exceptions.CryptoError:  # a low-order point: no secret can come of it
            raise RelayError(RelayRefusal.TAMPERED, "the peer's relay key is not usable") from None
        publics = (ephemeral.public, peer_public) if role is Role.OFFERER else (peer_public, ephemeral.public)
        self._send_key = _direction_key(shared, publics, room, role)
        self._receive_key = _direction_key(shared, publics, room, role.other)
        self._next = 1
        self._highest = 0
        self._seen: set[int] = set()
        self.opened = 0
        self.sealed = 0

    def seal(self, message: bytes) -> bytes:
        counter = _COUNTER.pack(self._next)
        self._next += 1
        self.sealed += 1
        box = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            message, counter, b"\x00" * 4 + counter, self._send_key
        )
        return bytes([SEALED]) + counter + box

    def open(self, frame: bytes) -> bytes:
        """The message in a sealed frame from the peer, or RelayError saying why not."""
        if len(frame) < OVERHEAD:
            raise RelayError(RelayRefusal.MALFORMED, f"{len(frame)} bytes")
        if frame[0] == HANDSHAKE:
            raise RelayError(RelayRefusal.UNEXPECTED, "a handshake frame after admission")
        if frame[0] != SEALED:
            raise RelayError(RelayRefusal.MALFORMED, f"frame kind {frame[0]}")
        raw = frame[1 : 1 + _COUNTER.size]
        (counter,) = _COUNTER.unpack(raw)
        try:
            message = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                frame[1 + _COUNTER.size :], raw, b"\x00" * 4 + raw, self._receive_key
            )
        except nacl.exceptions.CryptoError:
            raise RelayError(RelayRefusal.TAMPERED, f"frame {counter} does not open") from None
        if counter <= self._highest:
            reason = RelayRefusal.REPLAYED if counter in self._seen else RelayRefusal.REORDERED
            if counter <= self._highest - WINDOW:
                reason = RelayRefusal.REPLAYED  # too old to tell: refused either way
            raise RelayError(reason, f"frame {counter} after {self._highest}")
        self._highest = counter
        self._seen.add(counter)
        if len(self._seen) > 2 * WINDOW:
            self._seen = {c for c in self._seen if c > counter - WINDOW}
        self.opened += 1
        return message


def _direction_key(shared: bytes, publics: tuple[bytes, bytes], room: str, sender: Role) -> bytes:
    """The key of frames sent by `sender`: bound to the DH secret, both nonces and the room."""
    material = _KEY_DOMAIN + bytes([sender.value]) + room.encode() + b"\x00" + publics[0] + publics[1]
    return hashlib.blake2b(material, key=shared, digest_size=32).digest()
