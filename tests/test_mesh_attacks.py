"""Peers that lie: each attack is refused and counted, and nobody's shared bytes change.

Real aiortc on loopback; signalling is relayed in process so a test can play a lying rendezvous.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from nacl.signing import SigningKey

from peer.core.mesh.binding import Role, derive_room_key
from peer.core.mesh.events import PeerRefused
from peer.core.sync import codec
from peer.core.sync.clock import HOLD_MS, MAX_AHEAD_MS, wall_ms
from peer.mesh.webrtc import offering_host_addresses, role_towards
from tests.mesh_support import (
    LOOPBACK,
    REGIONS,
    ROOM,
    LocalSignals,
    Node,
    make_node,
    running,
    wait_all,
)

ADDRESS = REGIONS[0].start


def refusals(node: Node, peer: bytes) -> dict[str, int]:
    return dict(node.mesh.statistics()[peer].refusals)


async def wait_refused(node: Node, peer: bytes, reason: str) -> None:
    async with asyncio.timeout(10):
        await node.mesh.wait_until(lambda: refusals(node, peer).get(reason, 0) >= 1)


async def test_key_not_in_roster_is_refused() -> None:
    signals = LocalSignals()
    a = make_node(signals)
    listed = SigningKey.generate()  # the key the rendezvous vouches for
    hidden = SigningKey.generate()  # the key the impostor really signs with
    while role_towards(a.key, bytes(listed.verify_key)) is not role_towards(a.key, bytes(hidden.verify_key)):
        hidden = SigningKey.generate()  # both ends must agree on who offers
    x = make_node(signals, signing_key=listed, mesh_key=hidden)
    before = a.digest()
    async with running(a, x):
        a.mesh.set_roster([a.key, x.key])
        x.mesh.set_roster([a.key, bytes(hidden.verify_key)])
        await wait_refused(a, x.key, "unknown-key")
        assert not a.mesh.admitted()
    assert a.digest() == before
    assert any(isinstance(e, PeerRefused) and e.reason == "unknown-key" for e in a.events)


async def test_wrong_room_password_is_refused_both_ways() -> None:
    signals = LocalSignals()
    a = make_node(signals, room_key=derive_room_key("open sesame", ROOM))
    b = make_node(signals, room_key=derive_room_key("open sesam", ROOM))
    async with running(a, b):
        for node in (a, b):
            node.mesh.set_roster([a.key, b.key])
        await wait_refused(a, b.key, "password-mismatch")
        await wait_refused(b, a.key, "password-mismatch")
        assert not a.mesh.admitted() and not b.mesh.admitted()


class FingerprintSwapper:
    """A lying rendezvous in the middle: it answers the offerer and offers to the answerer
    with DTLS certificates of its own, then copies data channel messages across."""

    def __init__(self, signals: LocalSignals, offerer: Node, answerer: Node) -> None:
        self.signals, self.offerer, self.answerer = signals, offerer, answerer
        self.to_offerer = RTCPeerConnection(LOOPBACK.configuration())
        self.to_answerer = RTCPeerConnection(LOOPBACK.configuration())
        self.channels: dict[str, RTCDataChannel] = {}
        self.pending: dict[str, list[bytes]] = {"offerer": [], "answerer": []}
        self.steps: list[asyncio.Task[None]] = []

    def rewrite(self, sender: bytes, to: bytes, data: dict[str, Any]) -> dict[str, Any] | None:
        if sender == self.offerer.key and data.get("kind") == "offer":
            self.steps.append(asyncio.ensure_future(self._intercept_offer(data)))
            return None
        if sender == self.answerer.key and data.get("kind") == "answer":
            answer = RTCSessionDescription(sdp=data["sdp"], type="answer")
            self.steps.append(asyncio.ensure_future(self.to_answerer.setRemoteDescription(answer)))
            return None
        return data

    async def _intercept_offer(self, data: dict[str, Any]) -> None:
        self.to_offerer.on("datachannel", lambda ch: self._adopt("offerer", ch))
        offer = RTCSessionDescription(sdp=data["sdp"], type="offer")
        await self.to_offerer.setRemoteDescription(offer)
        self._adopt("answerer", self.to_answerer.createDataChannel("msxsync"))
        with offering_host_addresses(LOOPBACK.host_addresses):
            await self.to_offerer.setLocalDescription(await self.to_offerer.createAnswer())
            await self.to_answerer.setLocalDescription(await self.to_answerer.createOffer())
        link = data["link"]
        answer = {"kind": "answer", "link": link, "sdp": self.to_offerer.localDescription.sdp}
        self.offerer.mesh.handle_signal(self.answerer.key, answer)
        offer2 = {"kind": "offer", "link": link, "sdp": self.to_answerer.localDescription.sdp}
        self.answerer.mesh.handle_signal(self.offerer.key, offer2)

    def _adopt(self, side: str, channel: RTCDataChannel) -> None:
        other = "answerer" if side == "offerer" else "offerer"
        self.channels[side] = channel
        channel.on("message", lambda data: self._forward(other, data))
        channel.on("open", lambda: self._drain(side))
        self._drain(side)

    def _forward(self, side: str, data: bytes) -> None:
        self.pending[side].append(data)
        self._drain(side)

    def _drain(self, side: str) -> None:
        channel = self.channels.get(side)
        if channel is not None and channel.readyState == "open":
            for data in self.pending[side]:
                channel.send(data)
            self.pending[side].clear()

    async def close(self) -> None:
        for step in self.steps:
            await step
        await self.to_offerer.close()
        await self.to_answerer.close()


async def test_swapped_fingerprints_are_refused() -> None:
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    offerer, answerer = (a, b) if role_towards(a.key, b.key) is Role.OFFERER else (b, a)
    relay = FingerprintSwapper(signals, offerer, answerer)
    signals.rewrite = relay.rewrite
    try:
        async with running(a, b):
            for node in (a, b):
                node.mesh.set_roster([a.key, b.key])
            # Each end sees DTLS fingerprints the other did not, so each refuses the other.
            await wait_refused(a, b.key, "fingerprint-mismatch")
            await wait_refused(b, a.key, "fingerprint-mismatch")
            assert not a.mesh.admitted() and not b.mesh.admitted()
    finally:
        await relay.close()


def signed_write(node: Node, lamport: int, runs: tuple[tuple[int, bytes], ...]) -> codec.WriteBatch:
    """A write batch as NODE's own replica would sign it."""
    batch = codec.sign_batch(
        node.signing_key, room=ROOM, session=node.replica.session, lamport=lamport, runs=runs, totals=()
    )
    return codec.WriteBatch.of(batch)


