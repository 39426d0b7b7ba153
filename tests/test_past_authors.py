"""Writes by players a joiner was not told of (issue 30, F5): held aside, never counted against the
member that holds them, merged once a member vouches for their author; and no party grows the set
of accepted authors without bound. Every message goes through the real codec."""

from __future__ import annotations

import logging
import os
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from games.definition import Region
from peer.core.sync import codec
from peer.core.sync.authors import (
    ASIDE_BATCHES,
    ASIDE_BYTES,
    ASIDE_BYTES_PER_SENDER,
    ASIDE_PER_SENDER,
    ASIDE_SECONDS,
    MAX_VOUCHED,
    NAMED_KEYS,
    VOUCHES_PER_MEMBER,
    Authors,
)
from peer.core.sync.clock import HOLD_MS, MAX_AHEAD_MS
from peer.core.sync.replica import CutPeer, Rejected, Replica
from peer.core.sync.state import SignedBatch
from tests.sim import ROOM, Mesh, key, signed

WIDE = (Region(0x8000, 0x83FF),)  # 1 KiB: room for one batch per byte by hundreds of authors
PLAYER_BATCHES = 250


def joiner_of(mesh: Mesh, member: int, named: list[bytes]) -> Replica:
    """A new replica that the rendezvous told of NAMED only, linked to replica MEMBER."""
    joiner = Replica(signing_key=key(20), room=ROOM, regions=WIDE, session=2000)
    joiner.add_members(named)
    mesh.replicas.append(joiner)
    joiner.add_peer(mesh.replicas[member].key, mesh.now)
    mesh.replicas[member].add_peer(joiner.key, mesh.now)
    mesh.collect()
    return joiner


def refusals(mesh: Mesh, index: int) -> list[str]:
    return [e.reason for i, e in mesh.events if i == index and isinstance(e, Rejected)]


def cuts(mesh: Mesh, index: int) -> list[CutPeer]:
    return [e for i, e in mesh.events if i == index and isinstance(e, CutPeer)]


def test_a_joiner_takes_a_past_players_writes_from_the_member_that_holds_them() -> None:
    """The issue's figure: the player's 250 batches in an honest member's full state were
    refused as `unknown_author`, each counted against the member, which was cut."""
    mesh = Mesh.create(2, regions=WIDE)  # 0: an honest member, 1: a player who then leaves
    mesh.deliver_all()
    for n in range(PLAYER_BATCHES):
        mesh.write(1, 0x8000 + n, bytes([n % 255 + 1]))
    mesh.deliver_all()
    honest, player = mesh.replicas[0], mesh.replicas[1]
    honest.remove_peer(player.key)
    joiner = joiner_of(mesh, 0, [honest.key])  # the player is off the rendezvous's past list
    mesh.deliver_all()
    mesh.advance(0.01)  # (what was set aside and is now accepted is merged on the next timer)
    mesh.deliver_all()
    assert refusals(mesh, 2) == [] and cuts(mesh, 2) == []
    assert joiner.state.read(0x8000, PLAYER_BATCHES) == honest.state.read(0x8000, PLAYER_BATCHES)
    assert joiner.state.digest() == honest.state.digest()
    assert joiner.authors.vouched == {player.key: honest.key}


def made_up_batches(count: int, first: int = 0) -> list[bytes]:
    """Batches by COUNT keys nobody was told of, one byte each, as a member could sign them."""
    return [
        signed(SigningKey(os.urandom(32)), 1_800_000_000_000, ((0x8000 + first + n, b"\x01"),), session=7).raw
        for n in range(count)
    ]


def test_one_member_vouches_for_a_few_made_up_authors_and_the_rest_wait_uncounted() -> None:
    mesh = Mesh.create(2, regions=WIDE)  # 0: a member making up authors, 1: the receiver
    mesh.deliver_all()
    member, receiver = mesh.replicas
    raws = made_up_batches(200)
    patch = codec.StatePatch(True, 0, 1, tuple(raws))
    data = codec.encode(patch, signing_key=key(0), room=ROOM, session=100, seq=1000)
    mesh.events += [(1, e) for e in receiver.receive(member.key, data, mesh.now, wall=mesh.wall)]
    assert refusals(mesh, 1) == [] and cuts(mesh, 1) == []  # nothing counted against it
    assert len(receiver.authors.vouched) == VOUCHES_PER_MEMBER  # its word, for a few
    assert receiver.authors.aside == 200 - VOUCHES_PER_MEMBER  # held aside, not merged
    assert receiver.state.read(0x8000 + 199) == b"\x00"
    # The rendezvous names one of them later: what was held aside is merged.
    late = codec.open_batch(raws[199], room=ROOM, authors=None)
    receiver.add_members([late.author])
    receiver.handle_timer(mesh.now, wall=mesh.wall)
    assert receiver.state.read(0x8000 + 199) == b"\x01"
    assert receiver.authors.aside == 200 - VOUCHES_PER_MEMBER - 1


