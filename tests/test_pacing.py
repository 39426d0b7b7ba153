"""The publishing pace (peer.core.sync.pacing): bursts go at once, faster calls are coalesced."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.core.sync.pacing import PUBLISH_BURST, PUBLISH_RATE, Batch, PublishPacer


def test_a_burst_goes_out_at_once_then_changes_are_coalesced_until_the_pace_allows() -> None:
    pacer = PublishPacer(now=0.0)
    for n in range(int(PUBLISH_BURST)):
        pacer.add([(0xE000, bytes([n]))], written_at=100.0 + n)
        assert pacer.take(0.0) == Batch(((0xE000, bytes([n])),), 100.0 + n)
    pacer.add([(0xE000, b"\x09"), (0xE002, b"\x01")], written_at=200.0)
    pacer.add([(0xE001, b"\x08"), (0xE000, b"\x0a")], written_at=199.0)
    assert pacer.take(0.0) is None
    due = pacer.get_timer()
    assert due is not None and due == pytest.approx(1 / PUBLISH_RATE)
    # Newest values; bytes written at 199.0 in one batch stamped then, the one of 200.0 after it.
    assert pacer.take(due) == Batch(((0xE000, b"\x0a\x08"),), 199.0)
    due = pacer.get_timer()
    assert due is not None and pacer.take(due) == Batch(((0xE002, b"\x01"),), 200.0)
    assert pacer.get_timer() is None
    assert pacer.take(due + 1) is None  # nothing pending


def test_a_backlog_is_published_oldest_first_each_byte_stamped_no_later_than_it_was_written() -> None:
    """Issue 31: a stalled peer reads its emulator's backlog at once. A byte written at 36.36
    and not since must not go out stamped with the backlog's latest time."""
    pacer = PublishPacer(now=0.0, burst=1)
    assert pacer.take(0.0) is None  # (nothing yet; the bucket stays full)
    backlog = [(31.5, 0xE000, 1), (36.36, 0xE005, 233), (38.0, 0xE000, 2), (41.2, 0xE000, 3)]
    for written_at, address, value in backlog:
        pacer.add([(address, bytes([value]))], written_at)
    now, batches = 0.0, []
    while (batch := pacer.take(now)) is not None or pacer.get_timer() is not None:
        if batch is not None:
            batches.append(batch)
        now = pacer.get_timer() or now
    assert batches == [Batch(((0xE005, bytes([233])),), 36.36), Batch(((0xE000, b"\x03"),), 41.2)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        PublishPacer(0.0, rate=0)
    with pytest.raises(ValueError):
        PublishPacer(0.0, burst=0.5)


@given(st.lists(st.tuples(st.floats(0, 0.05), st.integers(0, 15), st.integers(0, 255)), max_size=200))
def test_no_change_is_lost_and_the_pace_is_kept(calls: list[tuple[float, int, int]]) -> None:
    pacer = PublishPacer(now=0.0)
    now = 0.0
    latest: dict[int, int] = {}
    sent: list[tuple[float, Batch]] = []
    for gap, offset, value in calls:
        now += gap
        pacer.add([(0xE000 + offset, bytes([value]))], written_at=now)
        latest[0xE000 + offset] = value
        due = pacer.get_timer()
        if due is None or now >= due:
            batch = pacer.take(now)
            if batch is not None:
                sent.append((now, batch))
    while True:  # the rest, as the pace allows
        due = pacer.get_timer()
        now = max(now, due) if due is not None else now + 1.0
        pending = pacer.take(now)
        if pending is None and pacer.get_timer() is None:
            break
        if pending is not None:
            sent.append((now, pending))
    published: dict[int, int] = {}
    for _, batch in sent:
        for address, data in batch.runs:
            published.update((address + i, v) for i, v in enumerate(data))
    assert published == latest
    for (t1, _), (t2, _) in zip(sent, sent[int(PUBLISH_BURST) :], strict=False):
        # A bucket of BURST tokens refilled at RATE: any BURST + 1 batches span at least 1 / RATE.
        assert t2 - t1 >= 1 / PUBLISH_RATE - 1e-9


def test_a_heavy_frame_is_charged_its_work_and_holds_the_next_one_back():
    """Receivers charge bytes and runs (issue 18, F2): an honest sender paces the same way."""
    from peer.core.sync.pacing import PublishPacer, batch_cost

    pacer = PublishPacer(0.0)
    heavy = [(at, b"\x01" * 8) for at in range(0, 0xC000, 16)]
    pacer.add(heavy, 1.0)
    assert pacer.take(0.0) is not None
    pacer.add([(0xE000, b"\x02")], 1.0)
    assert pacer.take(0.0) is None
    due = pacer.get_timer()
    assert due is not None and due >= (batch_cost(heavy) - 4) / 120
