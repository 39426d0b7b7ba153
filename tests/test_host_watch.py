"""The takeover watch (peer.core.room.host_watch): when to tell, probe, move and take over, with
injected time. The rules it times are `peer.core.room.takeover`'s (tests/test_takeover_rule.py)."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from peer.core.room.host_watch import (
    PROBE_EVERY,
    RETARGET_GRACE,
    STABLE_FOR,
    TAKEOVER_AFTER,
    TAKEOVER_CHECK,
    UNREACHABLE_AFTER,
    Action,
    Connection,
    Go,
    HostWatch,
    Moved,
    Probe,
    ServerBack,
    ServerLost,
    TakeOver,
)
from peer.core.room.signalling import Member, Roster
from peer.core.room.takeover import Sighting

ALICE, ME, BOB = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32  # joined in this order; alice hosts
ORIGIN = "http://alice.lan:4567/"
STANDBY = {ALICE: "http://alice.lan:4567", ME: "http://me.lan:4567", BOB: "http://bob.lan:4567"}
ROSTER = Roster(
    "friday", ALICE, tuple(Member(k, n, True, STANDBY[k]) for k, n in ((ALICE, "a"), (ME, "m"), (BOB, "b")))
)
IN_ROOM = Connection(joined=True, welcomed=True, hosted_by=ALICE)
LOST = Connection(joined=False, welcomed=True, hosted_by=ALICE)
STANDALONE_LOST = Connection(joined=False, welcomed=True, hosted_by=None)


class Driver:
    """What `HostRole.watch` does, with a fake clock, fake probes and fake links."""

    def __init__(self, connection: Connection = IN_ROOM, roster: Roster | None = ROSTER) -> None:
        self.now = 0.0
        self.watch = HostWatch(ME, origin=ORIGIN, game="demo", now=self.now)
        self.connection, self.roster = connection, roster
        self.sightings: list[Sighting] = []
        self.linked: set[bytes] = {BOB}
        self.probes: list[float] = []

    def run_until(self, end: float) -> list[tuple[float, Action]]:
        """Every action up to END, each with the time it came."""
        done: list[tuple[float, Action]] = []
        while (timer := self.watch.get_timer()) is not None and timer <= end:
            self.now = timer
            self.watch.seen(self.connection, self.roster)
            done += self._carry_out(self.watch.handle_timer(self.now))
        self.now = end
        return done

    def _carry_out(self, actions: Iterable[Action]) -> list[tuple[float, Action]]:
        done: list[tuple[float, Action]] = []
        for action in actions:
            done.append((self.now, action))
            if isinstance(action, Probe):
                self.probes.append(self.now)
                done += self._carry_out(self.watch.probed(self.sightings, self.linked, self.now))
            elif isinstance(action, TakeOver):  # our rendezvous runs, and we are in the room there
                done += self._carry_out(self.watch.took_over(STANDBY[ME], self.now))
                self.connection = Connection(joined=True, welcomed=True, hosted_by=ME, hosting=True)
        return done


def kinds(done: list[tuple[float, Action]], kind: type) -> list[float]:
    return [at for at, action in done if isinstance(action, kind)]


def test_the_player_hears_of_a_lost_server_after_three_seconds_and_of_its_return_at_once() -> None:
    driver = Driver(STANDALONE_LOST)
    done = driver.run_until(10.0)
    lost_since = TAKEOVER_CHECK  # the first check that saw it gone
    assert kinds(done, ServerLost) == [lost_since + UNREACHABLE_AFTER]  # once
    assert driver.watch.unreachable
    driver.connection = Connection(joined=True, welcomed=True, hosted_by=None)
    assert [action for _, action in driver.run_until(11.0)] == [ServerBack()]
    assert not driver.watch.unreachable


def test_a_standalone_rendezvous_is_never_replaced() -> None:
    driver = Driver(STANDALONE_LOST)
    driver.sightings = [Sighting("http://bob.lan:4567", BOB)]
    done = driver.run_until(120.0)
    assert [action for _, action in done] == [ServerLost()]  # no probe, no move, no election


def test_nothing_is_probed_before_the_first_welcome() -> None:
    driver = Driver(Connection(joined=False, welcomed=False, hosted_by=None))
    assert kinds(driver.run_until(30.0), Probe) == []


def test_a_host_that_is_fine_probes_every_probe_every() -> None:
    driver = Driver(Connection(joined=True, welcomed=True, hosted_by=ME, hosting=True))
    done = driver.run_until(10.0)
    assert kinds(done, Probe) == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert all(b - a >= PROBE_EVERY for a, b in zip(driver.probes, driver.probes[1:], strict=False))
    probe = next(action for _, action in done if isinstance(action, Probe))
    # the original rendezvous (once, without its slash) and every other member's standby URL
    assert probe == Probe(("http://alice.lan:4567", "http://bob.lan:4567"), "friday", "demo")


def test_a_member_in_the_room_leaves_probing_to_its_host() -> None:
    assert kinds(Driver(IN_ROOM).run_until(30.0), Probe) == []


def test_no_election_before_takeover_after_and_the_survivors_must_hold_still() -> None:
    driver = Driver(LOST)
    done = driver.run_until(30.0)
    lost_since = TAKEOVER_CHECK
    # probed every check once lost; the first election look at lost + TAKEOVER_AFTER starts the
    # survivors' clock, which must then run STABLE_FOR
    assert kinds(done, Probe)[:3] == [1.0, 2.0, 3.0]
    assert kinds(done, TakeOver) == [lost_since + TAKEOVER_AFTER + STABLE_FOR]


def test_survivors_that_change_restart_the_wait() -> None:
    driver = Driver(LOST)
    assert kinds(driver.run_until(5.0), TakeOver) == []  # first look at 4: survivors {bob} since 4
    driver.linked = {BOB, ALICE}  # a link came back ... the host's: it is not gone
    assert kinds(driver.run_until(10.0), TakeOver) == []
    driver.linked = {BOB}  # at 11, a new set: its clock starts again
    done = driver.run_until(20.0)
    assert kinds(done, TakeOver) == [11.0 + STABLE_FOR]


def test_a_peer_with_no_live_link_never_elects_itself() -> None:
    driver = Driver(LOST)
    driver.linked = set()
    done = driver.run_until(300.0)
    assert kinds(done, TakeOver) == [] and kinds(done, Go) == []


def test_an_earlier_member_is_followed_to_its_standby_rendezvous() -> None:
    driver = Driver(Connection(joined=False, welcomed=True, hosted_by=BOB))  # bob hosted, and is gone
    driver.linked = {ALICE}
    done = driver.run_until(7.0)
    assert [action for at, action in done if not isinstance(action, Probe | ServerLost)] == [
        Moved(ALICE),
        Go("http://alice.lan:4567", ALICE),
    ]


def test_a_move_to_the_same_url_is_left_to_finish_for_the_retarget_grace() -> None:
    driver = Driver(LOST)
    driver.sightings = [Sighting("http://bob.lan:4567", BOB)]  # the room, found at bob's
    done = driver.run_until(1.0 + RETARGET_GRACE + 0.5)
    gone = kinds(done, Go)
    assert gone == [1.0, 1.0 + RETARGET_GRACE]  # probed every second, moved again only after grace
    assert kinds(done, Moved) == gone


def test_our_own_rendezvous_taken_over_is_a_move_to_us() -> None:
    driver = Driver(LOST)
    driver.run_until(6.0)
    assert driver.watch.took_over("http://me.lan:4567", 6.5) == [Moved(ME)]
    driver.sightings = [Sighting("http://me.lan:4567", ME)]  # our own: never somewhere to go
    assert kinds(driver.run_until(9.0), Go) == []


@given(
    st.lists(
        st.tuples(st.booleans(), st.sets(st.sampled_from([ALICE, BOB])), st.floats(0.1, 3.0)),
        max_size=40,
    )
)
def test_a_takeover_needs_a_live_link_and_a_lost_server(steps: list[tuple[bool, set[bytes], float]]) -> None:
    """Whatever happens, we take over only with a live link (not the host's), out of the room at
    least TAKEOVER_AFTER, with the same links for STABLE_FOR."""
    driver = Driver(LOST)
    lost_since: float | None = None
    links_since = (frozenset(driver.linked), 0.0)
    end = 0.0
    for joined, linked, step in steps:
        end += step
        while (timer := driver.watch.get_timer()) is not None and timer <= end:
            driver.now = timer
            driver.connection = Connection(joined=joined, welcomed=True, hosted_by=ALICE)
            lost_since = None if joined else (lost_since if lost_since is not None else timer)
            if frozenset(linked) != links_since[0]:
                links_since = (frozenset(linked), timer)
            driver.linked = linked
            driver.watch.seen(driver.connection, ROSTER)
            for at, action in driver._carry_out(driver.watch.handle_timer(timer)):
                if isinstance(action, TakeOver):
                    assert linked and ALICE not in linked
                    assert lost_since is not None and at - lost_since >= TAKEOVER_AFTER
                    assert at - links_since[1] >= STABLE_FOR