def test_members_words_together_add_at_most_max_vouched_authors() -> None:
    members = MAX_VOUCHED // VOUCHES_PER_MEMBER + 1
    mesh = Mesh.create(members + 1, regions=WIDE)
    mesh.deliver_all()
    receiver = mesh.replicas[-1]
    for index, member in enumerate(mesh.replicas[:-1]):
        patch = codec.StatePatch(True, 0, 1, tuple(made_up_batches(VOUCHES_PER_MEMBER, 100 * index)))
        data = codec.encode(patch, signing_key=key(index), room=ROOM, session=100 + index, seq=1000)
        mesh.events += [(members, e) for e in receiver.receive(member.key, data, mesh.now, wall=mesh.wall)]
    assert len(receiver.authors.vouched) == MAX_VOUCHED
    assert receiver.authors.aside == VOUCHES_PER_MEMBER
    assert refusals(mesh, members) == []


def test_a_lying_rendezvous_cannot_grow_the_accepted_authors_without_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """256,000 keys named in rosters of 512 grew every peer's set by 256,000 keys (28 MB)."""
    mesh = Mesh.create(2, regions=WIDE)
    mesh.deliver_all()
    receiver = mesh.replicas[1]
    caplog.set_level(logging.WARNING, logger="peer.core.sync.authors")
    for _ in range(500):
        receiver.add_members(os.urandom(32) for _ in range(512))
    assert len(receiver.authors) <= NAMED_KEYS + 2  # itself and its one admitted peer
    assert mesh.replicas[0].key in receiver.authors  # admitted: never forgotten
    warned = [r for r in caplog.records if "named more than" in r.getMessage()]
    assert len(warned) == 1


def author_key(number: int) -> bytes:
    return number.to_bytes(32, "big")


