"""Identity binding for one peer connection: "connected" is not "admitted".

DTLS only proves that the far end holds the certificate whose fingerprint came through
signalling, and the signalling server chose what it relayed. So once the data channel is open,
both ends exchange fresh nonces and each sends a proof covering (room, both DTLS fingerprints,
both nonces, its role). The proof travels inside a codec message signed with the sender's
Ed25519 key, so it binds that key to this very DTLS session: a relay in the middle sees other
fingerprints on each of its two legs, and an old proof carries old nonces. In a room with a
password each proof also carries a MAC under a key derived from the password, so a rendezvous
that does not know the password cannot admit an impostor either.

This module owns the state machine of that exchange for one connection. It is pure: nonces and
`now` come in as arguments, it does no I/O and imports no network code. The adapter encodes what
it asks to send as codec `Nonce` / `Proof` bodies and feeds back what it decoded.

The nonce message is also each side's hello: it names the game the sender runs (its ROM's SHA-1
and machine, `peer.core.room.room_game.Platform`). The binding hands it to `platform_check`, and a
peer whose game may not share with ours is refused (`DIFFERENT_GAME`) before anything is shared.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import nacl.pwhash

from peer.core.room.room_game import Platform
from peer.core.sync import codec
from peer.core.sync.codec import Proof

NONCE_SIZE = 32
MAC_SIZE = 32
KEY_SIZE = 32
# Both proofs must arrive within this many seconds of the channel opening.
BIND_TIMEOUT = 10.0

_T = TypeVar("_T")
_MAC_DOMAIN = b"msxsync-binding-mac\x00"
_SALT_DOMAIN = b"msxsync-room-password\x00"
_RENDEZVOUS_DOMAIN = b"msxsync-rendezvous-password\x00"


class Role(enum.Enum):
    """Which side of the peer connection made the offer."""

    OFFERER = 0  # the values are the codec's `Proof.role`
    ANSWERER = 1

    @property
    def other(self) -> Role:
        return Role.ANSWERER if self is Role.OFFERER else Role.OFFERER


def role_towards(local_key: bytes, peer: bytes) -> Role:
    """The deterministic offerer rule: the smaller key offers (both ends agree, so no glare)."""
    return Role.OFFERER if local_key < peer else Role.ANSWERER


class RefusalReason(enum.Enum):
    """Why a peer was not admitted; values are stable strings used in statistics and logs."""

    UNKNOWN_KEY = "unknown-key"  # signed by a key that is not in the room's roster
    WRONG_KEY = "wrong-key"  # signed by a roster key other than the member we dialled
    BAD_MESSAGE = "bad-message"  # not a verifiable message (bad signature, malformed)
    FINGERPRINT_MISMATCH = "fingerprint-mismatch"
    NONCE_MISMATCH = "nonce-mismatch"
    ROLE_MISMATCH = "role-mismatch"
    PASSWORD_MISMATCH = "password-mismatch"
    PROTOCOL = "protocol"  # out-of-order or malformed binding messages
    VERSION = "version"  # the peer speaks another msxsync protocol version
    DIFFERENT_GAME = "different-game"  # its ROM or machine is not the room's (`room_game`)
    TIMEOUT = "timeout"


class BindingState(enum.Enum):
    AWAITING_NONCE = "awaiting-nonce"
    AWAITING_PROOF = "awaiting-proof"
    ADMITTED = "admitted"
    REFUSED = "refused"


@dataclass(frozen=True)
class Admitted:
    peer: bytes


@dataclass(frozen=True)
class Refused:
    peer: bytes
    reason: RefusalReason
    detail: str


BindingEvent = Admitted | Refused


def derive_room_key(password: str, room: str) -> bytes:
    """The key proving knowledge of a room password between peers (Argon2id, ~0.1 s).

    Salted by the room name and a domain of its own, so it is neither the value a rendezvous
    is shown (`rendezvous_password`) nor reusable for another room. Derive once per room.
    """
    return _argon2id(password, _SALT_DOMAIN, room)


def rendezvous_password(password: str, room: str) -> str:
    """What a client sends the rendezvous instead of the room password (64 hex digits).

    The rendezvous only needs to compare what members send; giving it an Argon2id derivation in
    a domain of its own means a rendezvous never learns the password, and what it learns does not
    help it pass the peers' own password proof (`derive_room_key`).
    """
    return _argon2id(password, _RENDEZVOUS_DOMAIN, room).hex()


def _argon2id(password: str, domain: bytes, room: str) -> bytes:
    salt = hashlib.blake2b(domain + room.encode(), digest_size=16).digest()
    return nacl.pwhash.argon2id.kdf(
        KEY_SIZE,
        password.encode(),
        salt,
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def transcript(
    *,
    room: str,
    role: Role,
    sender: bytes,
    fingerprints: tuple[str, str],
    nonces: tuple[bytes, bytes],
) -> bytes:
    """Canonical, unambiguous bytes of what one side's proof asserts."""
    texts = (room, role.name, *fingerprints)
    parts = (*(t.encode() for t in texts), sender, *nonces)
    return _MAC_DOMAIN + b"".join(_field(p) for p in parts)