def forged(body: codec.Body, key: SigningKey, session: int, seq: int, room: str = ROOM) -> bytes:
    return codec.encode(body, signing_key=key, room=room, session=session, seq=seq)


async def test_forged_replayed_and_far_future_batches_are_refused() -> None:
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    async with running(a, b):
        for node in (a, b):
            node.mesh.set_roster([a.key, b.key])
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=10)
        before = a.digest()
        link = b.mesh.link(a.key)
        assert link is not None
        session = b.replica.session
        sent = b.replica.statistics().peers[a.key].messages_sent
        seq = sent + 100  # ahead of B's own messages, within the replica's window
        write = signed_write(b, wall_ms(time.time()), ((ADDRESS, b"\x99"),))
        far = signed_write(b, wall_ms(time.time()) + MAX_AHEAD_MS + HOLD_MS + 60_000, ((ADDRESS, b"\x66"),))
        tampered = bytearray(forged(write, b.signing_key, session, seq))
        tampered[codec.HEADER_SIZE + 8] ^= 1  # the written byte, under B's signature
        far_message = forged(far, b.signing_key, session, seq)
        attacks = [
            bytes(tampered),  # bad signature
            forged(write, SigningKey.generate(), session, seq),  # a signer not in the room
            forged(write, b.signing_key, session, seq, room="another-room"),  # other room
            far_message,  # far-future Lamport value
            forged(write, b.signing_key, session, seq),  # same seq, other content: forgery
            far_message,  # replayed
        ]
        for data in attacks:
            link.send(data)
        expected = {
            "bad_signature": 2,
            "unknown_sender": 1,
            "lamport_ahead": 1,
            "forgery": 1,
            "duplicate": 1,
        }

        def counted() -> dict[str, int]:
            stats = a.replica.statistics().peers[b.key]
            return {reason: stats.rejections[reason] for reason in expected}

        async with asyncio.timeout(10):
            await a.mesh.wait_until(lambda: counted() == expected)
        assert a.digest() == before
        assert a.mesh.admitted() == {b.key}  # rejected messages are counted, not fatal


