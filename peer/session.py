"""The player's session: openMSX, the room, the disk and the terminal, wired in one place.

`Session.run()` opens (or attaches to) openMSX, joins the room, and then one `asyncio.TaskGroup`
owns every task of the session. The session's rules are one pure machine,
`peer.core.room.session.SessionMachine` (phases, the one timer, what each event means and where
its answer goes); `Session` is its driver: it feeds the machine every input, as it happens, with
monotonic time (`_now`), keeps one timer task sleeping until the machine's `get_timer()`, and has
`Parts` carry out the effects (`Parts.feed`, which re-arms that timer). The parts, each in its own
module:
- `peer.emulator`: which openMSX, with which regions watched, and the controls msxsync adds (F10);
- `peer.core.emulator.gating.Gate` (pure, in the machine): what may be published when;
- `peer.applier.Applier`: everything written into openMSX, in order (typed commands);
- `peer.persistence.Persistence`: the room's durable state, saved from a worker thread;
- `peer.host_role.HostRole`: hosting, the LAN announcement, taking over from a gone host;
- `peer.core.room.view.RoomView`, `.room_game.GameGuard`, `.items.ItemNews` (pure, in the machine);
- `peer.terminal.Terminal`: the status line and the console;
- `peer.mesh.room.RoomSession`: signalling, the replica and the WebRTC mesh.

Flow of bytes: openMSX reports a check's changes (`LocalChanges`) → the machine's gate → `Publish`
through the mesh; the mesh reports merged remote bytes (`BytesChanged`) → `WriteToEmulator` through
the applier; every merge that moved a stamp (`StateChanged`, `Published`) → persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from nacl.signing import SigningKey

from games.definition import GameDefinition
from peer.applier import Applier, ShowMessage
from peer.console import Command, PeerLine, Status, chat_line, format_peers
from peer.core.emulator.gating import Action, AdoptRoom, Gate, Publish, WriteToEmulator
from peer.core.emulator.openmsx_protocol import ControlStreamError
from peer.core.room.host_watch import Moved, News, ServerBack, ServerLost
from peer.core.room.items import ItemNews
from peer.core.room.room_game import GameCheck, GameGuard, Platform
from peer.core.room.session import (
    Effect,
    ListPeers,
    Log,
    Print,
    ProbeEmulator,
    ReadClocks,
    RequestResync,
    SaveSoon,
    SendChat,
    SessionMachine,
    Show,
    Stop,
)
from peer.core.room.signalling import Roster
from peer.core.room.view import RoomView
from peer.core.sync.replica import Event, Replica
from peer.core.sync.state import Layout, SharedState
from peer.emulator import add_controls, arm_after, leave_emulator, open_emulator, platform, window_note
from peer.host_role import HostRole
from peer.mesh.mesh import Mesh
from peer.mesh.room import RoomConfig, RoomSession
from peer.mesh.webrtc import IceOptions
from peer.openmsx import CommandError, Exited, LocalChanges, Logged, OpenMSXError, OpenMSXLink, Requested
from peer.options import PeerOptions, PlayerError
from peer.persistence import Persistence
from peer.terminal import Terminal
from rendezvous.stop_signals import on_signals

log = logging.getLogger("msxsync.peer")

JOIN_TIMEOUT = 20.0


class Session:
    """One player in one room, from joining to leaving: the driver of a `SessionMachine`."""

    def __init__(
        self,
        options: PeerOptions,
        key: SigningKey,
        definition: GameDefinition,
        rom_path: Path,
        url: str,
        state_dir: Path,
        host_role: HostRole,
    ) -> None:
        self.options = options
        self.key = key
        self.me = bytes(key.verify_key)
        self.definition = definition
        self.rom_path = rom_path
        self.url = url
        self.state_dir = state_dir
        self.player = host_role.player
        self.host_role = host_role
        self.room_config = room_config(options, key, self.player, definition, url, host_role.standby_url())
        self.machine = new_machine(
            options, definition, rom_path, url, me=self.me, player=self.player, hosting=host_role.hosting
        )
        self.gate = self.machine.gate
        self.persistence = Persistence(
            state_dir / "rooms.sqlite", game=definition.name, layout=self.gate.layout
        )
        self.terminal = Terminal(self.status, self._run_command)
        self.parts = Parts(self.machine, self.terminal, self.persistence, self.player)

    # ---- the whole session ---------------------------------------------------------------------

    async def run(self) -> str:
        try:
            async with open_emulator(self.options, self.definition, self.rom_path, self.state_dir) as link:
                self.parts.applier = Applier(
                    link,
                    self.definition.regions,
                    self.gate,
                    self.parts.replica,
                    self._gate_actions,
                    self.parts.unpublished,
                )
                await add_controls(link, self.player)
                if (note := window_note(self.options, link.features)) is not None:
                    self.terminal.say(note)
                self.parts.feed(self.machine.emulator_ready(_now()))
                await self._answer_probe(link)  # before joining, as a failure there ends the start
                try:
                    await self._play(link)
                finally:  # also when a part failed: nothing decided is left unsaved, F10 goes back
                    await self._save_last_changes()
                    await leave_emulator(link)
        except OpenMSXError as exc:
            raise PlayerError(f"openMSX failed: {exc}") from None
        finally:
            self.persistence.close()
        if self.machine.guard.refusal is not None:
            raise PlayerError(self.machine.guard.refusal)
        return self.machine.stop_reason

    async def _play(self, link: OpenMSXLink) -> None:
        room = self._room()
        async with asyncio.TaskGroup() as tasks:
            background = [
                tasks.create_task(self._timer_loop()),
                tasks.create_task(self._probe_loop(link)),
                tasks.create_task(self._apply_loop()),
            ]
            self.parts.mesh = mesh = await self._join(room, tasks)
            self.parts.feed(self.machine.joined(mesh.replica.state, room.signalling.roster, _now()))
            if self.host_role.hosting:
                await self.host_role.announce(self.definition.name, self.machine.view.room)
            background += [
                tasks.create_task(self._watch_host(room)),
                tasks.create_task(self.persistence.run(self.parts.state)),
                tasks.create_task(self.terminal.status_loop()),
            ]
            if sys.stdin.isatty():
                background.append(tasks.create_task(self.terminal.console_loop()))
            watcher = tasks.create_task(self._link_loop(link))
            await self._until_stopped()
            watcher.cancel()
            await room.leave(self.machine.stop_reason)
            for task in background:
                task.cancel()

    async def _save_last_changes(self) -> None:
        try:
            await self.persistence.flush(self.parts.state())
        except Exception as exc:  # ending anyway: say so, and let the first failure be the one raised
            log.error("could not save the room's last changes: %s", exc)

    async def _join(self, room: RoomSession, tasks: asyncio.TaskGroup) -> Mesh:
        """Join within JOIN_TIMEOUT (a refusal ends TASKS with SignallingRefused, for `run_peer`)."""
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                return await room.join(tasks)
        except TimeoutError:
            raise PlayerError(
                f"could not reach the rendezvous at {self.url} within {JOIN_TIMEOUT:.0f} s; "
                "check --rendezvous."
            ) from None

    def _room(self) -> RoomSession:
        return RoomSession(
            self.room_config,
            on_event=self._on_mesh_event,
            prepare=self._prepare_room,
            on_roster=self.roster_changed,
            game_check=GameCheck(self.machine.guard.mine, self._check_peer_game),
            on_rejoin_refused=self._rejoin_refused,
        )

    async def _until_stopped(self) -> None:
        with on_signals((signal.SIGINT, signal.SIGTERM), lambda _: self.stop("interrupted")):
            await self.parts.stopped.wait()

    async def _prepare_room(self, roster: Roster) -> tuple[SharedState, int]:
        """Open this room's durable state (once its name is known) and take a session number."""
        state, session = await self.persistence.open(roster.room)
        log.info(
            "joined room %r of %s as %s (session %d)",
            roster.room,
            self.definition.name,
            self.me.hex()[:8],
            session,
        )
        return state, session

    # ---- inputs: everything the machine hears comes through here -------------------------------

    def stop(self, reason: str) -> None:
        self.parts.feed(self.machine.stop(reason))

    def resync(self) -> None:
        """Manual resync: ask every peer for its full state and re-adopt the room's bytes."""
        self.parts.feed(self.machine.resync())

    def roster_changed(self, roster: Roster | None) -> None:
        if roster is not None:
            self.parts.feed(self.machine.roster(roster, _now()))

    def _rejoin_refused(self, code: str, message: str) -> None:
        self.parts.feed(self.machine.rejoin_refused(code))

    def _on_mesh_event(self, event: Event) -> None:
        self.parts.feed(self.machine.mesh_event(event, _now()))

    def _check_peer_game(self, peer: bytes, theirs: Platform | None) -> str | None:
        """The binding's check of a peer's hello (see `peer.core.room.room_game`): None admits."""
        refused, effects = self.machine.check_game(peer, theirs, _now())
        self.parts.feed(effects)
        return refused

    def _gate_actions(self, actions: list[Action]) -> None:
        self.parts.feed(self.machine.gate_actions(actions))  # the applier's adoption ended

    def _host_news(self, news: News) -> None:
        match news:
            case ServerLost():
                self.parts.feed(self.machine.server_lost())
            case ServerBack():
                self.parts.feed(self.machine.server_back())
            case Moved(host):
                self.parts.feed(self.machine.host_moved(host))

    def _run_command(self, command: Command) -> None:
        self.parts.feed(self.machine.command(command))

    async def _link_loop(self, link: OpenMSXLink) -> None:
        async for event in link.events():
            match event:
                case LocalChanges(changes, emutime, written_at, report, before, jumped):
                    self.parts.feed(
                        self.machine.report(changes, emutime, written_at, report, before, jumped=jumped)
                    )
                    self.parts.the_applier().reported(report)  # (merged above)
                case Requested("resync"):
                    self.resync()
                case Logged(level, text) if level in ("warning", "error") and "sequencer" not in text:
                    # ("Could not open sequencer" is ALSA without MIDI: harmless, and always there.)
                    log.info("openMSX %s: %s", level, text)
                case Exited(reason, tail):
                    log.warning("openMSX went away: %s%s", reason, f"\n{tail}" if tail else "")
                    self.stop(f"openMSX went away: {reason}")
                    return

    async def _timer_loop(self) -> None:
        """The machine's one timer: sleep until `get_timer()` (re-armed by every input)."""
        while True:
            self.parts.rearm.clear()
            deadline = self.machine.get_timer()
            delay = None if deadline is None else max(0.0, deadline - _now())
            with contextlib.suppress(TimeoutError):  # (not wait_for: it may swallow a cancel on 3.11)
                async with asyncio.timeout(delay):
                    await self.parts.rearm.wait()
            self.parts.feed(self.machine.handle_timer(_now()))

    async def _probe_loop(self, link: OpenMSXLink) -> None:
        while True:
            await self._answer_probe(link)

    async def _answer_probe(self, link: OpenMSXLink) -> None:
        """Once the machine asks (`ProbeEmulator`), read the emulator and tell it what it says. An
        answer we cannot read, or a refusal of a still running openMSX, is tried again later."""
        await self.parts.probe_wanted.wait()
        self.parts.probe_wanted.clear()
        try:
            probe = await link.probe(self.gate.watched)
        except (ControlStreamError, CommandError) as exc:
            self.parts.feed(self.machine.probe_failed(str(exc), _now()))
        else:
            self.parts.feed(self.machine.probed(probe.memory, probe.emutime, probe.last_report, _now()))

    async def _apply_loop(self) -> None:
        try:
            await self.parts.the_applier().run()
        except OpenMSXError as exc:  # openMSX went away mid-command: the session is over
            self.stop(f"openMSX went away: {exc}")

    async def _watch_host(self, room: RoomSession) -> None:
        await self.host_role.watch(
            room,
            origin=self.url,
            definition=self.definition,
            rom_path=self.rom_path,
            news=self._host_news,
        )

    # ---- what the player sees ------------------------------------------------------------------

    def status(self) -> Status:
        return self.machine.status(self.definition.title or self.definition.name, self.parts.peer_lines())


