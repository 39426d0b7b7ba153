"""Writes by players a joiner was not told of (issue 30, F5): held aside, never counted against the
member that holds them, merged once a member vouches for their author; and no party grows the set
of accepted authors without bound. Every message goes through the real codec."""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from games.definition import Region
from peer.core.sync import codec
from peer.core.sync.authors import (
    ASIDE_BATCHES,
    ASIDE_BYTES,
    ASIDE_PER_SENDER,
    MAX_VOUCHED,
    NAMED_KEYS,
    VOUCHES_PER_MEMBER,
    Authors,
)
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
                    authors.set_aside(author_key(10_000 + sender), batch)
        assert all(batch.author in authors for _, batch in authors.take_ready())  # (released now)
        assert len(authors.named) <= NAMED_KEYS
        assert len(authors.vouched) <= MAX_VOUCHED
        assert all(len(words) <= VOUCHES_PER_MEMBER for words in authors.vouched_by.values())
        assert authors.aside <= ASIDE_BATCHES
        assert sum(len(b.raw) for _, b in authors._aside.values()) <= ASIDE_BYTES
        assert all(count <= ASIDE_PER_SENDER for count in authors._aside_by_sender.values())
        assert not [b for _, b in authors._aside.values() if b.author in authors]
