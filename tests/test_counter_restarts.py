"""A writer's total survives its own restarts (issue 30, F3 as merged, found again by a review):
a disk that lagged the room, a message lost after the restart, two processes of one key at once,
and an upgrade from a store written before protocol 6. Real `Replica`s, `SharedState`s and
`RoomStore`s; every message through the real codec.

Before the fix: a restart whose disk lagged and whose reply from the room was lost ended at 11
where 13 was due; two live sessions of one key climbed 5, 10, 15 ... (25 after 60 s, due 5); a
pre-6 store holding another player's three sessions of 4 showed 4 (due 12) and its first save
deleted two of them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from games.definition import Merge, MergeRule, Region
from peer.core.sync import codec
from peer.core.sync.replica import Replica
from peer.core.sync.state import Layout, SharedState, SignedBatch
from peer.storage import RoomStore
from tests.sim import ROOM, START, Mesh, key, open_stored

COINS = 0xE000
COUNTER = (Region(COINS, COINS, Merge(MergeRule.ADD)),)


def count(mesh: Mesh, index: int, delta: int) -> None:
    mesh.replicas[index].local_changes([], mesh.now, wall=mesh.wall, deltas=[(COINS, delta)])
    mesh.collect()
    mesh.deliver_all()


def restart(mesh: Mesh, index: int, disk: bytes, session: int) -> Replica:
    """The peer at INDEX crashed with DISK saved (the room may hold more) and starts again."""
    for other in mesh.replicas:
        if other is not mesh.replicas[index]:
            other.remove_peer(mesh.replicas[index].key)
    mesh.in_flight.clear()
    state = SharedState.from_bytes(Layout(COUNTER), disk, open_stored())
    replica = Replica(signing_key=key(index), room=ROOM, regions=COUNTER, session=session, state=state)
    mesh.replicas[index] = replica
    return replica


def reconnect(mesh: Mesh, index: int, *, drop_replies: bool = False) -> None:
    """Link the peer at INDEX with every other; DROP_REPLIES: what they send it is lost."""
    replica = mesh.replicas[index]
    for other in mesh.replicas:
        if other is not replica:
            other.add_peer(replica.key, mesh.now)
            replica.add_peer(other.key, mesh.now)
    mesh.collect()
    if drop_replies:
        mesh.in_flight = [m for m in mesh.in_flight if m[0] == index]
    mesh.deliver_all()


def cut(mesh: Mesh, index: int) -> None:
    replica = mesh.replicas[index]
    for other in mesh.replicas:
        if other is not replica:
            other.remove_peer(replica.key)
            replica.remove_peer(other.key)
    mesh.in_flight.clear()


def values(mesh: Mesh) -> list[int]:
    return [replica.state.counter_value(COINS) for replica in mesh.replicas]


def test_a_restart_whose_disk_lagged_keeps_its_pickups_when_the_rooms_reply_is_lost():
    mesh = Mesh.create(2, COUNTER)
    count(mesh, 0, 10)
    disk = mesh.replicas[0].state.to_bytes()  # (the disk saved 10; the room then saw 12)
    count(mesh, 0, 2)
    restart(mesh, 0, disk, session=500)
    count(mesh, 0, 1)  # (picked up before its links were up)
    reconnect(mesh, 0, drop_replies=True)  # its full state reaches B; B's is lost
    assert values(mesh) == [11, 11]  # (for now: the base it had)
    cut(mesh, 0)
    mesh.advance(6.0)
    reconnect(mesh, 0)
    mesh.settle(rounds=6)
    assert mesh.converged() and values(mesh) == [13, 13]  # ([11, 11] before)


def test_a_restart_whose_disk_lagged_catches_up_whoever_brings_its_old_total():
    """Three peers: the restarted one hears the room's newer total of its own from C, not B,
    after B already took its new session's total."""
    mesh = Mesh.create(3, COUNTER)
    count(mesh, 0, 10)
    disk = mesh.replicas[0].state.to_bytes()
    count(mesh, 0, 2)
    count(mesh, 1, 5)
    restart(mesh, 0, disk, session=500)
    count(mesh, 0, 1)
    reconnect(mesh, 0, drop_replies=True)
    mesh.advance(1.0)
    mesh.settle(rounds=8)
    assert mesh.converged() and values(mesh) == [18, 18, 18]


def test_a_session_still_running_beside_its_restart_counts_nothing_twice():
    """A restart while the old process still has links (it is told `replaced` only after the
    new hello): the new session folds the old one's total; the old one publishes no more."""
    coins = (Region(COINS, COINS, Merge(MergeRule.ADD, 1, True)),)
    old = Replica(signing_key=key(0), room=ROOM, regions=coins, session=200)
    new = Replica(signing_key=key(0), room=ROOM, regions=coins, session=201)
    b = Replica(signing_key=key(1), room=ROOM, regions=coins, session=300)
    c = Replica(signing_key=key(2), room=ROOM, regions=coins, session=400)
    links = {(old, b), (new, c), (b, c)}
    route = {
        (x.key if x not in (old, new) else id(x), y.key): y for pair in links for x, y in (pair, pair[::-1])
    }
    now = START
    for x, y in links:
        x.add_peer(y.key, now)
        y.add_peer(x.key, now)

    def pump() -> None:
        for _ in range(1000):
            moved = False
            for sender in (old, new, b, c):
                sender_id = id(sender) if sender in (old, new) else sender.key
                for peer, data in sender.messages_to_send():
                    route[(sender_id, peer)].receive(sender.key, data, now, wall=now)
                    moved = True
            if not moved:
                return

    pump()
    old.local_changes([], now, wall=now, deltas=[(COINS, 3)])
    pump()
    new.local_changes([], now, wall=now, deltas=[(COINS, 2)])
    pump()
    for _ in range(60):
        now += 1
        for replica in (old, new, b, c):
            replica.handle_timer(now, wall=now)
        pump()
    assert [r.state.counter_value(COINS) for r in (old, new, b, c)] == [5, 5, 5, 5]  # (25 and 27 before)
    outcome = old.local_changes([], now, wall=now, deltas=[(COINS, 1)])
    assert outcome.totals == () and outcome.deltas == ((COINS, -1),)  # (the room's value, back)


