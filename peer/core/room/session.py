"""The player's session as a machine: its phases, its one timer, and where each answer goes.

Owns the rules of one player's session that used to live in asyncio tasks and `if self.mesh is not
None` guards of `peer.session.Session`, which is now only its driver:

- **Phases** (an Enum and a transition table, as in `peer.core.mesh.dial`):

      STARTING ──emulator ready──▶ JOINING ──joined──▶ WAITING ──room ready──▶ PLAYING
      any phase ──stop──▶ LEAVING   (the last reason given is the one the session ends with)

  STARTING: openMSX is not there yet (nothing is shown on its screen). JOINING: openMSX runs, the
  room is being joined (no mesh yet: nothing is published, no item news). WAITING: in the room,
  waiting for the room's state. PLAYING: the room's state is here (or we know we are alone, or
  nobody answered in time); whether our game shares is the gate's business (armed, disarmed).
- **The room-state deadline**: alone in the room → ready; someone's full state → ready; nobody
  answered within ROOM_STATE_TIMEOUT → play on with the state saved on this machine (logged).
- **The arming poll**: while the gate is disarmed, the emulator is probed every ARMING_POLL, and at
  once when the gate asks (`Check`); one probe at a time (`ProbeEmulator`, answered by `probed` or
  `probe_failed`).
- **The clock check** every CLOCK_CHECK (`ReadClocks`, answered by `clocks`), and `--quit-after`.
- **The room's answers**: resync (F10, console), refusal of our game (`GameGuard`), host moved,
  server unreachable and back, a refused rejoin (told once, never the end: issue 29, F4), item
  news (only while our game shares).
- **What goes where**: `Publish` → mesh; `WriteToEmulator` / `AdoptRoom` / `Show` → the applier;
  a gate's or the view's `Tell`/`Say` → `Print` (terminal) and `Show` (openMSX's screen, once it
  runs); `Log` → the log.

Pure: no I/O, no clock, no asyncio. Time comes in as `now` (monotonic seconds); the driver asks
`get_timer()` when to call `handle_timer(now)`. Every input returns the effects to carry out, in
order. Composes `Gate`, `RoomView`, `ItemNews` and `GameGuard`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from peer.console import HELP, Command, PeerLine, Status
from peer.core.emulator.gating import Action, AdoptRoom, Check, Gate, Publish, Tell, WriteToEmulator
from peer.core.mesh.events import LinkStatistics, PeerAdmitted, Published
from peer.core.room.items import ItemNews, counter_runs, writer_of
from peer.core.room.room_game import GameGuard, Platform
from peer.core.room.signalling import REJOIN_RETRY, Roster
from peer.core.room.view import Note, Notice, RoomView, Say
from peer.core.sync.replica import BytesChanged, Event, FullStateReceived, StateChanged
from peer.core.sync.state import Run, SharedState

__all__ = [
    "ARMING_POLL",
    "CLOCK_CHECK",
    "ROOM_STATE_TIMEOUT",
    "AdoptRoom",
    "Effect",
    "ListPeers",
    "Log",
    "Phase",
    "Print",
    "ProbeEmulator",
    "Publish",
    "ReadClocks",
    "RequestResync",
    "SaveSoon",
    "SendChat",
    "SessionError",
    "SessionMachine",
    "Show",
    "Stop",
    "WriteToEmulator",
]

ROOM_STATE_TIMEOUT = 10.0  # with others in the room but none answering, play on with our own state
ARMING_POLL = 0.25  # while disarmed, the emulator is probed this often (for --arm-after)
CLOCK_CHECK = 5.0  # the peers' clocks are compared this often

ALONE = "alone in the room: playing with the state saved on this machine"
NOBODY_ANSWERED = "no other player answered within {:.0f} s: playing with this machine's saved state"
UNREACHABLE = "the room's server is unreachable: playing on, retrying"
RECONNECTED = "reconnected to the room's server"
REJOINED = "back in the room at its server"
REJOIN_REFUSED = (
    "the room's server would not let us back in ({code}): {why}. "
    "Playing on with the players already connected; trying again every {retry:.0f} s"
)
REJOIN_WHY = {"name_taken": "someone in the room now goes by our name, or one like it"}
REJOIN_WHY_ELSE = "someone else may have taken the room's name"
NOT_SHARING_YET = "resync: asked the room again (your game is not sharing yet)"
REFUSED = "refused: another game"


class Phase(enum.Enum):
    STARTING = "starting"
    JOINING = "joining"
    WAITING = "waiting"
    PLAYING = "playing"
    LEAVING = "leaving"


class Input(enum.Enum):
    EMULATOR_READY = "emulator ready"
    JOINED = "joined"
    ROOM_READY = "room ready"
    STOP = "stop"


TRANSITIONS: dict[tuple[Phase, Input], Phase] = {
    (Phase.STARTING, Input.EMULATOR_READY): Phase.JOINING,
    (Phase.JOINING, Input.JOINED): Phase.WAITING,
    # a room state that arrives while the join finishes is the gate's already; the phase follows
    (Phase.JOINING, Input.ROOM_READY): Phase.JOINING,
    (Phase.WAITING, Input.ROOM_READY): Phase.PLAYING,
    **{(phase, Input.STOP): Phase.LEAVING for phase in Phase},
    # stopped while the join finished, or a room state coming as we leave: nothing changes
    (Phase.LEAVING, Input.JOINED): Phase.LEAVING,
    (Phase.LEAVING, Input.ROOM_READY): Phase.LEAVING,
}
IN_ROOM = (Phase.WAITING, Phase.PLAYING)


class SessionError(Exception):
    """An input the current phase does not allow: the driver's bookkeeping is wrong."""


