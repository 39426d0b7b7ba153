"""The hybrid clock: a write's stamp comes from when the game made it, causality kept."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.core.sync.clock import MAX_AHEAD_MS, SEEN_HISTORY_S, HybridClock, clocks_far_apart, wall_ms

T = 1_800_000_000.0  # a wall time, seconds


def test_a_write_made_now_is_stamped_now_and_after_everything_seen() -> None:
    clock = HybridClock()
    assert clock.tick(T) == wall_ms(T)
    assert clock.tick(T) == wall_ms(T) + 1  # one writer's writes stay in order
    clock.observe(wall_ms(T) + 5_000, T + 0.1)  # a peer whose clock runs 5 s fast
    assert clock.tick(T + 0.2) == wall_ms(T) + 5_001


def test_a_stalled_write_keeps_its_own_time_and_loses_to_a_later_one_seen_after_it() -> None:
    """The process stalls for 10 s; the game wrote at T; another player wrote at T + 5 s, and
    that write arrives before the stalled one is published: the later write must stay newer."""
    clock = HybridClock()
    clock.tick(T - 1)
    theirs = wall_ms(T + 5)
    clock.observe(theirs, T + 10)  # received on waking up
    mine = clock.stamp(T, T + 10)
    assert wall_ms(T) <= mine < theirs
    # A write the game makes after seeing theirs beats it (causality).
    assert clock.stamp(T + 10.5, T + 10.5) > theirs


def test_values_seen_before_the_write_are_beaten() -> None:
    clock = HybridClock()
    seen = wall_ms(T) + 60_000  # far ahead of the wall clock, seen at T - 1
    clock.observe(seen, T - 1)
    assert clock.stamp(T, T + 10) == seen + 1


def test_values_restored_from_disk_count_as_seen_before_any_write() -> None:
    restored = wall_ms(T) + 1_000
    assert HybridClock(restored).stamp(T - 100, T) == restored + 1


def test_history_older_than_its_window_is_folded_into_a_floor() -> None:
    clock = HybridClock()
    clock.observe(wall_ms(T), T)
    clock.observe(wall_ms(T) + 10, T + SEEN_HISTORY_S + 1)  # folds the first one
    assert clock.seen_by(T - 1) == wall_ms(T)  # not exact any more, but never too low
    assert clock.seen_by(T + SEEN_HISTORY_S + 1) == wall_ms(T) + 10


def test_a_wall_clock_step_back_keeps_the_history_ordered() -> None:
    clock = HybridClock()
    clock.observe(wall_ms(T), T)
    clock.observe(wall_ms(T) + 1, T - 3600)  # the clock stepped back an hour
    assert clock.seen_by(T) == wall_ms(T) + 1
    assert clock.tick(T - 3600) > wall_ms(T) + 1


def test_out_of_range_start_is_refused() -> None:
    with pytest.raises(ValueError):
        HybridClock(-1)


events = st.lists(
    st.tuples(st.booleans(), st.floats(0, 600), st.floats(0, 30), st.integers(0, 10**6)), max_size=40
)


@given(events)
def test_own_writes_increase_and_beat_everything_seen_before_they_were_made(
    steps: list[tuple[bool, float, float, int]],
) -> None:
    clock = HybridClock()
    now = T
    own: list[int] = []
    seen: list[tuple[float, int]] = []
    for is_write, advance, stall, ahead_ms in steps:
        now += advance
        if is_write:
            written_at = now - stall
            value = clock.stamp(written_at, now)
            assert not own or value > own[-1]
            assert value >= wall_ms(written_at)
            assert all(value > v for at, v in seen if at <= written_at)
            own.append(value)
        else:
            value = wall_ms(now) + ahead_ms
            clock.observe(value, now)
            seen.append((now, value))
        assert clock.last == max(own + [v for _, v in seen], default=0)


def test_players_are_told_about_clocks_far_apart_well_before_writes_are_refused() -> None:
    bound = MAX_AHEAD_MS / 1000
    assert not clocks_far_apart(2.0) and not clocks_far_apart(-2.0)  # ordinary drift
    assert clocks_far_apart(bound / 2) and clocks_far_apart(-bound / 2)
    assert clocks_far_apart(bound) and clocks_far_apart(-10 * bound)