def legacy_batches() -> list[SignedBatch]:
    """Key 0's three sessions of 4 each, as a store before protocol 6 kept them."""
    return [
        codec.sign_batch(key(0), room=ROOM, session=s, lamport=10 + s, runs=(), totals=((COINS, 4),))
        for s in range(1, 4)
    ]


def legacy_store(path: Path, layout: Layout) -> None:
    store = RoomStore(path, game="g", room=ROOM, layout=layout)
    store.write_rows([], (), legacy_batches())
    store._db.execute("DELETE FROM meta WHERE key = 'totals'")  # (as a store before protocol 6)
    store.close()


def legacy_blob(layout: Layout) -> bytes:
    batches = legacy_batches()
    blob = SharedState._LEGACY_MAGIC + layout.fingerprint + len(batches).to_bytes(4, "big")
    return blob + b"".join(len(b.raw).to_bytes(4, "big") + b.raw for b in batches)


def test_an_upgrade_keeps_another_players_old_sessions_until_it_folds_them():
    layout = Layout(COUNTER)
    state = SharedState.from_bytes(layout, legacy_blob(layout), open_stored())
    other = Replica(signing_key=key(1), room=ROOM, regions=COUNTER, session=9, state=state)
    other.handle_timer(START, wall=START)
    assert other.state.counter_value(COINS) == 12  # (4 before: only key 0's newest session)
    folded = codec.sign_batch(key(0), room=ROOM, session=4, lamport=99, runs=(), totals=((COINS, 13),))
    other.state.apply_batch(folded)  # (key 0 plays again: its new session carries the sum)
    assert other.state.counter_value(COINS) == 13 and other.state.legacy == {}


def test_an_upgraded_store_keeps_another_players_sessions_over_restarts(tmp_path):
    """The first save marks the store as protocol 6's; another player's three sessions must
    still count after it, and after a restart before that player played again."""
    path = tmp_path / "rooms.sqlite"
    layout = Layout(COUNTER)
    legacy_store(path, layout)
    for run in range(2):
        store = RoomStore(path, game="g", room=ROOM, layout=layout)
        state = store.load()
        replica = Replica(signing_key=key(1), room=ROOM, regions=COUNTER, session=9 + run, state=state)
        replica.local_changes([], START + run, wall=START + run, deltas=[(COINS, 1)])
        store.save(state, state.take_dirty())
        assert state.counter_value(COINS) == 12 + 1 + run  # (4 + 1 before)
        store.close()
        assert sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'totals'").fetchone() == (6,)
        # (the next run starts from what this one saved: its own +1 is its total, not added again)


def test_a_peer_that_crashes_before_folding_its_own_sessions_keeps_them(tmp_path):
    """The first save may come before this peer's fold is saved: its own old sessions still
    count after a crash there."""
    path = tmp_path / "rooms.sqlite"
    layout = Layout(COUNTER)
    legacy_store(path, layout)
    store = RoomStore(path, game="g", room=ROOM, layout=layout)
    state = store.load()
    store.save(state, ())  # (saved before the first timer folded: then a crash)
    store.close()
    state = RoomStore(path, game="g", room=ROOM, layout=layout).load()
    replica = Replica(signing_key=key(0), room=ROOM, regions=COUNTER, session=5, state=state)
    replica.handle_timer(START, wall=START)
    assert replica.state.counter_value(COINS) == 12


def test_an_old_stores_negative_total_still_counts_and_its_writer_folds_it():
    """Before protocol 6 a session's total was any signed number; now a total is taken modulo
    the counter's modulus (0..1023 here), so such a batch is not kept: its sum still counts, and
    its writer publishes it anew."""
    layout = Layout(COUNTER)
    batches = [
        codec.sign_batch(key(0), room=ROOM, session=1, lamport=11, runs=(), totals=((COINS, -3),)),
        codec.sign_batch(key(1), room=ROOM, session=1, lamport=12, runs=(), totals=((COINS, 10),)),
    ]
    blob = SharedState._LEGACY_MAGIC + layout.fingerprint + len(batches).to_bytes(4, "big")
    blob += b"".join(len(b.raw).to_bytes(4, "big") + b.raw for b in batches)
    state = SharedState.from_bytes(layout, blob, open_stored())
    assert state.counter_value(COINS) == 7
    replica = Replica(signing_key=key(0), room=ROOM, regions=COUNTER, session=2, state=state)
    replica.handle_timer(START, wall=START)
    assert replica.state.total(COINS, replica.key) == 1024 - 3 and replica.state.counter_value(COINS) == 7