# ---- effects: what the driver carries out --------------------------------------------------
# (`Publish`, `WriteToEmulator` and `AdoptRoom` are the gate's own, passed through.)


@dataclass(frozen=True, slots=True)
class Print:
    """A line on the player's terminal."""

    text: str


@dataclass(frozen=True, slots=True)
class Show:
    """A line on openMSX's screen (through the applier, in order with its writes)."""

    text: str


@dataclass(frozen=True, slots=True)
class Log:
    """A line in the log (`warning`: at warning level, else info)."""

    text: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class ProbeEmulator:
    """Read the armed-when bytes and the emulated time from openMSX now; answer with `probed` (or
    `probe_failed`)."""


@dataclass(frozen=True, slots=True)
class RequestResync:
    """Ask every peer of the mesh for its full state."""


@dataclass(frozen=True, slots=True)
class SaveSoon:
    """The room's state changed: persistence saves it soon."""


@dataclass(frozen=True, slots=True)
class ReadClocks:
    """Hand the mesh's statistics to `clocks`."""


@dataclass(frozen=True, slots=True)
class SendChat:
    """Send a chat line to the room (the driver says whether it was too long)."""

    text: str


@dataclass(frozen=True, slots=True)
class ListPeers:
    """Print one line per peer (the `peers` command)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """End the session with this reason."""

    reason: str


Effect = (
    Publish
    | WriteToEmulator
    | AdoptRoom
    | Print
    | Show
    | Log
    | ProbeEmulator
    | RequestResync
    | SaveSoon
    | ReadClocks
    | SendChat
    | ListPeers
    | Stop
)


@dataclass(slots=True)
class _Timers:
    """When each of the session's clocked rules is due next (None: not pending)."""

    room_state: float | None = None
    clocks: float | None = None
    quit: float | None = None
    poll: float | None = None


