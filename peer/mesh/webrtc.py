"""The WebRTC adapter: owns aiortc peer connections, one `PeerLink` per pair of room members.

A `PeerLink` is one attempt at a connection with one peer: an `RTCPeerConnection` and its single
data channel "msxsync". It knows nothing of the sync protocol; it reports open / message /
drained / closed to a `LinkListener` (the mesh) and sends the bytes it is given.

Choices, and why:
- **Who offers**: the member with the smaller key (bytes order). Both ends compute the same
  answer from the roster, so two peers never both offer (no glare to resolve).
- **One reliable, ordered channel**. The merge would tolerate reordering, but the replica treats
  a sequence gap as loss (it asks for full state) and the identity binding must precede sync
  messages on the wire; with an unordered channel every reordering would look like loss and
  trigger needless resyncs. On a LAN or loopback, head-of-line blocking costs nothing visible.
- **No ICE servers by default** (`RTCConfiguration(iceServers=[])`): with `None` aiortc falls back
  to a public STUN server, which stalls gathering for ~5 s without internet. STUN and TURN are
  options (`IceOptions`).
- **Host addresses**: aioice never offers loopback candidates (RFC 8445), so peers on a machine
  whose only usable interface is loopback cannot connect. `IceOptions.host_addresses` names the
  addresses to offer *instead of* the machine's interfaces (e.g. ``("127.0.0.1",)`` for tests or
  several peers on one machine). It is applied only while this adapter gathers candidates, through
  a context variable read by a wrapper around `aioice.ice.get_host_addresses` (aioice looks that
  function up at gather time); connections made without the option see aioice's own answer.
- **A TURN relay never pairs with a peer's private host address** (issue 13). aiortc offers host
  candidates too, so aioice pairs our relay candidate with the peer's 10.x / 192.168.x host
  candidates and asks the TURN server to relay a check there. A public TURN server cannot reach a
  private address of another network; where it has no route (or an upstream router answers with
  ICMP unreachable) the send fails, and coturn 4.6 then closes the whole allocation ("closed (2nd
  stage), reason: general"): the relay-to-relay check that would have worked dies with it, and
  every redial repeats this. Plain aioice with `TransportPolicy.RELAY` never forms such pairs,
  which is why it connected. So while this adapter's connections pair candidates, a relay
  candidate skips remote host candidates with private addresses (a wrapper around aioice's
  `Candidate.can_pair_with`, applied through the same context variable mechanism as below);
  host-to-host pairs on a LAN are untouched.
- **Backpressure**: aiortc's `send()` never blocks, and a burst of small messages can kill the
  SCTP association. The link reports `bufferedAmount` and a "drained" event when it falls below
  `LOW_WATER`, so the mesh can pause the peer in the replica (which then coalesces) above
  `HIGH_WATER`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import enum
import ipaddress
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aioice.candidate
import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError

from peer.core.mesh.binding import role_towards
from peer.core.mesh.core import HIGH_WATER, LOW_WATER, MAX_MESSAGE
from peer.core.mesh.signals import Answer, Offer
from peer.core.room.signalling import IceServer

log = logging.getLogger(__name__)

CHANNEL_LABEL = "msxsync"

_FINGERPRINT = re.compile(r"^a=fingerprint:sha-256 ([0-9A-Fa-f:]{95})\s*$", re.MULTILINE)
_ICE_URL = re.compile(r"^(stun|turn|turns):[^\s]+$")


@dataclass(frozen=True)
class IceOptions:
    """How peers find a path to each other. The default suits a LAN: host candidates only."""

    stun: tuple[str, ...] = ()
    turn: str | None = None
    turn_user: str | None = None
    turn_password: str | None = None
    host_addresses: tuple[str, ...] | None = None  # None: the machine's interfaces (aioice)
    # The rendezvous's STUN and TURN (its welcome), after the player's own: aiortc uses only the
    # first STUN and the first TURN server it is given, so a player's --stun / --turn win.
    rendezvous_servers: tuple[IceServer, ...] = ()
    use_rendezvous: bool = True  # False: the player turned the rendezvous's servers off

    def with_rendezvous(self, servers: tuple[IceServer, ...]) -> IceOptions:
        """These options with the servers a rendezvous welcome named (unless turned off)."""
        return dataclasses.replace(self, rendezvous_servers=servers if self.use_rendezvous else ())

    def __post_init__(self) -> None:
        for url in self.stun:
            if not _ICE_URL.match(url) or not url.startswith("stun:"):
                raise ValueError(f"not a STUN URL (stun:host:port): {url!r}")
        if self.turn is not None and (not _ICE_URL.match(self.turn) or self.turn[:4] != "turn"):
            raise ValueError(f"not a TURN URL (turn:host:port): {self.turn!r}")
        if self.host_addresses is not None and not self.host_addresses:
            raise ValueError("host_addresses needs at least one address (or None)")

    def configuration(self) -> RTCConfiguration:
        servers = [RTCIceServer(urls=list(self.stun))] if self.stun else []
        if self.turn is not None:
            servers.append(
                RTCIceServer(urls=self.turn, username=self.turn_user, credential=self.turn_password)
            )
        for server in self.rendezvous_servers:
            servers.append(
                RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
            )
        return RTCConfiguration(iceServers=servers)


# ---- host-address override ------------------------------------------------------------------

_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "msxsync_host_addresses", default=None
)
_aioice_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _host_addresses.get()
    if chosen is None:
        return _aioice_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]


@contextlib.contextmanager
def offering_host_addresses(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Within this block (and tasks it starts), ICE gathering offers exactly `addresses`, and a
    relay candidate does not pair with a private host address (see the module docstring)."""
    aioice.candidate.Candidate.can_pair_with = _can_pair_with  # type: ignore[method-assign]
    aioice.ice.server_reflexive_candidate = _padded_server_reflexive_candidate
    pairing = _relay_rule.set(True)
    if addresses is None:
        try:
            yield
        finally:
            _relay_rule.reset(pairing)
        return
    aioice.ice.get_host_addresses = _get_host_addresses  # idempotent; see the module docstring
    token = _host_addresses.set(addresses)
    try:
        yield
    finally:
        _host_addresses.reset(token)
        _relay_rule.reset(pairing)


