"""One relay session with one peer, from our side: the binding through the rendezvous, then sealing.

Owns what a relay session is (`peer.core.mesh.relay` holds the frames, the channel and the threat
model): our ephemeral X25519 key, whose public half is our binding nonce; the identity `Binding`
with the relay "fingerprints"; once the peer is admitted, the sealing `RelayChannel`; and, once a
direct link took over, the drain deadline until which what was still in flight is opened.

Frames come in (`receive`), typed outcomes come out: `Reply(frame)` to send to the peer,
`Admitted()`, `Opened(data)` for the replica, `Dropped(reason, detail)` for a frame refused while
the session goes on (the rendezvous may have made it up: count it), `Refused(reason, detail)`
when the session is over. The handshake messages are signed codec messages built here.

Pure: the ephemeral secret, `now` and the roster's keys come in as arguments; no I/O, no clock.
Which session is current is the relay path's (`peer.core.mesh.relay_path`), and what an outcome
means for the peer is the mesh core's (`peer.core.mesh.core`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from peer.core.mesh.binding import Admitted as BindingAdmitted
from peer.core.mesh.binding import Binding, RefusalReason, Role
from peer.core.mesh.binding import Refused as BindingRefused
from peer.core.mesh.relay import (
    HANDSHAKE,
    RELAY_FINGERPRINT,
    Ephemeral,
    RelayChannel,
    RelayError,
    RelayRefusal,
    handshake_frame,
    split_handshake,
)
from peer.core.sync import codec

RELAY_DRAIN = 10.0  # after moving to a direct link, what was in flight on the relay still counts


# ---- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A handshake frame to send to the peer through the relay."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class Admitted:
    """The peer proved who it is: from now on every frame is sealed."""


@dataclass(frozen=True, slots=True)
class Opened:
    """A message the peer sealed, opened: the replica's to receive."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Dropped:
    """One frame refused; the session goes on (the rendezvous may have made the frame up)."""

    reason: RelayRefusal
    detail: str

    @property
    def counter(self) -> str:
        return self.reason.value


@dataclass(frozen=True, slots=True)
class Refused:
    """The session is over: its binding refused the peer (or timed out), or the peer's relay key
    is unusable. No ban: the rendezvous may be to blame."""

    reason: RefusalReason | RelayRefusal
    detail: str

    @property
    def counter(self) -> str:
        """The name this is counted under (with the frames refused on the relay)."""
        if isinstance(self.reason, RefusalReason):
            return f"relay_binding_{self.reason.value}"
        return self.reason.value

    @property
    def sentence(self) -> str:
        """Why the relayed link is lost, as logs and `LinkLost` say it."""
        if isinstance(self.reason, RefusalReason):
            return f"relay binding failed: {self.reason.value}"
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Drained:
    """A direct link took over long enough ago: the session can be forgotten."""


Outcome = Reply | Admitted | Opened | Dropped | Refused


def is_relay_nonce(frame: bytes) -> bool:
    """Whether a frame is a handshake frame carrying a `Nonce`: how the offerer starts a session
    (or starts over), so the answerer knows to make a new one."""
    return len(frame) > 2 and frame[0] == HANDSHAKE and frame[2] == codec.Kind.NONCE


def stray(frame: bytes) -> Dropped:
    """Why a frame that came outside any relay session is refused."""
    try:
        split_handshake(frame)
    except RelayError as exc:
        return _dropped(exc)
    return Dropped(RelayRefusal.UNEXPECTED, "a handshake frame outside a relay session")


class RelaySession:
    """One relay session with `peer`: `start()` gives our nonce frame, `receive` takes the peer's
    frames, `seal` (once admitted) builds ours."""

    def __init__(
        self,
        *,
        signer: codec.Signer,
        role: Role,
        peer: bytes,
        secret: bytes,
        room_key: bytes | None,
        now: float,
    ) -> None:
        """`signer`: our key, room and session (the replica's), for the handshake messages;
        `secret`: the ephemeral X25519 secret, 32 random bytes."""
        self.peer = peer
        self._room = signer.room
        self._role = role
        self._signer = signer
        self._ephemeral = Ephemeral.from_secret(secret)
        self._binding = Binding(
            room=signer.room,
            role=role,
            local_key=signer.key,
            peer=peer,
            local_fingerprint=RELAY_FINGERPRINT,
            remote_fingerprint=RELAY_FINGERPRINT,
            local_nonce=self._ephemeral.public,
            room_key=room_key,
            now=now,
        )
        self._channel: RelayChannel | None = None
        self.drain_until: float | None = None  # set once a direct link took over

    @property
    def admitted(self) -> bool:
        return self._channel is not None

    def start(self) -> Reply:
        """Our nonce (our ephemeral public key), the first frame to send."""
        return self._handshake(codec.Nonce(self._ephemeral.public))

    def receive(self, frame: bytes, keys: Collection[bytes]) -> Outcome:
        """A frame the rendezvous relayed from the peer; `keys`: the room's roster."""
        if self._channel is not None:
            try:
                return Opened(self._channel.open(frame))
            except RelayError as exc:
                return _dropped(exc)
        try:
            data = split_handshake(frame)
        except RelayError as exc:
            return _dropped(exc)
        match self._binding.receive(data, keys=keys):
            case BindingRefused(_, reason, detail):
                return Refused(reason, detail)
            case BindingAdmitted():
                return self._admit()
            case proof:
                return self._handshake(proof)

    def seal(self, data: bytes) -> bytes:
        """A message for the peer, sealed; only once admitted."""
        if self._channel is None:
            raise RuntimeError("a relay session seals only once admitted")
        return self._channel.seal(data)

    def drain(self, now: float) -> None:
        """A direct link took over: frames in flight are still opened for `RELAY_DRAIN` seconds."""
        self.drain_until = now + RELAY_DRAIN

    def get_timer(self) -> float | None:
        times = (self._binding.get_timer(), self.drain_until)
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> Refused | Drained | None:
        refused = self._binding.handle_timer(now)
        if refused is not None:
            return Refused(refused.reason, refused.detail)
        if self.drain_until is not None and now >= self.drain_until:
            return Drained()
        return None

    def _admit(self) -> Admitted | Refused:
        remote = self._binding.remote_nonce
        if remote is None:  # (the binding admits only after the peer's nonce)
            raise RuntimeError("relay binding admitted without the peer's nonce")
        try:
            self._channel = RelayChannel(
                ephemeral=self._ephemeral, peer_public=remote, role=self._role, room=self._room
            )
        except RelayError as exc:
            return Refused(exc.reason, exc.detail)
        return Admitted()

    def _handshake(self, body: codec.Body) -> Reply:
        return Reply(handshake_frame(self._signer.encode(body)))


def _dropped(exc: RelayError) -> Dropped:
    return Dropped(exc.reason, exc.detail)
