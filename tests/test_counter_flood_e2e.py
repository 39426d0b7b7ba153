"""A member attacking counters on real aiortc links (issue 30, F3 and F4). F3: every peer keeps one
slot per writer, and a player who joins afterwards takes the room's state without a refusal.

Before: 5,320 sessions in 14 s left 10,646 slots on every peer, and a joiner rate-limited the
honest members' full states, cut both and never synced. F4: a total of -(2^63-1) is refused, and
the players' pickups still show (before: 0 coins on every peer, for good).
"""

from __future__ import annotations

import asyncio
import time

from games.definition import Merge, MergeRule, Region
from peer.core.sync import codec
from peer.core.sync.clock import wall_ms
from tests.mesh_support import ROOM, LocalSignals, make_node, running, wait_all, wait_converged

REGIONS = (Region(0xC000, 0xC0FF), Region(0xE000, 0xE003, Merge(MergeRule.ADD, 2, True)))
COINS = 0xE000
SESSIONS = 1500


async def test_a_session_flood_leaves_bounded_slots_and_a_joiner_syncs() -> None:
    signals = LocalSignals()
    a, b, member = (make_node(signals, regions=REGIONS) for _ in range(3))
    joiner = make_node(signals, regions=REGIONS)
    async with running(a, b, member, joiner):
        first = [a, b, member]
        for node in first:
            node.mesh.set_roster([n.key for n in first])
        await wait_all(first, lambda n: len(n.mesh.admitted()) == 2, within=20)
        a.mesh.local_changes([], deltas=[(COINS, 7)])
        b.mesh.local_changes([], deltas=[(COINS, 5)])
        await wait_all([a, b], lambda n: n.replica.state.counter_value(COINS) == 12, within=10)
        links = [member.mesh.link(a.key), member.mesh.link(b.key)]
        for start in range(0, SESSIONS, 50):  # about 200 a second, within its message budget
            for session in range(start, start + 50):
                batch = codec.sign_batch(
                    member.signing_key,
                    room=ROOM,
                    session=10_000 + session,
                    lamport=wall_ms(time.time()),
                    runs=(),
                    totals=((COINS, 0), (COINS + 2, 0)),
                )
                data = codec.encode(
                    codec.WriteBatch.of(batch),
                    signing_key=member.signing_key,
                    room=ROOM,
                    session=10_000 + session,
                    seq=1,
                )
                for link in links:
                    assert link is not None
                    link.send(data)
            await asyncio.sleep(0.25)
        await wait_all(
            [a, b],
            lambda n: n.replica.statistics().peers[member.key].messages_received >= SESSIONS,
            within=15,
        )
        for node in (a, b):
            slots = node.replica.state.slots
            assert [len(slots[COINS]), len(slots[COINS + 2])] == [3, 1]  # 1,500 each before
            assert len(node.replica.state.batches) <= 4
        everyone = [a, b, member, joiner]
        for node in everyone:
            node.mesh.set_roster([n.key for n in everyone])
        await wait_converged([a, b, joiner], within=30)
        assert joiner.replica.state.counter_value(COINS) == 12
        for node in (a, b):
            refused = joiner.replica.statistics().peers[node.key].rejections
            assert refused["rate_limited"] == 0, refused
        assert {a.key, b.key} <= joiner.mesh.admitted()


async def test_one_pinning_batch_is_refused_and_pickups_still_count() -> None:
    """F4 on real links: a member's total of -(2^63-1) is refused as `total_out_of_range` and
    counted against it; the honest players' next pickups show (before: 0 coins for good)."""
    signals = LocalSignals()
    a, b, member = (make_node(signals, regions=REGIONS) for _ in range(3))
    nodes = [a, b, member]
    async with running(*nodes):
        for node in nodes:
            node.mesh.set_roster([n.key for n in nodes])
        await wait_all(nodes, lambda n: len(n.mesh.admitted()) == 2, within=20)
        a.mesh.local_changes([], deltas=[(COINS, 7)])
        await wait_all([a, b], lambda n: n.replica.state.counter_value(COINS) == 7, within=10)
        pin = codec.sign_batch(
            member.signing_key,
            room=ROOM,
            session=member.replica.session,
            lamport=wall_ms(time.time()),
            runs=(),
            totals=((COINS, -(2**63 - 1)),),
        )
        sent = member.replica.statistics().peers[a.key].messages_sent
        for target, seq in ((a, sent + 50), (b, member.replica.statistics().peers[b.key].messages_sent + 50)):
            link = member.mesh.link(target.key)
            assert link is not None
            link.send(
                codec.encode(
                    codec.WriteBatch.of(pin),
                    signing_key=member.signing_key,
                    room=ROOM,
                    session=member.replica.session,
                    seq=seq,
                )
            )

        def refused(node) -> int:
            return int(node.replica.statistics().peers[member.key].rejections["total_out_of_range"])

        await wait_all([a, b], lambda n: refused(n) == 1, within=10)
        b.mesh.local_changes([], deltas=[(COINS, 2)])
        await wait_all([a, b], lambda n: n.replica.state.counter_value(COINS) == 9, within=10)
        assert {a.replica.state.total(COINS, member.key), b.replica.state.total(COINS, member.key)} == {0}
