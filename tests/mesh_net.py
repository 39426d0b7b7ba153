"""Several `MeshCore`s wired by hand, in memory: h11's `ConnectionPair` and aioquic's tests, for the mesh.

Everything the cores send is held in flight until the test (or Hypothesis) delivers it: signals
through a rendezvous the test controls (`rewrite` may alter or drop them), relay frames, and each
link's messages (in order per link and direction, as on a reliable ordered data channel). Links
are simulated endpoints: a session description names its endpoint's fingerprint, so a description
the "rendezvous" swapped gives the binding mismatching fingerprints, as DTLS would. Time is a
number the test moves (`advance`, `run`); every timer fires from it. Every message goes through the
real codec, binding and replica.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from games.definition import Region
from peer.core.mesh.core import (
    AcceptAnswer,
    AnswerOffer,
    CloseLink,
    DialLink,
    Emit,
    Instant,
    MeshCore,
    Send,
    SendRelay,
    SendSignal,
)
from peer.core.mesh.signals import Answer, Offer
from peer.core.sync.replica import Event, Replica

REGIONS = (Region(0xC000, 0xC0FF),)
ROOM = "net-room"
WALL = 1_800_000_000.0  # the time of day at `now` 0
Rewrite = Callable[[bytes, bytes, dict[str, Any]], dict[str, Any] | None]


def signing_key(number: int) -> SigningKey:
    return SigningKey(hashlib.sha256(b"mesh-net %d" % number).digest())


@dataclass
class Endpoint:
    """One side of a simulated link."""

    owner: bytes
    peer: bytes
    link_id: int
    fingerprint: str
    remote_fingerprint: str | None = None
    open: bool = False


@dataclass
class NetNode:
    core: MeshCore
    events: list[Event] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return self.core.key

    def digest(self) -> bytes:
        return self.core.replica.state.digest()

    def read(self, address: int, size: int = 1) -> bytes:
        return self.core.replica.state.read(address, size)


class MeshNet:
    """`count` cores in one room (or `keys`), all listed in each other's roster once `list_all()`."""

    def __init__(
        self,
        count: int,
        *,
        room_keys: Iterable[bytes | None] | None = None,
        relay: bool = True,
        water_marks: tuple[int, int] = (32 * 1024, 256 * 1024),
    ) -> None:
        self.now = 0.0
        self.wall_step = 0.0  # the time of day is WALL + now + this: a test may step it
        self.rewrite: Rewrite | None = None  # what the rendezvous does to signals
        self.signals_blocked = False  # signals between peers lost (a direct path that never works)
        self.relay_up = relay
        self.stalled: set[bytes] = set()  # nodes whose process is stopped (see `stall`)
        self._held_signals: list[tuple[bytes, bytes, dict[str, Any]]] = []
        self._held_frames: list[tuple[bytes, bytes, bytes]] = []
        self.nodes: list[NetNode] = []
        keys = list(room_keys) if room_keys is not None else [None] * count
        for number in range(count):
            key = signing_key(number)
            replica = Replica(signing_key=key, room=ROOM, regions=REGIONS, session=1000 + number)
            nonces = _Nonces(number)
            core = MeshCore(
                replica=replica, nonces=nonces, now=0.0, room_key=keys[number], water_marks=water_marks
            )
            self.nodes.append(NetNode(core))
        self._by_key = {node.key: node for node in self.nodes}
        self.endpoints: dict[tuple[bytes, bytes, int], Endpoint] = {}
        self.channels: dict[tuple[bytes, bytes, int], deque[bytes]] = {}  # per link and direction
        self.signals: deque[tuple[bytes, bytes, dict[str, Any]]] = deque()
        self.frames: deque[tuple[bytes, bytes, bytes]] = deque()  # relay frames
        self.high_water = water_marks[1]
        self.sent: dict[bytes, int] = {}  # link messages handed to the net, by sender

    def at(self) -> Instant:
        return Instant(self.now, WALL + self.now + self.wall_step)

    def node(self, key: bytes) -> NetNode:
        return self._by_key[key]

    # ---- inputs ----------------------------------------------------------------------------

    def list_all(self, nodes: Iterable[NetNode] | None = None) -> None:
        """The rendezvous lists these nodes (all by default) to each of them."""
        listed = list(nodes) if nodes is not None else self.nodes
        for node in listed:
            node.core.relay_reachable(self.relay_up)
            node.core.set_roster([n.key for n in listed], self.at())
            self.carry_out(node)

    def write(self, node: NetNode, address: int, data: bytes, written_at: float | None = None) -> None:
        """NODE's game wrote DATA (at the time of day WRITTEN_AT; default: now)."""
        node.core.local_changes([(address, data)], self.at(), written_at)
        self.carry_out(node)

    def stall(self, node: NetNode) -> None:
        """NODE's process stops (SIGSTOP): no timer fires, nothing reaches it, it sends nothing."""
        self.stalled.add(node.key)

    def resume(self, node: NetNode) -> None:
        """NODE runs again; what reached its sockets meanwhile is there to read."""
        self.stalled.discard(node.key)
        self.signals.extendleft(reversed(self._held_signals))
        self.frames.extendleft(reversed(self._held_frames))
        self._held_signals.clear()
        self._held_frames.clear()

    # ---- time ------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, firing every timer on the way (nothing is delivered)."""
        end = self.now + seconds
        while True:
            timers = (n.core.get_timer() for n in self.nodes if n.key not in self.stalled)
            due = min((t for t in timers if t is not None), default=None)
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            self._fire_timers()
        self.now = end
        self._fire_timers()

    def _fire_timers(self) -> None:
        for node in self.nodes:
            if node.key in self.stalled:
                continue
            timer = node.core.get_timer()
            if timer is not None and timer <= self.now:
                node.core.relay_reachable(self.relay_up)
                node.core.handle_timer(self.at())
                self.carry_out(node)

    def run(self, seconds: float, step: float = 0.01) -> None:
        """A fair network: everything in flight is delivered every `step`, for `seconds`."""
        end = self.now + seconds
        while self.now < end:
            self.deliver_all()
            self.advance(min(step, end - self.now))
        self.deliver_all()

    # ---- delivery --------------------------------------------------------------------------

    def deliver_all(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.deliver_one():
                return
        raise AssertionError("the mesh never went quiet")

    def deliver_one(self, choice: int = 0) -> bool:
        """Deliver one thing in flight (`choice` picks which queue); False when nothing is."""
        queues: list[Callable[[], None]] = []
        if self.signals:
            queues.append(self._deliver_signal)
        if self.frames:
            queues.append(self._deliver_frame)
        for channel, messages in self.channels.items():
            if messages and channel[1] not in self.stalled:
                queues.append(lambda channel=channel: self._deliver_message(channel))  # type: ignore[misc]
        if not queues:
            return False
        queues[choice % len(queues)]()
        return True

    def _deliver_signal(self) -> None:
        sender, to, data = self.signals.popleft()
        if to in self.stalled:
            self._held_signals.append((sender, to, data))
            return
        if self.signals_blocked:
            return
        if self.rewrite is not None:
            rewritten = self.rewrite(sender, to, data)
            if rewritten is None:
                return
            data = rewritten
        target = self._by_key.get(to)
        if target is not None:
            target.core.handle_signal(sender, data, self.at())
            self.carry_out(target)

    def _deliver_frame(self) -> None:
        sender, to, frame = self.frames.popleft()
        if to in self.stalled:
            self._held_frames.append((sender, to, frame))
            return
        target = self._by_key.get(to)
        if target is not None and self.relay_up:
            target.core.handle_relay(sender, frame, self.at())
            self.carry_out(target)

    def _deliver_message(self, channel: tuple[bytes, bytes, int]) -> None:
        sender, to, link_id = channel
        data = self.channels[channel].popleft()
        receiver = self.endpoints.get((to, sender, link_id))
        if receiver is None or not receiver.open:
            return
        target = self._by_key[to]
        target.core.link_message(sender, link_id, data, self.at())
        self.carry_out(target)
        # The sender's buffer emptied below its low water mark: "drained".
        still = self.channels.get(channel)  # (gone if the link was closed meanwhile)
        if still is not None and sum(map(len, still)) < self.nodes[0].core.low_water:
            owner = self._by_key[sender]
            owner.core.link_drained(to, link_id, self.at())
            self.carry_out(owner)

    def cut(self, a: NetNode, b: NetNode) -> None:
        """The direct link between A and B breaks: both ends hear it closed."""
        pairs = {(a.key, b.key), (b.key, a.key)}
        broken = [(k, e) for k, e in self.endpoints.items() if (e.owner, e.peer) in pairs]
        for key, _ in broken:
            del self.endpoints[key]
            self.channels.pop(key, None)
        for _, endpoint in broken:  # (what the cores do next, e.g. answer a held offer, is new)
            if endpoint.open:
                owner = self._by_key[endpoint.owner]
                owner.core.link_closed(endpoint.peer, endpoint.link_id, "cut", self.at())
                self.carry_out(owner)

    # ---- what the cores decided ------------------------------------------------------------

    def carry_out(self, node: NetNode) -> None:
        while actions := node.core.actions():
            for action in actions:
                self._do(node, action)

    def _do(self, node: NetNode, action: object) -> None:
        me = node.key
        match action:
            case DialLink(peer, link_id):
                endpoint = self._endpoint(me, peer, link_id)
                self.signals.append((me, peer, Offer(link_id, endpoint.fingerprint).to_wire()))
            case AnswerOffer(peer, link_id, sdp):
                endpoint = self._endpoint(me, peer, link_id)
                endpoint.remote_fingerprint = sdp
                self.signals.append((me, peer, Answer(link_id, endpoint.fingerprint).to_wire()))
            case AcceptAnswer(peer, link_id, sdp):
                offered = self.endpoints.get((me, peer, link_id))
                if offered is not None:
                    offered.remote_fingerprint = sdp
                    self._connect(offered)
            case CloseLink(peer, link_id):
                self.endpoints.pop((me, peer, link_id), None)
                self.channels.pop((me, peer, link_id), None)
                other = self.endpoints.get((peer, me, link_id))
                if other is not None and other.open:
                    other.open = False
                    target = self._by_key[peer]
                    target.core.link_closed(me, link_id, "closed by the peer", self.at())
                    self.carry_out(target)
            case Send(peer, link_id, data):
                self._send(node, peer, link_id, data)
            case SendSignal(peer, data):
                self.signals.append((me, peer, data))
            case SendRelay(peer, frame):
                if self.relay_up:
                    self.frames.append((me, peer, frame))
                else:
                    node.core.link_unsendable(peer)
            case Emit(event):
                node.events.append(event)

    def _endpoint(self, owner: bytes, peer: bytes, link_id: int) -> Endpoint:
        fingerprint = "sha-256 " + hashlib.sha256(owner + peer + b"%d" % link_id).hexdigest()
        endpoint = self.endpoints[(owner, peer, link_id)] = Endpoint(owner, peer, link_id, fingerprint)
        self.channels[(owner, peer, link_id)] = deque()
        return endpoint

    def _connect(self, offerer: Endpoint) -> None:
        """The offerer applied an answer: if the answerer's endpoint exists, the channel opens."""
        answerer = self.endpoints.get((offerer.peer, offerer.owner, offerer.link_id))
        if answerer is None or answerer.open:
            return
        for endpoint in (offerer, answerer):
            endpoint.open = True
        for endpoint in (answerer, offerer):
            remote = endpoint.remote_fingerprint or "none"
            core = self._by_key[endpoint.owner].core
            core.link_open(endpoint.peer, endpoint.link_id, (endpoint.fingerprint, remote), self.at())
            self.carry_out(self._by_key[endpoint.owner])

    def _send(self, node: NetNode, peer: bytes, link_id: int, data: bytes) -> None:
        endpoint = self.endpoints.get((node.key, peer, link_id))
        if endpoint is None or not endpoint.open:
            node.core.link_unsendable(peer)
            return
        channel = self.channels[(node.key, peer, link_id)]
        channel.append(data)
        self.sent[node.key] = self.sent.get(node.key, 0) + 1
        node.core.link_buffered(peer, link_id, sum(map(len, channel)), self.at())


class _Nonces:
    """Deterministic "random" bytes per node, so a failing example replays the same."""

    def __init__(self, seed: int) -> None:
        self._counter = 0
        self._seed = seed

    def __call__(self, size: int) -> bytes:
        self._counter += 1
        return hashlib.sha256(b"%d %d" % (self._seed, self._counter)).digest()[:size]