class SessionMachine:
    """One player's session, from openMSX's start to leaving; see the module docstring."""

    def __init__(
        self,
        *,
        gate: Gate,
        news: ItemNews,
        guard: GameGuard,
        view: RoomView,
        url: str,
        hosting: bool = False,
        quit_after: float | None = None,
    ) -> None:
        self.gate = gate
        self.news = news
        self.guard = guard
        self.view = view
        self.url = url
        self.hosting = hosting  # we run the room's rendezvous (changes when the host moves)
        self.unreachable = False  # the player was told the rendezvous is unreachable
        self.rejoin_refusal: str | None = None  # the code the rendezvous refused our rejoin with
        self.quit_after = quit_after
        self.phase = Phase.STARTING
        self.stop_reason = "quit"
        self._timers = _Timers()
        self._state: SharedState | None = None  # the replica's state, once joined
        self._probing = False  # a probe is out (one at a time)
        self._probe_asked = False  # and the gate asked for another meanwhile

    # ---- phases --------------------------------------------------------------------------------

    def _step(self, what: Input) -> None:
        try:
            self.phase = TRANSITIONS[self.phase, what]
        except KeyError:
            raise SessionError(f"{what.value} while {self.phase.value}") from None

    def emulator_ready(self, now: float) -> list[Effect]:
        """openMSX runs and its applier is there: judge arming on what it says now (a game
        already in play, --attach, may never report)."""
        self._step(Input.EMULATOR_READY)
        return self._probe()

    def joined(self, state: SharedState, roster: Roster | None, now: float) -> list[Effect]:
        """In the room: STATE is the replica's (the same object for the whole session), ROSTER
        the latest the signalling has."""
        self._step(Input.JOINED)
        self._state = state
        self.news.seen_in(state)
        timers = self._timers
        timers.room_state, timers.clocks = now + ROOM_STATE_TIMEOUT, now + CLOCK_CHECK
        timers.poll = now + ARMING_POLL
        timers.quit = None if self.quit_after is None else now + self.quit_after
        effects = self.roster(roster, now) if roster is not None else self._alone_check()
        if self.gate.arming.room_ready and self.phase is Phase.WAITING:
            self._step(Input.ROOM_READY)  # the room's state came while the join finished
            timers.room_state = None
        return effects

    def stop(self, reason: str) -> list[Effect]:
        """End the session (the last reason given is the one it ends with)."""
        self._step(Input.STOP)
        self.stop_reason = reason
        return [Stop(reason)]

    def _room_ready(self) -> list[Effect]:
        self._timers.room_state = None
        if self.phase is not Phase.PLAYING:
            self._step(Input.ROOM_READY)
        return self._route(self.gate.room_is_ready())

    # ---- the timer -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` is due next, None for never (before joining, and leaving)."""
        if self.phase not in IN_ROOM:
            return None
        timers = self._timers
        poll = timers.poll if not (self.gate.armed or self._probing) else None
        due = [at for at in (timers.room_state, timers.clocks, timers.quit, poll) if at is not None]
        return min(due, default=None)

    def handle_timer(self, now: float) -> list[Effect]:
        if self.phase not in IN_ROOM:
            return []
        timers = self._timers
        effects: list[Effect] = []
        if timers.quit is not None and now >= timers.quit:
            timers.quit = None
            return self.stop("time is up")
        if timers.room_state is not None and now >= timers.room_state:
            effects += [Log(NOBODY_ANSWERED.format(ROOM_STATE_TIMEOUT), warning=True), *self._room_ready()]
        if timers.clocks is not None and now >= timers.clocks:
            timers.clocks = now + CLOCK_CHECK
            effects.append(ReadClocks())
        if timers.poll is not None and now >= timers.poll and not (self.gate.armed or self._probing):
            effects += self._probe()
        return effects

    # ---- the emulator --------------------------------------------------------------------------

    def _probe(self) -> list[Effect]:
        if self._probing:
            self._probe_asked = True
            return []
        self._probing, self._probe_asked = True, False
        return [ProbeEmulator()]

    def probed(self, memory: Mapping[int, int], emutime: float, last_report: int, now: float) -> list[Effect]:
        """What the running emulator said, for the probe asked."""
        effects = self._route(self.gate.probed(memory, emutime, last_report))
        return effects + self._probe_done(now)

    def probe_failed(self, reason: str, now: float) -> list[Effect]:
        """The emulator's answer could not be read, or it refused while still running."""
        text = f"could not check openMSX's state for arming (will try again): {reason}"
        return [Log(text, warning=True), *self._probe_done(now)]

    def _probe_done(self, now: float) -> list[Effect]:
        self._probing = False
        self._timers.poll = now + ARMING_POLL
        asked, self._probe_asked = self._probe_asked, False
        return self._probe() if asked and not self.gate.armed and self.phase is not Phase.LEAVING else []

    def report(
        self,
        changes: Iterable[Run],
        emutime: float,
        written_at: float | None,
        number: int,
        before: Iterable[Run] = (),
        *,
        jumped: bool = False,
    ) -> list[Effect]:
        """openMSX's report of a check's local changes (`Gate.report`)."""
        return self._route(self.gate.report(changes, emutime, written_at, number, before, jumped=jumped))

    def gate_actions(self, actions: Iterable[Action]) -> list[Effect]:
        """The gate's answer to something the applier told it (an adoption's end)."""
        return self._route(actions)

    def resync(self) -> list[Effect]:
        """Manual resync (F10, console): ask every peer for its full state, re-adopt the room."""
        effects: list[Effect] = [RequestResync()] if self._state is not None else []
        if not self.gate.armed:  # armed, the adoption's outcome says it (one message)
            effects += self._tell(NOT_SHARING_YET)
        return effects + self._route(self.gate.resync())

    # ---- the room ------------------------------------------------------------------------------

    def roster(self, roster: Roster, now: float) -> list[Effect]:
        """A new roster from the signalling."""
        effects = self._notify(self.view.roster_changed(roster, where=self.server))
        if self.rejoin_refusal is not None:  # back in the room after a refused rejoin
            self.rejoin_refusal = None
            effects += self._tell(REJOINED)
        return effects + self._alone_check()

    def _alone_check(self) -> list[Effect]:
        if self.phase is Phase.WAITING and self.view.alone() and not self.gate.arming.room_ready:
            return [Log(ALONE), *self._room_ready()]
        return []

    def mesh_event(self, event: Event, now: float) -> list[Effect]:
        """An event of the mesh or the replica."""
        effects = self._notify(self.view.event(event, now))  # what it means to the player
        match event:
            case StateChanged():
                effects.append(SaveSoon())
            case BytesChanged(_, changes, deltas):
                effects += [SaveSoon(), *self._route(self.gate.remote_changes(changes, deltas))]
                effects += self._item_news([*changes, *self._counter_runs(first for first, _ in deltas)])
            case FullStateReceived(peer, room_state) if room_state and not self.gate.arming.room_ready:
                effects += [Log(f"got the room's state from {self.view.name(peer)}"), *self._room_ready()]
            case Published(runs, corrections, deltas):
                self.news.seen([*runs, *self._counter_runs()])
                effects += [SaveSoon(), *self._route(self.gate.remote_changes(corrections, deltas))]
            case PeerAdmitted(peer):
                for line in self.guard.differences_to_tell(peer):  # "player2 plays a different ROM"
                    effects += self._tell(line)
        return effects

    def check_game(self, peer: bytes, theirs: Platform | None, now: float) -> tuple[str | None, list[Effect]]:
        """The binding's check of a peer's hello: the refusal's detail (None admits), and the
        effects (the session stops when the room refused our game)."""
        already_refused = self.guard.refusal is not None
        view = self.view
        refused = self.guard.check(peer, theirs, first_member=view.first_member, name=view.name)
        if self.guard.refusal is not None and not already_refused:
            return refused, self.stop(REFUSED)
        return refused, []

    def clocks(self, statistics: Mapping[bytes, LinkStatistics]) -> list[Effect]:
        """The mesh's statistics, as `ReadClocks` asked: a far-off clock is told once per peer."""
        return self._notify(self.view.clock_warnings(statistics))

    def host_moved(self, host: bytes | None) -> list[Effect]:
        """The room moved (a takeover, or a split healing): HOST hosts it now. A peer that
        moves stops hosting, unless it took over (then HOST is us)."""
        self.hosting = host == self.view.me
        return self._notify(self.view.host_moved(host))

    def server_lost(self) -> list[Effect]:
        self.unreachable = True
        return [] if self.rejoin_refusal is not None else self._tell(UNREACHABLE)  # (said why)

    def server_back(self) -> list[Effect]:
        self.unreachable = False
        self.rejoin_refusal = None
        return self._tell(RECONNECTED)

    def rejoin_refused(self, code: str) -> list[Effect]:
        """The rendezvous refused to let us back into our room (issue 29, F4): not the end. The
        mesh's password MAC tells real members apart, so the peers we have stay; the signalling
        tries again later. The player hears it once for each new reason, not every retry."""
        if code == self.rejoin_refusal:
            return [Log(f"rejoin refused again: {code}")]
        self.rejoin_refusal = code
        why = REJOIN_WHY.get(code, REJOIN_WHY_ELSE)
        return self._tell(REJOIN_REFUSED.format(code=code, why=why, retry=REJOIN_RETRY))

    def server(self) -> str:
        """Where the room lives, in the player's words."""
        return self.view.server(hosting=self.hosting, unreachable=self.unreachable, url=self.url)

    # ---- the player ----------------------------------------------------------------------------

    def command(self, command: Command) -> list[Effect]:
        """A console command."""
        match command:
            case Command("say", text) if self._state is not None:
                return [SendChat(text)]
            case Command("peers"):
                return [ListPeers()]
            case Command("resync"):
                return self.resync()
            case Command("quit"):
                return self.stop("quit")
            case Command(_, text):
                return [Print(text or HELP)]
        return []  # pragma: no cover (every command matches the last case)

    def status(self, game: str, peers: tuple[PeerLine, ...]) -> Status:
        return Status(
            game=game,
            room=self.view.room or "?",
            server=self.server(),
            armed=self.gate.armed,
            waiting_for=tuple(self.gate.waiting_for()),
            peers=peers,
        )

    # ---- routing -------------------------------------------------------------------------------

    def _route(self, actions: Iterable[Action]) -> list[Effect]:
        """The gate's actions as effects: a `Check` probes, a `Tell` goes to the player."""
        effects: list[Effect] = []
        for action in actions:
            match action:
                case Check():
                    effects += self._probe()
                case Tell(text):
                    effects += self._tell(text)
                case Publish() | WriteToEmulator() | AdoptRoom():
                    effects.append(action)
        return effects

    def _notify(self, notices: Iterable[Notice]) -> list[Effect]:
        effects: list[Effect] = []
        for notice in notices:
            match notice:
                case Say(text):
                    effects += self._tell(text)
                case Note(text):
                    effects.append(Log(text))
        return effects

    def _tell(self, text: str) -> list[Effect]:
        """Tell the player: on the terminal, and on openMSX's screen once it runs."""
        return [Print(text)] if self.phase is Phase.STARTING else [Print(text), Show(text)]

    def _item_news(self, changes: Iterable[Run]) -> list[Effect]:
        """ "player2 found the key": only while our game shares (before, it is the room's state)."""
        state = self._state
        if state is None:
            return []

        def who(address: int) -> str:
            return self.view.name(writer_of(state, address))

        news = self.news.remote(changes, who, sharing=self.gate.armed)
        effects: list[Effect] = [Print(line) for line in news]
        if news:
            effects.append(Show("; ".join(news)))  # one message on screen, however many
        return effects

    def _counter_runs(self, firsts: Iterable[int] | None = None) -> list[Run]:
        return [] if self._state is None else counter_runs(self._state, firsts)