class Parts:
    """Where the machine's effects are carried out (`feed`): the mesh (once joined), the applier
    (once openMSX runs), the terminal, persistence, and the session's wake-ups."""

    def __init__(
        self, machine: SessionMachine, terminal: Terminal, persistence: Persistence, player: str
    ) -> None:
        self.machine = machine
        self.terminal = terminal
        self.persistence = persistence
        self.player = player
        self.mesh: Mesh | None = None
        self.applier: Applier | None = None
        self.probe_wanted = asyncio.Event()  # the prober reads openMSX when set
        self.rearm = asyncio.Event()  # the machine's timer may have moved
        self.stopped = asyncio.Event()

    def feed(self, effects: Iterable[Effect]) -> None:
        """Carry out the machine's answer to one input, then re-arm its timer."""
        for effect in effects:
            self.carry_out(effect)
        self.rearm.set()

    def carry_out(self, effect: Effect) -> None:
        match effect:
            case Publish(runs, written_at, deltas):
                self.the_mesh().local_changes(runs, written_at, deltas)  # comes back as `Published`
            case WriteToEmulator() | AdoptRoom():
                self.the_applier().put(effect)
            case Show(text):
                self.the_applier().put(ShowMessage(text))
            case Print(text):
                self.terminal.say(text)
            case Log(text, warning):
                log.log(logging.WARNING if warning else logging.INFO, "%s", text)
            case ProbeEmulator():
                self.probe_wanted.set()
            case RequestResync():
                self.the_mesh().request_resync()
            case SaveSoon():
                self.persistence.changed()
            case ReadClocks():
                self.feed(self.machine.clocks(self.the_mesh().statistics()))
            case SendChat(text):
                self._send_chat(text)
            case ListPeers():
                self.terminal.lines(format_peers(self.peer_lines()))
            case Stop():
                self.stopped.set()

    def replica(self) -> Replica | None:
        return self.mesh.replica if self.mesh is not None else None

    def unpublished(self) -> dict[int, int]:
        return self.mesh.core.unpublished() if self.mesh is not None else {}

    def state(self) -> SharedState | None:
        return self.mesh.replica.state if self.mesh is not None else None

    def peer_lines(self) -> tuple[PeerLine, ...]:
        if self.mesh is None:
            return ()
        return self.machine.view.peer_lines(self.mesh.statistics(), self.mesh.admitted(), _now())

    def the_mesh(self) -> Mesh:
        """The mesh, which the machine only asks for once joined (else a bug of ours)."""
        if self.mesh is None:
            raise RuntimeError("the session machine used the mesh before joining")
        return self.mesh

    def the_applier(self) -> Applier:
        if self.applier is None:
            raise RuntimeError("the session machine used openMSX before it ran")
        return self.applier

    def _send_chat(self, text: str) -> None:
        try:
            self.the_mesh().send_chat(text)
        except ValueError:
            self.terminal.say("msxsync: that message is too long")
        else:
            self.terminal.say(chat_line(self.player, "you", text))


