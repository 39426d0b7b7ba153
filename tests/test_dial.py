"""The dial state machine (pure, no aiortc) and the typed signals it answers to."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.core.mesh.dial import (
    CONNECT_TIMEOUT,
    HELD_OFFER_TTL,
    HINT_GRACE,
    RETRY_FIRST,
    RETRY_MAX,
    TRANSITIONS,
    AskRedial,
    Dial,
    DialError,
    DialMachine,
    DialState,
    GiveUp,
    HeldOffer,
    Input,
)
from peer.core.mesh.signals import Answer, Offer, Restart, SignalError, parse_signal

LINKED = {DialState.CONNECTING, DialState.BINDING, DialState.ADMITTED}


def test_an_offerer_dials_at_once_and_backs_off_after_each_loss() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    assert dial.handle_timer(0.0) == Dial()
    waits = []
    now = 0.0
    for link in range(1, 8):
        dial.dial(link, now)
        dial.lost(now)
        assert dial.retry_at is not None
        waits.append(dial.retry_at - now)
        now = dial.retry_at
        assert dial.handle_timer(now) == Dial()
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_an_attempt_not_admitted_in_time_is_given_up_and_admission_resets_the_wait() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    dial.dial(1, 0.0)
    assert dial.handle_timer(CONNECT_TIMEOUT - 0.01) is None
    assert isinstance(dial.handle_timer(CONNECT_TIMEOUT), GiveUp)
    dial.lost(CONNECT_TIMEOUT)
    assert dial.backoff == 2 * RETRY_FIRST
    dial.dial(2, 20.0)
    dial.opened()
    dial.admitted()
    assert dial.get_timer() is None and dial.backoff == RETRY_FIRST


def test_an_answerer_keeps_asking_to_be_dialled_naming_its_last_link() -> None:
    dial = DialMachine(offerer=False, now=0.0)
    assert dial.get_timer() is None  # nothing to ask before it ever had a link
    dial.offered(7, 1.0)
    dial.opened()
    dial.lost(2.0)
    assert dial.handle_timer(2.0 + RETRY_FIRST) == AskRedial(7)
    assert dial.state is DialState.WAITING and dial.retry_at == pytest.approx(2.0 + 3 * RETRY_FIRST)


def test_a_banned_peer_is_ignored_until_the_ban_is_over() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    dial.dial(1, 0.0)
    dial.opened()
    dial.banned(1.0, 30.0)
    assert not dial.may_answer() and dial.restart_requested(5, 2.0) is None
    dial.hint(2.0)
    assert dial.handle_timer(30.9) is None
    assert dial.handle_timer(31.0) == Dial()


def test_hints_bring_a_waiting_peer_forward_and_give_up_an_attempt_that_never_opened() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    for link in range(1, 6):  # a dead path: the wait has grown to seconds
        dial.dial(link, float(link))
        dial.lost(float(link))
    dial.hint(6.0)
    assert dial.handle_timer(6.0) == Dial()
    dial.dial(6, 6.0)
    dial.hint(6.0 + HINT_GRACE / 2)  # too young to judge
    assert dial.handle_timer(6.0 + HINT_GRACE / 2) is None
    dial.hint(6.0 + HINT_GRACE)
    assert isinstance(dial.handle_timer(6.0 + HINT_GRACE), GiveUp)


def test_a_restart_redials_when_the_answerer_has_lost_our_link_or_never_got_it() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    dial.dial(3, 0.0)
    assert dial.restart_requested(2, 0.5) is None  # older than ours, and ours is fresh
    assert dial.restart_requested(2, HINT_GRACE) == Dial()  # ours never opened: it was lost
    dial.opened()
    assert dial.restart_requested(2, 5.0) is None  # ours is open: the restart is stale
    assert dial.restart_requested(3, 5.0) == Dial()  # it lost this very link


def test_illegal_inputs_raise_and_leave_the_state_alone() -> None:
    dial = DialMachine(offerer=True, now=0.0)
    with pytest.raises(DialError):
        dial.opened()
    with pytest.raises(DialError):
        dial.offered(1, 0.0)  # an offerer never takes offers
    with pytest.raises(DialError):
        dial.lost(0.0)  # no link to lose
    assert dial.state is DialState.WAITING


def admitted_answerer(now: float = 0.0) -> DialMachine:
    dial = DialMachine(offerer=False, now=now)
    dial.offered(1, now)
    dial.opened()
    dial.admitted()
    return dial


def test_an_offer_held_while_the_link_lives_is_handed_back_when_it_is_lost_soon() -> None:
    dial = admitted_answerer()
    dial.hold_offer(5, "v=0 first", 1.0)
    dial.hold_offer(6, "v=0 second", 2.0)  # only the newest is held
    assert dial.state is DialState.ADMITTED  # holding changes nothing else
    assert dial.lost(2.0 + HELD_OFFER_TTL - 0.01) == HeldOffer(6, "v=0 second", 2.0)
    assert dial.held is None  # taken: handed back once
    dial.offered(6, 12.0)
    dial.lost(12.5)
    assert dial.held is None


def test_a_held_offer_expires_and_a_newer_offer_or_a_ban_forgets_it() -> None:
    dial = admitted_answerer()
    dial.hold_offer(5, "v=0", 1.0)
    assert dial.lost(1.0 + HELD_OFFER_TTL) is None  # too old: the peer did not really restart
    assert dial.held is None
    dial = admitted_answerer()
    dial.hold_offer(5, "v=0", 1.0)
    dial.offered(7, 2.0)  # another offer, answered: the held one is stale
    assert dial.held is None and dial.lost(3.0) is None
    dial = admitted_answerer()
    dial.hold_offer(5, "v=0", 1.0)
    dial.banned(2.0, 30.0)
    assert dial.held is None


def test_only_an_admitted_answerer_holds_offers() -> None:
    offerer = DialMachine(offerer=True, now=0.0)
    offerer.dial(1, 0.0)
    offerer.opened()
    offerer.admitted()
    with pytest.raises(DialError):
        offerer.hold_offer(1, "v=0", 1.0)
    answerer = DialMachine(offerer=False, now=0.0)
    answerer.offered(1, 0.0)
    with pytest.raises(DialError):
        answerer.hold_offer(2, "v=0", 1.0)  # nothing alive to protect: answer it
    assert answerer.held is None


inputs = st.lists(
    st.tuples(
        st.sampled_from(
            ["dial", "offered", "opened", "admitted", "lost", "banned", "hint", "restart", "timer", "hold"]
        ),
        st.floats(0.0, 20.0),
        st.integers(0, 5),
    ),
    max_size=60,
)


@given(offerer=st.booleans(), steps=inputs)
def test_any_sequence_keeps_the_machine_consistent(
    offerer: bool, steps: list[tuple[str, float, int]]
) -> None:
    """Whatever happens in whatever order: only table transitions occur, an illegal input changes
    nothing, the wait stays within bounds, a timer exists in every state but admitted, and it is
    never due before now was reached (so the loop never spins). An offer is held only by an
    admitted answerer, and a loss hands it back only within its time to live."""
    now = 0.0
    dial = DialMachine(offerer=offerer, now=now)
    for what, elapsed, link in steps:
        now += elapsed
        before = dial.state
        try:
            match what:
                case "dial":
                    dial.dial(link, now)
                case "offered":
                    dial.offered(link, now)
                case "opened":
                    dial.opened()
                case "admitted":
                    dial.admitted()
                case "lost":
                    held = dial.lost(now)
                    assert held is None or now - held.at < HELD_OFFER_TTL
                case "hold":
                    dial.hold_offer(link, "v=0", now)
                    assert not offerer and before is DialState.ADMITTED
                case "banned":
                    dial.banned(now, 30.0)
                case "hint":
                    dial.hint(now)
                case "restart":
                    action = dial.restart_requested(link, now)
                    assert action is None or (offerer and before is not DialState.BANNED)
                case _:
                    action = dial.handle_timer(now)
                    if isinstance(action, Dial):
                        assert offerer and dial.state is DialState.WAITING
                    if isinstance(action, AskRedial):
                        assert not offerer and dial.retry_at is not None and dial.retry_at > now
        except DialError:
            assert dial.state is before
            continue
        moved = dial.state is not before
        assert not moved or what == "timer" or (before, Input(what)) in TRANSITIONS
        assert RETRY_FIRST <= dial.backoff <= RETRY_MAX
        assert dial.held is None or (not offerer and dial.held.at <= now)
        if what in ("offered", "banned"):
            assert dial.held is None
        assert (dial.deadline is not None) == (dial.state in LINKED - {DialState.ADMITTED})
        if dial.state is DialState.ADMITTED:
            assert dial.get_timer() is None
        if dial.state is DialState.BANNED:
            # Every ban has an end, and the timer is what lifts it (steps may pass it first).
            assert dial.retry_at is not None and dial.get_timer() is not None


@given(offerer=st.booleans(), hops=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=30))
def test_a_lost_peer_is_always_tried_again(offerer: bool, hops: list[float]) -> None:
    """Liveness: from any loss, following the timer always reaches a new attempt (offerer) or a
    request for one (answerer) within the longest wait."""
    dial = DialMachine(offerer=offerer, now=0.0)
    now = 0.0
    for hop in hops:
        if offerer:
            dial.dial(1, now)
        else:
            dial.offered(1, now)
        now += hop
        dial.handle_timer(now)  # may say give up: either way the link is lost now
        dial.lost(now)
        timer = dial.get_timer()
        assert timer is not None and timer - now <= RETRY_MAX + 1e-9
        now = timer
        assert dial.handle_timer(now) == (Dial() if offerer else AskRedial(1))


def test_signals_parse_once_at_the_edge() -> None:
    assert parse_signal({"kind": "offer", "link": 3, "sdp": "v=0"}) == Offer(3, "v=0")
    assert parse_signal({"kind": "answer", "link": 3, "sdp": "v=0"}) == Answer(3, "v=0")
    assert parse_signal({"kind": "restart", "link": 0}) == Restart(0)
    for signal in (Offer(1, "x"), Answer(2, "y"), Restart(3)):
        assert parse_signal(signal.to_wire()) == signal


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "offer",
        {"kind": "offer", "link": 1},
        {"kind": "offer", "link": True, "sdp": "x"},
        {"kind": "offer", "link": 0, "sdp": "x"},
        {"kind": "answer", "link": 2**53, "sdp": "x"},
        {"kind": "answer", "link": 1, "sdp": "x" * (16 * 1024 + 1)},
        {"kind": "restart", "link": -1},
        {"kind": "restart", "link": "1"},
        {"kind": "bye", "link": 1},
        {"kind": ["offer"], "link": 1},
    ],
)
def test_a_malformed_signal_is_a_signal_error(data: object) -> None:
    with pytest.raises(SignalError):
        parse_signal(data)


@pytest.mark.timeout(1800)  # (the long mode: 10,000 nested values)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
    )
)
def test_anything_relayed_parses_or_raises_signal_error(data: object) -> None:
    with contextlib.suppress(SignalError):
        parse_signal(data)
