"""The takeover rule: the earliest joiner still with us hosts next, and only when the host is gone."""

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from peer.core.takeover import successor


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
    assert successor([A, B, C], gone_host=A.key, me=C.key, connected=[]) == C


@given(st.permutations([A, B, C, D]), st.data())
def test_peers_that_agree_on_roster_and_survivors_agree_on_the_successor(members, data):
    gone = members[0]
    survivors = data.draw(st.lists(st.sampled_from(members[1:]), min_size=1, unique=True))
    picks = {
        successor(members, gone_host=gone.key, me=peer.key, connected=[s.key for s in survivors])
        for peer in survivors
    }
    assert len(picks) == 1
    assert picks.pop() == next(m for m in members if m in survivors)