# ---- relay pairing ---------------------------------------------------------------------------

_relay_rule: contextvars.ContextVar[bool] = contextvars.ContextVar("msxsync_relay_rule", default=False)
_aioice_can_pair_with = aioice.candidate.Candidate.can_pair_with


def relay_can_reach(local_type: str, remote_type: str, remote_host: str) -> bool:
    """False for a relay candidate and a peer's host candidate on a private address: a TURN
    server cannot reach it, and coturn drops the whole allocation when it tries."""
    if local_type != "relay" or remote_type != "host":
        return True
    try:
        return not ipaddress.ip_address(remote_host.split("%")[0]).is_private
    except ValueError:  # an mDNS name: aioice already keeps relays away from those
        return True


# ---- STUN requests large enough to be answered --------------------------------------------------

# A STUN server that never amplifies (the rendezvous's: `rendezvous.stun`) answers only requests
# at least as large as its answer (32 bytes for IPv4, 44 for IPv6); aioice sends bare 20-byte
# Binding requests, so ours carry a SOFTWARE attribute that makes them 48 bytes.
STUN_SOFTWARE = "msxsync (padded to answer)"
_aioice_server_reflexive_candidate = aioice.ice.server_reflexive_candidate


class _PaddingProtocol:
    """The one protocol call `server_reflexive_candidate` makes, with SOFTWARE added."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.local_candidate = inner.local_candidate

    async def request(self, request: Any, addr: tuple[str, int], **kwargs: Any) -> Any:
        request.attributes["SOFTWARE"] = STUN_SOFTWARE
        return await self.inner.request(request, addr, **kwargs)


async def _padded_server_reflexive_candidate(protocol: Any, stun_server: tuple[str, int]) -> Any:
    if _relay_rule.get():
        protocol = _PaddingProtocol(protocol)
    return await _aioice_server_reflexive_candidate(protocol, stun_server)


def _can_pair_with(self: aioice.candidate.Candidate, other: aioice.candidate.Candidate) -> bool:
    if _relay_rule.get() and not relay_can_reach(self.type, other.type, other.host):
        return False
    return _aioice_can_pair_with(self, other)


# ---- links ----------------------------------------------------------------------------------


__all__ = ["HIGH_WATER", "LOW_WATER", "MAX_MESSAGE", "role_towards"]  # (from the core, for the tests)


# What aiortc raises while applying a session description a peer sent us: a fuzz of mutated
# offers (400 cases) produced AssertionError, ValueError, AttributeError, KeyError and TypeError
# from its SDP parser, besides its own errors. Such a step only ever drops that one link. Only the
# steps that apply a peer's description are guarded so: an error in our own offer or close is a
# bug and ends the mesh's TaskGroup, not a warning and a redial.
_SDP_ERRORS = (
    AssertionError,
    AttributeError,
    IndexError,
    InvalidAccessError,
    InvalidStateError,
    KeyError,
    OSError,
    TypeError,
    ValueError,
)


class LinkListener(Protocol):
    """What a link reports to; every call is made from the event loop, never concurrently."""

    def link_open(self, link: PeerLink) -> None: ...
    def link_message(self, link: PeerLink, data: bytes) -> None: ...
    def link_drained(self, link: PeerLink) -> None: ...
    def link_closed(self, link: PeerLink, reason: str) -> None: ...


class SignalSender(Protocol):
    def send_signal(self, to: bytes, data: dict[str, Any]) -> None: ...


class LinkState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


def sha256_fingerprint(sdp: str) -> str:
    """The SHA-256 DTLS fingerprint in an SDP, as "sha-256 AB:CD:..." (upper-case hex)."""
    match = _FINGERPRINT.search(sdp)
    if match is None:
        raise ValueError("the session description has no SHA-256 DTLS fingerprint")
    return "sha-256 " + match.group(1).upper()


class PeerLink:
    """One connection attempt with one peer. `link_id` tells its signals from older attempts'."""

    def __init__(
        self,
        *,
        local_key: bytes,
        peer: bytes,
        link_id: int,
        ice: IceOptions,
        listener: LinkListener,
        signals: SignalSender,
        low_water: int = LOW_WATER,
    ) -> None:
        self.peer = peer
        self._low_water = low_water
        self.link_id = link_id
        self.role = role_towards(local_key, peer)
        self.state = LinkState.NEW
        self._ice = ice
        self._listener = listener
        self._signals = signals
        self._pc = RTCPeerConnection(ice.configuration())
        self._channel: RTCDataChannel | None = None
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._pc.on("datachannel", self._on_datachannel)

    # ---- signalling ------------------------------------------------------------------------

    async def offer(self) -> None:
        """Offerer: create the channel and send the offer (gathering takes a few ms on a LAN).
        Nothing from the peer is parsed here, so an error is a bug (it ends the mesh); only a
        link closed meanwhile (superseded, the peer left) is routine."""
        self.state = LinkState.CONNECTING
        with contextlib.suppress(InvalidStateError):
            self._adopt(self._pc.createDataChannel(CHANNEL_LABEL, ordered=True))
            with offering_host_addresses(self._ice.host_addresses):
                await self._pc.setLocalDescription(await self._pc.createOffer())
            self._send_description()

    async def answer(self, sdp: str) -> None:
        """Answerer: take the peer's offer and send our answer."""
        self.state = LinkState.CONNECTING
        with self._peer_description(), offering_host_addresses(self._ice.host_addresses):
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await self._pc.setLocalDescription(await self._pc.createAnswer())
            self._send_description()

    async def accept_answer(self, sdp: str) -> None:
        # (ICE starts, and pairs candidates, here)
        with self._peer_description(), offering_host_addresses(self._ice.host_addresses):
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    @contextlib.contextmanager
    def _peer_description(self) -> Iterator[None]:
        """Applying a description the peer sent: what aiortc raises drops only this link."""
        try:
            yield
        except _SDP_ERRORS as exc:
            log.warning("link %d with %s failed: %s", self.link_id, self.peer.hex()[:8], exc)
            self._closed(f"signalling failed: {exc}")

    def _send_description(self) -> None:
        description = self._pc.localDescription
        kind = Offer if description.type == "offer" else Answer
        self._signals.send_signal(self.peer, kind(self.link_id, description.sdp).to_wire())

    # ---- the channel -----------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            log.warning("peer %s opened an unexpected channel %r", self.peer.hex()[:8], channel.label)
            channel.close()
            return
        self._adopt(channel)
        if channel.readyState == "open":
            self._on_open()

    def _adopt(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.bufferedAmountLowThreshold = self._low_water
        channel.on("open", self._on_open)
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", lambda: self._listener.link_drained(self))
        channel.on("close", lambda: self._closed("data channel closed"))

    def _on_open(self) -> None:
        if self.state is LinkState.CONNECTING:
            self.state = LinkState.OPEN
            self._listener.link_open(self)

    def _on_message(self, data: bytes | str) -> None:
        if self.state is LinkState.CONNECTING and self._channel is not None:
            self._on_open()  # in case a message ever overtakes the open event
        if self.state is not LinkState.OPEN:
            return
        if isinstance(data, str):  # the protocol is binary; text is garbage from a peer
            data = data.encode("utf-8", "replace")
        self._listener.link_message(self, data)

    def _on_connection_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._closed(f"connection {self._pc.connectionState}")

    def _closed(self, reason: str) -> None:
        if self.state is LinkState.CLOSED:
            return
        self.state = LinkState.CLOSED
        self._listener.link_closed(self, reason)

    # ---- for the mesh ----------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue one message; False when the channel is not open (the caller resyncs later)."""
        channel = self._channel
        if self.state is not LinkState.OPEN or channel is None or channel.readyState != "open":
            return False
        channel.send(data)
        return True

    @property
    def buffered_amount(self) -> int:
        return 0 if self._channel is None else self._channel.bufferedAmount

    def fingerprints(self) -> tuple[str, str]:
        """(ours, theirs) as DTLS checks them: from the local and remote session descriptions."""
        local, remote = self._pc.localDescription, self._pc.remoteDescription
        if local is None or remote is None:
            raise ValueError("the link has not exchanged session descriptions")
        return sha256_fingerprint(local.sdp), sha256_fingerprint(remote.sdp)

    def candidate_types(self) -> tuple[str, str] | None:
        """The ICE candidate types (local, remote) of the pair in use, None before one is chosen.

        aiortc does not expose the nominated pair; it lives in aioice's connection, reached
        through private attributes: any change there gives None, never an error."""
        try:
            connection = self._pc.sctp.transport.transport._connection  # type: ignore[union-attr]
            pair = connection._nominated.get(1)
            return (pair.local_candidate.type, pair.remote_candidate.type) if pair else None
        except AttributeError:
            return None

    async def close(self) -> None:
        """Close the connection; reports `link_closed` if it was not closed already."""
        self._closed("closed locally")
        await self._pc.close()


class WebRTCLinks:
    """The mesh's link factory in the program: aiortc links with the current ICE options."""

    def __init__(
        self, *, local_key: bytes, signals: SignalSender, ice: IceOptions, low_water: int = LOW_WATER
    ):
        self.local_key = local_key
        self.ice = ice
        self._signals = signals
        self._low_water = low_water

    def open(self, peer: bytes, link_id: int, listener: LinkListener) -> PeerLink:
        return PeerLink(
            local_key=self.local_key,
            peer=peer,
            link_id=link_id,
            ice=self.ice,
            listener=listener,
            signals=self._signals,
            low_water=self._low_water,
        )

    def set_ice(self, ice: IceOptions) -> None:
        """ICE options for the links opened from now on (fresh TURN credentials after a reconnect)."""
        self.ice = ice