def new_machine(
    options: PeerOptions,
    definition: GameDefinition,
    rom_path: Path,
    url: str,
    *,
    me: bytes,
    player: str,
    hosting: bool,
) -> SessionMachine:
    """The session's machine for this game and these options."""
    title = definition.title or definition.name
    return SessionMachine(
        gate=Gate(
            Layout(definition.regions), definition.armed_when, arm_after(options.arm_after, definition)
        ),
        news=ItemNews(definition.items, definition.counters),
        guard=GameGuard(
            platform(options, definition, rom_path), title, me, known_dumps(options, definition, rom_path)
        ),
        view=RoomView(me, player),
        url=url,
        hosting=hosting,
        quit_after=options.quit_after,
    )


def known_dumps(options: PeerOptions, definition: GameDefinition, rom_path: Path) -> frozenset[bytes]:
    """The game's dumps the room's word is checked against: the definition's listed SHA-1s, and
    our ROM when the rendezvous served it (no --rom)."""
    known = {bytes.fromhex(rom.sha1) for rom in definition.known_roms}
    if options.rom is None:
        known.add(platform(options, definition, rom_path).rom)
    return frozenset(known)


def room_config(
    options: PeerOptions, key: SigningKey, player: str, definition: GameDefinition, url: str, standby: str
) -> RoomConfig:
    """How this player joins the room, from the options (built once per session)."""
    return RoomConfig(
        rendezvous=url,
        signing_key=key,
        name=player,
        game=definition.name,
        regions=tuple(definition.regions),
        room=options.room,
        password=options.password,
        ice=ice_options(options),
        relay=options.relay,
        standby=standby,
        tls=options.tls(),
    )


def ice_options(options: PeerOptions) -> IceOptions:
    """The ICE servers and addresses the player asked for."""
    try:
        return IceOptions(
            stun=options.stun,
            turn=options.turn,
            turn_user=options.turn_user,
            turn_password=options.turn_password,
            host_addresses=options.ice_addresses or None,
            use_rendezvous=options.rendezvous_ice,
        )
    except ValueError as exc:
        raise PlayerError(f"{exc}; see --help for the STUN/TURN URL forms.") from None


def _now() -> float:
    """The machine's time: monotonic seconds (never the wall clock, which a player may set)."""
    return time.monotonic()