def password_mac(room_key: bytes | None, transcript_bytes: bytes) -> bytes:
    """MAC of a transcript under the room key; empty when the room has no password."""
    if room_key is None:
        return b""
    return hashlib.blake2b(transcript_bytes, key=room_key, digest_size=MAC_SIZE).digest()


class Binding:
    """The binding exchange on one connection, from our side.

    Flow: the adapter sends `local_nonce`; on the peer's nonce we answer with our proof
    (`receive_nonce` returns it); on the peer's proof we admit or refuse (`receive_proof`).
    Any refusal is final for this connection.
    """

    def __init__(
        self,
        *,
        room: str,
        role: Role,
        local_key: bytes,
        peer: bytes,
        local_fingerprint: str,
        remote_fingerprint: str,
        local_nonce: bytes,
        room_key: bytes | None,
        now: float,
        platform_check: Callable[[bytes, Platform | None], str | None] | None = None,
    ) -> None:
        """`platform_check(peer, platform)`: why a peer whose hello names PLATFORM may not share
        with us, or None (no check: anything goes)."""
        if len(local_nonce) != NONCE_SIZE:
            raise ValueError(f"local nonce must be {NONCE_SIZE} bytes")
        self.room = room
        self.role = role
        self.local_key = local_key
        self.peer = peer
        self.local_nonce = local_nonce
        self._room_key = room_key
        self._platform_check = platform_check
        self._fingerprints = _ordered(role, local_fingerprint, remote_fingerprint)
        self._remote_nonce: bytes | None = None
        self._deadline: float | None = now + BIND_TIMEOUT
        self.state = BindingState.AWAITING_NONCE
        self.outcome: BindingEvent | None = None

    @property
    def remote_nonce(self) -> bytes | None:
        """The peer's nonce once it came (on the relay: its ephemeral X25519 public key)."""
        return self._remote_nonce

    def receive(self, data: bytes, keys: Collection[bytes]) -> Proof | BindingEvent:
        """A message from the link before admission, decoded against the room's `keys` (the roster).

        Returns our proof to send (after the peer's nonce), the outcome (after its proof), or a
        refusal: a sender outside the roster is an unknown key, anything undecodable a bad message,
        anything but a nonce or a proof a protocol error."""
        try:
            message = codec.decode(data, room=self.room, keys=keys)
        except codec.DecodeError as exc:
            if exc.reason == "version":
                return self._refuse(RefusalReason.VERSION, version_sentence(data))
            unknown = exc.reason == "unknown_sender"
            return self._refuse(RefusalReason.UNKNOWN_KEY if unknown else RefusalReason.BAD_MESSAGE, str(exc))
        match message.body:
            case codec.Nonce(nonce, platform):
                return self.receive_nonce(nonce, platform)
            case Proof():
                return self.receive_proof(message.sender, message.body)
            case _:
                return self._refuse(RefusalReason.PROTOCOL, f"{type(message.body).__name__} before admission")

    def receive_nonce(self, nonce: bytes, platform: Platform | None = None) -> Proof | Refused:
        """The peer's nonce and game: returns our proof to send, or a refusal."""
        if self.state is not BindingState.AWAITING_NONCE:
            return self._refuse(RefusalReason.PROTOCOL, f"nonce in state {self.state.value}")
        if len(nonce) != NONCE_SIZE or nonce == self.local_nonce:
            return self._refuse(RefusalReason.PROTOCOL, "nonce of wrong size or echoed")
        problem = self._platform_check(self.peer, platform) if self._platform_check else None
        if problem is not None:
            return self._refuse(RefusalReason.DIFFERENT_GAME, problem)
        self._remote_nonce = nonce
        self.state = BindingState.AWAITING_PROOF
        nonces = _ordered(self.role, self.local_nonce, nonce)
        mac = password_mac(self._room_key, self._transcript(self.role, self.local_key, nonces))
        return Proof(self.role.value, *self._fingerprints, *nonces, password_mac=mac)

    def receive_proof(self, sender: bytes, proof: Proof) -> BindingEvent:
        """The peer's proof, already signature-verified by the codec as coming from `sender`."""
        if self.state is not BindingState.AWAITING_PROOF or self._remote_nonce is None:
            return self._refuse(RefusalReason.PROTOCOL, f"proof in state {self.state.value}")
        problem = self._check(sender, proof, self._remote_nonce)
        if problem is not None:
            return self._refuse(*problem)
        self.state = BindingState.ADMITTED
        self._deadline = None
        self.outcome = Admitted(self.peer)
        return self.outcome

    def refuse(self, reason: RefusalReason, detail: str) -> Refused:
        """Refuse from outside (an undecodable or unexpected message before admission)."""
        return self._refuse(reason, detail)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> Refused | None:
        if self._deadline is None or now < self._deadline:
            return None
        return self._refuse(RefusalReason.TIMEOUT, f"not bound within {BIND_TIMEOUT:g} s")

    def _check(self, sender: bytes, proof: Proof, remote_nonce: bytes) -> tuple[RefusalReason, str] | None:
        nonces = _ordered(self.role, self.local_nonce, remote_nonce)
        if sender != self.peer:
            return RefusalReason.WRONG_KEY, f"proof signed by {sender.hex()[:16]}"
        if proof.role != self.role.other.value:
            return RefusalReason.ROLE_MISMATCH, f"peer claims role {proof.role}"
        if (proof.offerer_fingerprint, proof.answerer_fingerprint) != self._fingerprints:
            return RefusalReason.FINGERPRINT_MISMATCH, "peer saw other DTLS fingerprints"
        if (proof.offerer_nonce, proof.answerer_nonce) != nonces:
            return RefusalReason.NONCE_MISMATCH, "proof is not for this session's nonces"
        expected = password_mac(self._room_key, self._transcript(self.role.other, sender, nonces))
        if not hmac.compare_digest(expected, proof.password_mac):
            return RefusalReason.PASSWORD_MISMATCH, "room password proof does not verify"
        return None

    def _transcript(self, role: Role, sender: bytes, nonces: tuple[bytes, bytes]) -> bytes:
        return transcript(
            room=self.room,
            role=role,
            sender=sender,
            fingerprints=self._fingerprints,
            nonces=nonces,
        )

    def _refuse(self, reason: RefusalReason, detail: str) -> Refused:
        if isinstance(self.outcome, Refused):
            return self.outcome
        self.state = BindingState.REFUSED
        self._deadline = None
        self.outcome = Refused(self.peer, reason, detail)
        return self.outcome


def version_sentence(data: bytes) -> str:
    """What to tell a player whose peer sent a message of another protocol version."""
    theirs = data[0] if data else 0
    newer = "an older" if theirs < codec.PROTOCOL_VERSION else "a newer"
    return (
        f"the other player runs {newer} msxsync (protocol {theirs}, this one speaks "
        f"{codec.PROTOCOL_VERSION}); everyone in a room needs the same version"
    )


def _ordered(role: Role, local: _T, remote: _T) -> tuple[_T, _T]:
    """(offerer's, answerer's) from our own and the peer's value."""
    return (local, remote) if role is Role.OFFERER else (remote, local)
