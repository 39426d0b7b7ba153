"""Remote bytes written over a report of the game's own writes not yet read (issue 31): which
bytes get the room's value again (`peer.core.emulator.apply_race`). Pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peer.core.emulator.apply_race import ApplyRace

X, Y = 0xE012, 0xE013


def test_a_report_read_while_the_apply_is_on_its_way_is_refreshed_when_it_ran_after_it() -> None:
    race = ApplyRace()
    race.reported(4, [])
    token = race.resolving([X, Y])
    assert race.reported(5, [X]) == set()  # not known yet whether openMSX made it before the apply
    assert race.applied(token, ran_after=5) == {X}


def test_a_report_read_after_the_reply_is_refreshed_too() -> None:
    race = ApplyRace()
    token = race.resolving([X])
    assert race.applied(token, ran_after=3) == set()
    assert race.reported(3, [X, Y]) == {X}


def test_reports_merged_before_the_values_were_taken_or_made_after_the_apply_are_left_alone() -> None:
    race = ApplyRace()
    race.reported(5, [X])
    token = race.resolving([X])  # its values already hold report 5's merge
    assert race.applied(token, ran_after=5) == set()
    assert race.reported(6, [X]) == set()  # made after openMSX ran the apply: the game's newer byte
    token = race.resolving([Y])
    race.failed(token)  # never ran
    assert race.reported(7, [Y]) == set()


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 20), st.sets(st.sampled_from([X, Y]))), max_size=40)
)
def test_only_bytes_an_apply_wrote_are_ever_refreshed(steps: list[tuple[int, int, set[int]]]) -> None:
    race = ApplyRace()
    tokens: list[tuple[int, frozenset[int]]] = []
    for kind, number, addresses in steps:
        if kind == 0:
            tokens.append((race.resolving(addresses), frozenset(addresses)))
        elif kind == 1 and tokens:
            token, written = tokens.pop(0)
            assert race.applied(token, number) <= written
        else:
            refreshed = race.reported(number, addresses)
            assert refreshed <= addresses
