"""The crash test's arithmetic (scripts/crash_figures.py): which writes count as lost, and when."""

import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from crash_figures import Kill, Ledger, Write, author_of, value_for, wiped

A = 0xE010


def write(author: str, value: int, at: float, address: int = A) -> Write:
    return Write(author, address, value, at, at + 0.01, 1)


@given(st.integers(0, 2), st.integers(0, 10_000))
def test_a_value_names_its_author_and_is_never_the_boot_clear(author: int, counter: int) -> None:
    value = value_for(author, counter)
    assert 1 <= value <= 255
    assert author_of(value) == author


def test_a_newer_write_replaced_by_an_older_value_is_lost_with_its_time_to_the_kill() -> None:
    ledger = Ledger()
    old, new = write("alice", 1, 10.0), write("bob", 86, 20.0)
    for w in (old, new):
        ledger.add_write(w)
        ledger.seen("carol", w.address, w.value, w.done + 0.2)
    ledger.add_kill(Kill("bob", "kill -9", 20.51, 1))
    [lost] = ledger.lost({A: 1})
    assert lost.write == new and lost.replaced_by == old
    assert lost.before_kill is not None and abs(lost.before_kill - 0.5) < 1e-9
    assert ledger.lost({A: 86}) == []  # the newest value holds: nothing lost


def test_a_zero_loses_every_write_that_reached_the_room_and_none_that_did_not() -> None:
    ledger = Ledger()
    reached, unseen = write("alice", 1, 10.0), write("bob", 86, 20.0)
    ledger.add_write(reached)
    ledger.add_write(unseen)
    ledger.seen("bob", A, 86, 21.0)  # its author's own emulator does not count
    ledger.seen("bob", A, 1, 11.0)
    assert [item.write for item in ledger.lost({A: 0})] == [reached]
    assert [w for w, _ in ledger.unpublished(until=30.0)] == [unseen]


def test_wiped_counts_values_that_became_zero_or_vanished() -> None:
    assert wiped({A: 5, A + 1: 0, A + 2: 7}, {A: 0, A + 1: 0}) == [A, A + 2]