async def test_flood_is_throttled_then_cut_while_others_stay_fast() -> None:
    signals = LocalSignals()
    a, flooder, c = make_node(signals), make_node(signals), make_node(signals)
    nodes = [a, flooder, c]
    async with running(*nodes):
        for node in nodes:
            node.mesh.set_roster([n.key for n in nodes])
        await wait_all(nodes, lambda n: len(n.mesh.admitted()) == 2, within=15)
        link = flooder.mesh.link(a.key)
        assert link is not None
        session = flooder.replica.session
        first = flooder.replica.statistics().peers[a.key].messages_sent + 1

        def cut() -> bool:
            return a.mesh.statistics()[flooder.key].cuts == 1

        async def flood() -> None:
            # Far more than one batch per frame, straight onto the channel.
            for seq in range(first, first + 3000, 50):
                if cut() or link.buffered_amount > 1_000_000:
                    return
                for n in range(seq, seq + 50):
                    batch = signed_write(flooder, wall_ms(time.time()), ((ADDRESS + 1, bytes([n % 256])),))
                    link.send(forged(batch, flooder.signing_key, session, n))
                await asyncio.sleep(0)

        latencies = []
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(flood())
            for value in range(1, 40):
                started = time.monotonic()
                c.mesh.local_changes([(ADDRESS, bytes([value]))])
                async with asyncio.timeout(5):
                    await a.mesh.wait_until(lambda v=value: a.replica.state.read(ADDRESS) == bytes([v]))  # type: ignore[misc]
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(1 / 60)  # the next frame
        async with asyncio.timeout(10):
            await a.mesh.wait_until(cut)
        stats = a.mesh.statistics()
        sync = stats[flooder.key].sync
        assert sync is not None and sync.rejections["rate_limited"] >= 200
        assert flooder.key not in a.mesh.admitted()
        assert c.key in a.mesh.admitted()
    # A generous bound: the honest peer's writes kept arriving while A shed the flood.
    assert max(latencies) < 1.0, latencies


async def test_a_member_cannot_change_other_writers_bytes_and_vouches_for_its_inventions() -> None:
    """F4: a member passes on A's signed write with its byte changed (0x05 to 0xFF, A's stamp and
    signature kept); B refuses it, A's byte stands. Its write by a key outside the room is taken
    on its word (issue 30, F5: it might be a past player's), one of the few it is allowed."""
    signals = LocalSignals()
    a, b, member = make_node(signals), make_node(signals), make_node(signals)
    nodes = [a, b, member]
    async with running(*nodes):
        for node in nodes:
            node.mesh.set_roster([n.key for n in nodes])
        await wait_all(nodes, lambda n: len(n.mesh.admitted()) == 2, within=15)
        a.mesh.local_changes([(ADDRESS, b"\x05")])
        await wait_all(nodes, lambda n: n.replica.state.read(ADDRESS) == b"\x05", within=10)
        (original,) = member.replica.state.batches_backing([ADDRESS])
        assert original.author == a.key
        changed = bytearray(original.raw)
        changed[-65] = 0xFF  # the written byte, just before A's signature
        outsider = codec.sign_batch(
            SigningKey.generate(),
            room=ROOM,
            session=1,
            lamport=original.lamport + 1,
            runs=((ADDRESS + 1, b"\xff"),),
            totals=(),
        )
        patch = codec.StatePatch(True, 0, 1, (bytes(changed), outsider.raw))
        link = member.mesh.link(b.key)
        assert link is not None
        seq = member.replica.statistics().peers[b.key].messages_sent + 100
        link.send(forged(patch, member.signing_key, member.replica.session, seq))

        def refused() -> dict[str, int]:
            stats = b.replica.statistics().peers[member.key]
            return {r: stats.rejections[r] for r in ("bad_batch_signature", "unknown_author")}

        async with asyncio.timeout(10):
            await b.mesh.wait_until(lambda: refused() == {"bad_batch_signature": 1, "unknown_author": 0})
        assert b.replica.state.read(ADDRESS) == a.replica.state.read(ADDRESS) == b"\x05"
        assert b.replica.authors.vouched == {outsider.author: member.key}
        await wait_all([a, b], lambda n: n.replica.state.read(ADDRESS + 1) == b"\xff", within=15)
        assert b.replica.state.read(ADDRESS) == a.replica.state.read(ADDRESS) == b"\x05"


async def test_a_spoofed_offer_neither_drops_the_admitted_link_nor_bans_the_key() -> None:
    """Issue 18: an offer the rendezvous made up in B's name closed A's live link with B, and the
    failed binding that followed banned B's key for 30 s."""
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    offerer, answerer = (a, b) if role_towards(a.key, b.key) is Role.OFFERER else (b, a)
    async with running(a, b):
        for node in (a, b):
            node.mesh.set_roster([a.key, b.key])
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=10)
        liar = RTCPeerConnection(LOOPBACK.configuration())
        liar.createDataChannel("msxsync")
        with offering_host_addresses(LOOPBACK.host_addresses):
            await liar.setLocalDescription(await liar.createOffer())
        spoofed = {"kind": "offer", "link": 999, "sdp": liar.localDescription.sdp}
        answerer.mesh.handle_signal(offerer.key, spoofed)
        async with asyncio.timeout(10):
            await answerer.mesh.wait_until(lambda: answerer.mesh.statistics()[offerer.key].offers_held == 1)
        offerer.mesh.local_changes([(ADDRESS, b"\x42")])
        async with asyncio.timeout(10):
            await answerer.mesh.wait_until(lambda: answerer.replica.state.read(ADDRESS) == b"\x42")
        stats = answerer.mesh.statistics()[offerer.key]
        assert stats.links_lost == 0 and not stats.refusals
        assert answerer.mesh.admitted() == {offerer.key}
        await liar.close()