author_steps = st.lists(
    st.one_of(
        st.tuples(st.just("name"), st.integers(0, 2000), st.integers(1, 700)),  # a roster of new keys
        st.tuples(st.just("vouch"), st.integers(0, 6), st.integers(0, 2000)),  # member, author
        st.tuples(st.just("aside"), st.integers(0, 6), st.integers(0, 2000), st.integers(100, 40_000)),
        st.tuples(st.just("link_ends"), st.integers(0, 6)),
        st.tuples(st.just("reclaim"), st.sets(st.integers(0, 2000), max_size=50)),  # live authors
        st.tuples(st.just("wait"), st.floats(0.0, 100.0)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(author_steps)
def test_no_party_grows_the_authors_or_what_is_held_aside_without_bound(steps) -> None:
    """The member adversary of issue 18's properties, with the rendezvous's naming as churn:
    whatever is named, vouched for or set aside, every bound holds, and nothing is both held
    aside and by an accepted author."""
    authors = Authors(b"\xff" * 32)
    now = 0.0
    for step in steps:
        match step:
            case ("name", first, count):
                authors.name(author_key(first + n) for n in range(count))
            case ("vouch", member, author):
                authors.vouch(author_key(10_000 + member), author_key(author))
            case ("aside", sender, author, size):
                raw = os.urandom(size)
                batch = SignedBatch(author_key(author), 1, 1, (), (), raw)
                if batch.author not in authors:
                    authors.set_aside(author_key(10_000 + sender), batch, now)
            case ("link_ends", sender):
                authors.drop_sender(author_key(10_000 + sender))
                assert all(s != author_key(10_000 + sender) for s, _, _ in authors._aside.values())
            case ("reclaim", live):
                authors.reclaim({author_key(a) for a in live})
            case ("wait", seconds):
                now += seconds
                authors.expire(now)
                assert all(now - since <= ASIDE_SECONDS for _, _, since in authors._aside.values())
        assert all(batch.author in authors for _, batch in authors.take_ready())  # (released now)
        assert len(authors.named) <= NAMED_KEYS
        assert len(authors.vouched) <= MAX_VOUCHED
        assert all(len(words) <= VOUCHES_PER_MEMBER for words in authors.vouched_by.values())
        assert {(m, a) for m, words in authors.vouched_by.items() for a in words} == {
            (m, a) for a, m in authors.vouched.items()
        }
        assert authors.aside <= ASIDE_BATCHES
        assert sum(len(b.raw) for _, b, _ in authors._aside.values()) == authors._aside_bytes <= ASIDE_BYTES
        per_sender = Counter(sender for sender, _, _ in authors._aside.values())
        assert {sender: (n, held) for sender, (n, held) in authors._aside_by_sender.items()} == {
            sender: (n, sum(len(b.raw) for s, b, _ in authors._aside.values() if s == sender))
            for sender, n in per_sender.items()
        }
        assert all(
            n <= ASIDE_PER_SENDER and held <= ASIDE_BYTES_PER_SENDER
            for n, held in authors._aside_by_sender.values()
        )
        assert not [b for _, b, _ in authors._aside.values() if b.author in authors]
        assert sum(len(ids) for ids in authors._aside_by_author.values()) == authors.aside


def _patch_from(member: int, raws: list[bytes], seq: int) -> bytes:
    patch = codec.StatePatch(False, 0, 1, tuple(raws))
    return codec.encode(patch, signing_key=key(member), room=ROOM, session=100 + member, seq=seq)


def test_a_batch_held_aside_meets_the_clock_bound_like_any_other() -> None:
    """Review of issue 30, F5: a batch set aside skipped the bound on stamps. A member used up
    its vouches, then passed on a batch by a spare key stamped an hour ahead: set aside, it was
    let in once the key was named, and beat 58 minutes of honest writes an hour later."""
    mesh = Mesh.create(2, regions=WIDE)  # 0: the receiver, 1: the member
    mesh.deliver_all()
    receiver, member = mesh.replicas
    spare = SigningKey(os.urandom(32))
    bomb = signed(spare, int(mesh.wall * 1000) + 3_600_000, ((0x8000, b"\xee"),), session=7).raw
    data = _patch_from(1, [*made_up_batches(VOUCHES_PER_MEMBER, first=0x300), bomb], seq=1000)
    events = receiver.receive(member.key, data, mesh.now, wall=mesh.wall)
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["lamport_ahead"]  # counted
    assert receiver.authors.aside == 0
    receiver.add_members([spare.verify_key.encode()])  # named later: nothing waits to come in
    for minute in range(1, 61):
        at = mesh.now + 60 * minute
        receiver.local_changes([(0x8000, bytes([minute]))], at, wall=mesh.wall + 60 * minute)
        receiver.handle_timer(at, wall=mesh.wall + 60 * minute)
    assert receiver.state.read(0x8000) == bytes([60])


def test_a_batch_just_past_the_bound_waits_aside_then_held_until_the_clock_reaches_it() -> None:
    """Released from aside, a batch still waits for our clock's bound (and counts against its
    sender's `HELD_PER_PEER`)."""
    mesh = Mesh.create(2, regions=WIDE)
    mesh.deliver_all()
    receiver, member = mesh.replicas
    spare = SigningKey(os.urandom(32))
    near = signed(spare, int(mesh.wall * 1000) + MAX_AHEAD_MS + HOLD_MS // 2, ((0x8001, b"\x07"),), session=7)
    data = _patch_from(1, [*made_up_batches(VOUCHES_PER_MEMBER, first=0x300), near.raw], seq=1000)
    events = receiver.receive(member.key, data, mesh.now, wall=mesh.wall)
    assert [e for e in events if isinstance(e, Rejected)] == []
    assert receiver.authors.aside == 1
    receiver.add_members([spare.verify_key.encode()])
    assert receiver.links[member.key].held == 1
    receiver.handle_timer(mesh.now + 0.01, wall=mesh.wall + 0.01)
    assert receiver.state.read(0x8001) == b"\x00"  # not yet within the bound
    receiver.handle_timer(mesh.now + HOLD_MS / 1000, wall=mesh.wall + HOLD_MS / 1000)
    assert receiver.state.read(0x8001) == b"\x07"
    assert receiver.links[member.key].held == 0


BIG_REGION = (Region(0x1000, 0xFFFF),)


def test_one_member_fills_only_its_share_of_what_is_held_aside_and_only_while_linked() -> None:
    """Review of issue 30, F5: ~68 big batches by made-up authors from one member filled the
    room-wide 4 MiB held aside, for good (still there an hour after the member left)."""
    mesh = Mesh.create(3, regions=BIG_REGION)  # 0: the receiver, 1: the member, 2: an honest one
    mesh.deliver_all()
    receiver, member, honest = mesh.replicas

    def big(n: int) -> bytes:
        runs = tuple((0x1000 + i * 0x3C00, os.urandom(0x3C00)) for i in range(4))
        return signed(SigningKey(os.urandom(32)), 1 + n, runs, session=7).raw

    seq = 1000
    for raw in [*made_up_batches(VOUCHES_PER_MEMBER, first=0x300), *(big(n) for n in range(80))]:
        receiver.receive(member.key, _patch_from(1, [raw], seq), mesh.now, wall=mesh.wall)
        seq += 1
    assert receiver.authors._aside_bytes <= ASIDE_BYTES_PER_SENDER  # its share, not the room's
    # An honest member's past player still finds room (past its own vouches).
    for seq, raws in ((5000, made_up_batches(VOUCHES_PER_MEMBER, first=0x400)), (5001, [big(1000)])):
        receiver.receive(honest.key, _patch_from(2, raws, seq), mesh.now, wall=mesh.wall)
    assert receiver.authors._aside_by_sender[honest.key][0] == 1
    receiver.remove_peer(member.key)  # its link ends: what it set aside goes
    assert member.key not in receiver.authors._aside_by_sender
    receiver.handle_timer(mesh.now + ASIDE_SECONDS + 1, wall=mesh.wall + ASIDE_SECONDS + 1)
    assert receiver.authors.aside == 0 and receiver.authors._aside_bytes == 0  # and it expires


def test_made_up_authors_from_one_member_do_not_use_up_an_honest_members_word() -> None:
    """Review of issue 30, F5: a member passed 64 made-up authors (stamp 1) to an honest member,
    whose full state sends oldest first: at a joiner they used up the honest member's words, a
    real past player the rendezvous no longer named stayed held aside for good, and digests
    never agreed (full states every few seconds). Now what it saw itself goes first."""
    mesh = Mesh.create(3, regions=WIDE)  # 0: honest H, 1: a player P who leaves, 2: a member M
    mesh.deliver_all()
    honest, player, member = mesh.replicas
    for n in range(50):
        mesh.write(1, 0x8000 + n, bytes([n + 1]))
    mesh.deliver_all()
    fakes = [
        signed(SigningKey(os.urandom(32)), 1, ((0x8300 + n, b"\x01"),), session=7).raw
        for n in range(VOUCHES_PER_MEMBER)
    ]
    honest.receive(member.key, _patch_from(2, fakes, 9000), mesh.now, wall=mesh.wall)
    for a, b in ((0, 1), (1, 0), (1, 2), (2, 1)):
        mesh.replicas[a].remove_peer(mesh.replicas[b].key)
        mesh.blocked.add(frozenset((a, b)))
    mesh.blocked |= {frozenset((1, 3))}
    joiner = joiner_of(mesh, 0, [honest.key, member.key])  # P is not named any more
    mesh.deliver_all()
    for _ in range(6):
        mesh.advance(5.0)
        mesh.deliver_all()
    assert player.key in joiner.authors
    assert joiner.state.read(0x8000, 50) == honest.state.read(0x8000, 50)
    assert refusals(mesh, 3) == [] and cuts(mesh, 0) == [] and cuts(mesh, 3) == []
    sent = honest.statistics().peers[joiner.key].bytes_sent
    for _ in range(24):
        mesh.advance(5.0)
        mesh.deliver_all()
    # No full state after full state for what waits aside (160,104 bytes in 120 s before).
    assert honest.statistics().peers[joiner.key].bytes_sent - sent < 40_000


def test_a_word_spent_on_an_author_that_backs_nothing_any_more_is_given_back() -> None:
    """A member's words are not spent for good: once a vouched author's batches back no byte,
    the word comes back for the next past player it holds."""
    mesh = Mesh.create(2, regions=WIDE)  # 0: the receiver, 1: a member
    mesh.deliver_all()
    receiver, member = mesh.replicas
    data = _patch_from(1, made_up_batches(VOUCHES_PER_MEMBER), 1000)
    receiver.receive(member.key, data, mesh.now, wall=mesh.wall)
    assert len(receiver.authors.vouched_by[member.key]) == VOUCHES_PER_MEMBER
    mesh.advance(1.0)
    receiver.local_changes(
        [(0x8000, bytes([7]) * VOUCHES_PER_MEMBER)], mesh.now, wall=mesh.wall
    )  # every byte they backed is written over
    late = signed(SigningKey(os.urandom(32)), int(mesh.wall * 1000), ((0x8100, b"\x05"),), session=7)
    events = receiver.receive(member.key, _patch_from(1, [late.raw], 1001), mesh.now, wall=mesh.wall)
    assert [e for e in events if isinstance(e, Rejected)] == []
    assert late.author in receiver.authors and receiver.authors.aside == 0
    assert receiver.state.read(0x8100) == b"\x05"
    assert len(receiver.authors.vouched_by[member.key]) == 1
