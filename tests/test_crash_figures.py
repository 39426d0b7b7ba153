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


def test_a_newer_write_taken_back_by_an_older_one_is_a_rollback_and_a_late_one_is_not() -> None:
    """Issue 31's case: carol's write (older) is shown at alice after bob's newer one was."""
    ledger = Ledger()
    older, newer = write("carol", 171, 36.36), write("bob", 86, 38.42)
    for w in (older, newer):
        ledger.add_write(w)
    ledger.shown("carol", 1, A, 171, 37.0)  # its author's emulator: its own write
    ledger.shown("carol", 1, A, 86, 41.6)  # then the newer one: late, not a rollback
    ledger.shown("alice", 1, A, 86, 38.6)  # alice saw the newer one (it reached the room) ...
    ledger.shown("alice", 1, A, 171, 41.4)  # ... then the older one: a rollback
    ledger.shown("alice", 1, A, 171, 41.6)  # (counted once)
    ledger.shown("alice", 2, A, 171, 50.0)  # a restarted emulator starts a new history
    [rollback] = ledger.rollbacks()
    assert (rollback.viewer, rollback.newer, rollback.older) == ("alice", newer, older)


def test_an_older_value_after_a_write_that_never_reached_the_room_is_no_rollback() -> None:
    ledger = Ledger()
    older, unseen = write("alice", 1, 10.0), write("bob", 86, 20.0)
    ledger.add_write(older)
    ledger.add_write(unseen)
    ledger.shown("bob", 1, A, 86, 20.5)  # bob's own emulator; bob dies before publishing it
    ledger.shown("bob", 1, A, 1, 25.0)
    assert ledger.rollbacks() == []


def test_wiped_counts_values_that_became_zero_or_vanished() -> None:
    assert wiped({A: 5, A + 1: 0, A + 2: 7}, {A: 0, A + 1: 0}) == [A, A + 2]
