"""The pure per-source ledger and send backlog (rendezvous.fairness), with time passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rendezvous.fairness import SendBacklog, SourceLimits, Sources, TokenBucket, text_problem


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 50)), max_size=200))
def test_a_bucket_never_gives_more_than_burst_plus_rate_times_time(steps: list[tuple[float, int]]) -> None:
    bucket, now, taken = TokenBucket(rate=10.0, burst=20, now=0.0), 0.0, 0.0
    for gap, cost in steps:
        now += gap
        if bucket.take(now, cost):
            taken += min(cost, 20)
    assert taken <= 20 + 10.0 * now + 1e-6


def test_an_address_keeps_its_bucket_across_reconnects_and_is_forgotten_when_idle() -> None:
    sources = Sources(SourceLimits(connections=2, rate=1.0, burst=3))
    assert sources.open("a", 0.0) and sources.open("a", 0.0) and not sources.open("a", 0.0)
    assert sources.open("b", 0.0)  # another address has its own share
    assert [sources.admit_message("a", 0.0) for _ in range(4)] == [True] * 3 + [False]
    sources.close("a", 0.0)
    sources.close("a", 0.0)
    assert sources.open("a", 0.5)  # reconnected: the bucket is the one it left
    assert not sources.admit_message("a", 0.5)
    sources.close("a", 10.0)  # nothing open, bucket full again: forgotten
    sources.close("b", 10.0)
    assert len(sources) == 0 and sources.stats.refused_connections == 1


def test_password_checks_in_flight_and_per_minute() -> None:
    sources = Sources(SourceLimits(password_checks=1, password_rate=1 / 60, password_burst=2))
    assert sources.begin_password_check("a", 0.0) is None
    assert sources.begin_password_check("a", 0.0) == "busy"
    sources.end_password_check("a")
    assert sources.begin_password_check("a", 1.0) is None
    sources.end_password_check("a")
    assert sources.begin_password_check("a", 2.0) == "rate_limited"
    assert sources.begin_password_check("a", 62.0) is None


def test_send_backlog_cap_and_grace() -> None:
    backlog = SendBacklog(cap=100, share=50, grace=1.0)
    assert backlog.add(60, 0.0) is None  # over its share, within the grace
    assert backlog.add(10, 0.5) is None
    assert "slow reader" in str(backlog.add(10, 1.6))
    backlog.sent(80)
    assert backlog.add(40, 2.0) is None and backlog.over_since is None
    assert "slow reader" in str(backlog.add(70, 2.0))  # over the cap: at once


def test_text_problems() -> None:
    assert text_problem("héllo, ça va? 🎮") is None
    assert text_problem("\ud800") is not None
    assert text_problem("a\x1bb") is not None and text_problem("a\nb") is not None
    assert text_problem("\u202eabc") is not None and text_problem("a\u2067b") is not None
