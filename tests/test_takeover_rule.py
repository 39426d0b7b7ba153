"""The takeover rules (issue 17): the earliest joiner still with us hosts next, only when the host
is gone and never from a room of one; a room split over two rendezvous comes together again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.core.room.takeover import Sighting, move_to, parse_room_info, rank, stays, successor


@dataclass(frozen=True)
class M:
    key: bytes
    standby: str | None = "http://127.0.0.1:1"


A, B, C, D = (M(bytes([n]) * 32) for n in range(1, 5))


def test_the_earliest_remaining_joiner_takes_over():
    assert successor([A, B, C], gone_host=A.key, me=C.key, connected=[B.key]) == B
    assert successor([A, B, C], gone_host=A.key, me=B.key, connected=[C.key]) == B


def test_nobody_takes_over_while_the_host_is_still_connected():
    assert successor([A, B, C], gone_host=A.key, me=B.key, connected=[A.key, C.key]) is None
    assert successor([A, B], gone_host=None, me=B.key, connected=[]) is None
    assert successor([A, B], gone_host=B.key, me=B.key, connected=[]) is None


def test_members_we_lost_or_without_a_standby_url_are_skipped():
    no_standby = M(B.key, None)
    assert successor([A, no_standby, C, D], gone_host=A.key, me=D.key, connected=[C.key]) == C


def test_a_peer_cut_off_from_everybody_elects_nobody_least_of_all_itself():
    assert successor([A, B, C], gone_host=A.key, me=C.key, connected=[]) is None
    assert successor([A, B, C], gone_host=A.key, me=B.key, connected=[B.key]) is None


@given(st.permutations([A, B, C, D]), st.data())
def test_peers_that_agree_on_roster_and_survivors_agree_on_the_successor(members, data):
    gone = members[0]
    survivors = data.draw(st.lists(st.sampled_from(members[1:]), min_size=2, unique=True))
    picks = {
        successor(members, gone_host=gone.key, me=peer.key, connected=[s.key for s in survivors])
        for peer in survivors
    }
    assert len(picks) == 1
    assert picks.pop() == next(m for m in members if m in survivors)


# ---- which rendezvous stays, and where to be --------------------------------------------------


def test_a_standalone_rendezvous_stays_before_any_players_and_then_the_smallest_key():
    assert stays(None, A.key) is None and stays(B.key, None) is None
    assert stays(A.key, B.key) == A.key == stays(B.key, A.key)
    assert rank(None) < rank(b"\x00" * 32)


def test_a_host_moves_only_to_a_rendezvous_that_ranks_before_its_own():
    at_a, at_b = Sighting("http://a:1", A.key), Sighting("http://b:1", B.key)
    assert move_to(B.key, joined=True, me=B.key, seen=[at_a, at_b]) == at_a
    assert move_to(A.key, joined=True, me=A.key, seen=[at_a, at_b]) is None
    assert move_to(A.key, joined=True, me=C.key, seen=[at_b]) is None  # a member in the better room


def test_a_peer_in_no_room_goes_wherever_the_room_is():
    at_b = Sighting("http://b:1", B.key)
    assert move_to(A.key, joined=False, me=C.key, seen=[at_b]) == at_b
    assert move_to(A.key, joined=False, me=C.key, seen=[]) is None
    assert move_to(C.key, joined=False, me=C.key, seen=[Sighting("http://c:1", C.key)]) is None


def test_room_info_is_our_room_or_nothing():
    good = {"room": "r", "game": "demo", "players": 2, "password": False, "hosted_by": "ab" * 32}
    assert parse_room_info(good, url="u", room="r", game="demo") == Sighting("u", bytes([0xAB]) * 32)
    assert parse_room_info({**good, "hosted_by": None}, url="u", room="r", game="demo") == Sighting("u", None)
    for bad in (
        {**good, "game": "galious"},
        {**good, "room": "other"},
        {**good, "players": 0},
        {**good, "players": True},
        {**good, "hosted_by": "AB" * 32},
        {**good, "hosted_by": 7},
        [good],
        None,
    ):
        assert parse_room_info(bad, url="u", room="r", game="demo") is None


# ---- the property: any split heals into one room ---------------------------------------------
#
# A model of a player-hosted room. Each peer is joined (or not) to the rendezvous of a hosting
# player (`here`); direct links exist between peers that can see each other and were in the same
# room when they could; signalling reaches a rendezvous only if its host can be seen. Each round,
# every peer does what `peer.host_role` does with the pure rules: a host and a peer in no room
# probe every rendezvous they can see (`move_to`), a peer in no room that finds none elects
# (`successor`), and a host that moves stops hosting (its members are then in no room).


@dataclass
class Model:
    keys: list[bytes]
    hosting: set[bytes] = field(default_factory=set)
    here: dict[bytes, bytes] = field(default_factory=dict)
    joined: set[bytes] = field(default_factory=set)
    links: set[frozenset[bytes]] = field(default_factory=set)

    def __post_init__(self) -> None:
        first = self.keys[0]
        self.hosting = {first}
        self.here = dict.fromkeys(self.keys, first)
        self.joined = set(self.keys)
        self.links = {frozenset((a, b)) for a in self.keys for b in self.keys if a < b}

    def step(self, sees: set[frozenset[bytes]]) -> None:
        def visible(a: bytes, b: bytes) -> bool:
            return a == b or frozenset((a, b)) in sees

        self.links = {pair for pair in self.links if pair in sees}
        for peer in self.keys:
            host = self.here[peer]
            if host in self.hosting and visible(peer, host):
                self.joined.add(peer)  # signalling reconnects by itself
            else:
                self.joined.discard(peer)
        for a in self.keys:  # links form only through a rendezvous both are in
            for b in self.keys:
                same = a in self.joined and b in self.joined and self.here[a] == self.here[b]
                if a < b and same and visible(a, b):
                    self.links.add(frozenset((a, b)))
        for peer in self.keys:
            self.act(peer, visible)

    def act(self, peer: bytes, visible: Callable[[bytes, bytes], bool]) -> None:
        joined = peer in self.joined
        if joined and peer not in self.hosting:
            return  # a member in a room: its host probes for it
        seen = [Sighting(h.hex(), h) for h in self.hosting if visible(peer, h)]
        target = move_to(self.here[peer], joined=joined, me=peer, seen=seen)
        if target is not None:
            assert target.hosted_by is not None
            self.hosting.discard(peer)
            self.here[peer] = target.hosted_by
            self.joined.add(peer)
            for other in self.keys:  # the members of the rendezvous it closed are in no room
                if other != peer and self.here[other] == peer:
                    self.joined.discard(other)
            return
        if joined:
            return
        linked = {k for k in self.keys if frozenset((peer, k)) in self.links}
        members = [M(k) for k in self.keys]
        chosen = successor(members, gone_host=self.here[peer], me=peer, connected=linked)
        if chosen is None:
            return
        if chosen.key == peer:
            self.hosting.add(peer)
            self.here[peer] = peer
            self.joined.add(peer)
        elif chosen.key in self.hosting and visible(peer, chosen.key):
            self.here[peer] = chosen.key
            self.joined.add(peer)


def _pairs(keys: list[bytes]) -> list[frozenset[bytes]]:
    return [frozenset((a, b)) for a in keys for b in keys if a < b]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=2, max_value=6), st.data())
def test_once_everyone_sees_everyone_all_members_end_under_one_host(players, data):
    keys = data.draw(st.permutations([bytes([n]) * 32 for n in range(1, players + 1)]), label="join order")
    model = Model(list(keys))
    pairs = _pairs(model.keys)
    rounds = data.draw(st.lists(st.sets(st.sampled_from(pairs)), max_size=12), label="who sees whom")
    for sees in rounds:
        model.step(sees)
    for _ in range(3 * players + 3):
        model.step(set(pairs))
    hosts = {model.here[k] for k in model.keys}
    assert len(hosts) == 1, (hosts, model.hosting)
    assert hosts <= model.hosting
    assert model.joined == set(model.keys)
    assert len(model.links) == len(pairs)  # and every pair linked again: the replicas resync


def test_a_host_stays_where_it_is_between_two_of_equal_rank():
    """Found on another rendezvous of the same rank (the same host seen at two URLs): no hop."""
    here = Sighting("http://b:1", B.key)
    assert move_to(B.key, joined=True, me=C.key, seen=[Sighting("http://b:2", B.key), here]) is None
