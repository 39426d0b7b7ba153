"""The player's session: openMSX, the room, the disk and the terminal, wired in one place.

`Session.run()` opens (or attaches to) openMSX, joins the room, and then one `asyncio.TaskGroup`
owns every task of the session. The parts, each in its own module:
- `peer.emulator`: which openMSX, with which regions watched, and the controls msxsync adds (F10);
- `peer.core.emulator.gating.Gate` (pure): what may be published when, what the emulator must be given;
- `peer.applier.Applier`: everything written into openMSX, in order (typed commands);
- `peer.persistence.Persistence`: the room's durable state, saved from a worker thread;
- `peer.host_role.HostRole`: hosting, the LAN announcement, taking over from a gone host;
- `peer.core.room.view.RoomView` (pure): names, host, and the sentences worth telling the player;
- `peer.core.room.room_game.GameGuard` (pure): one ROM per room, each peer's hello judged;
- `peer.core.room.items.ItemNews` (pure): "player2 found the key";
- `peer.terminal.Terminal`: the status line and the console;
- `peer.mesh.room.RoomSession`: signalling, the replica and the WebRTC mesh.
This module routes events between them and carries out the parts' answers: the gate's actions
(`_act`) and the view's notices (`_notify`).

Flow of bytes: openMSX reports a check's changes (`LocalChanges`) → the gate → `Publish` through
the mesh; the mesh reports merged remote bytes (`BytesChanged`) → the gate → `WriteToEmulator`
through the applier; every merge that moved a stamp (`StateChanged`, `Published`) → persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from nacl.signing import SigningKey

from games.definition import GameDefinition
from peer.applier import Applier, ShowMessage
from peer.console import HELP, Command, PeerLine, Status, format_peers, safe_name
from peer.core.emulator.gating import Action, AdoptRoom, Check, Gate, Publish, Tell, WriteToEmulator
from peer.core.emulator.openmsx_protocol import ControlStreamError
from peer.core.mesh.events import PeerAdmitted, Published
from peer.core.room.items import ItemNews, counter_runs, writer_of
from peer.core.room.room_game import GameCheck, GameGuard, Platform
from peer.core.room.signalling import Roster
from peer.core.room.view import Note, Notice, RoomView, Say
from peer.core.sync.replica import BytesChanged, Event, FullStateReceived, Replica, StateChanged
from peer.core.sync.state import Layout, Run, SharedState
from peer.emulator import add_controls, arm_after, leave_emulator, open_emulator, platform, window_note
from peer.host_role import HostRole
from peer.mesh.mesh import Mesh
from peer.mesh.room import RoomSession
from peer.mesh.webrtc import IceOptions
from peer.openmsx import CommandError, Exited, LocalChanges, Logged, OpenMSXError, OpenMSXLink, Requested
from peer.options import PeerOptions, PlayerError
from peer.persistence import Persistence
from peer.terminal import Terminal
from rendezvous.stop_signals import on_signals

log = logging.getLogger("msxsync.peer")

JOIN_TIMEOUT = 20.0
ROOM_STATE_TIMEOUT = 10.0  # with others in the room but none reachable, play on with our own state
ARMING_POLL = 0.25
CLOCK_CHECK = 5.0


class Session:
    """One player in one room, from joining to leaving."""

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
        self.player = safe_name(options.name or os.environ.get("USER", "player"))
        self.gate = Gate(
            Layout(definition.regions), definition.armed_when, arm_after(options.arm_after, definition)
        )
        self.host_role = host_role
        self.persistence = Persistence(
            state_dir / "rooms.sqlite", game=definition.name, layout=self.gate.layout
        )
        self.terminal = Terminal(self.status, self._run_command)
        self.view = RoomView(self.me, self.player)
        self.news = ItemNews(definition.items, definition.counters)
        self.game_guard = GameGuard(
            platform(options, definition, rom_path), definition.title or definition.name, self.me
        )
        self.mesh: Mesh | None = None
        self.applier: Applier | None = None
        self._check_arming = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_reason = "quit"

    # ---- the whole session ---------------------------------------------------------------------

    async def run(self) -> str:
        try:
            async with open_emulator(self.options, self.definition, self.rom_path, self.state_dir) as link:
                self.applier = Applier(link, self.definition.regions, self.gate, self._replica, self._act)
                await add_controls(link, self.player)
                if (note := window_note(self.options, link.features)) is not None:
                    self.terminal.say(note)
                await self._check_arming_now(link)  # a game already in play (--attach) may never report
                try:
                    await self._play(link)
                finally:  # also when a part failed: nothing decided is left unsaved, F10 goes back
                    await self._save_last_changes()
                    await leave_emulator(link)
        except OpenMSXError as exc:
            raise PlayerError(f"openMSX failed: {exc}") from None
        finally:
            self.persistence.close()
        if self.game_guard.refusal is not None:
            raise PlayerError(self.game_guard.refusal)
        return self._stop_reason

    async def _play(self, link: OpenMSXLink) -> None:
        room = self._room()
        async with asyncio.TaskGroup() as tasks:
            self.mesh = await self._join(room, tasks)
            self.news.seen_in(self.mesh.replica.state)
            self.roster_changed(room.signalling.roster or self.view.roster)
            if self.host_role.hosting:
                await self.host_role.announce(self.definition.name, self.view.room)
            background = [
                tasks.create_task(self._watch_host(room)),
                tasks.create_task(self.persistence.run(self._state)),
                tasks.create_task(self._apply_loop()),
                tasks.create_task(self._arming_loop(link)),
                tasks.create_task(self.terminal.status_loop()),
                tasks.create_task(self._room_state_deadline()),
                tasks.create_task(self._clock_watch()),
            ]
            if sys.stdin.isatty():
                background.append(tasks.create_task(self.terminal.console_loop()))
            if self.options.quit_after is not None:
                background.append(tasks.create_task(self._quit_later(self.options.quit_after)))
            watcher = tasks.create_task(self._link_loop(link))
            await self._until_stopped()
            watcher.cancel()
            await room.leave(self._stop_reason)
            for task in background:
                task.cancel()

    async def _save_last_changes(self) -> None:
        try:
            await self.persistence.flush(self._state())
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
            rendezvous=self.url,
            tls=self.options.tls(),
            signing_key=self.key,
            name=self.player,
            game=self.definition.name,
            room=self.options.room,
            password=self.options.password,
            regions=self.definition.regions,
            ice=self._ice_options(),
            on_event=self._on_mesh_event,
            prepare=self._prepare_room,
            on_roster=self.roster_changed,
            standby=self.host_role.standby_url(),
            relay=self.options.relay,
            game_check=GameCheck(self.game_guard.mine, self._check_peer_game),
        )

    async def _until_stopped(self) -> None:
        with on_signals((signal.SIGINT, signal.SIGTERM), lambda _: self.stop("interrupted")):
            await self._stopped.wait()

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

    def _ice_options(self) -> IceOptions:
        options = self.options
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

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stopped.set()

    async def _quit_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.stop("time is up")

    def _replica(self) -> Replica | None:
        return self.mesh.replica if self.mesh is not None else None

    def _state(self) -> SharedState | None:
        return self.mesh.replica.state if self.mesh is not None else None

    # ---- hosting -------------------------------------------------------------------------------

    async def _watch_host(self, room: RoomSession) -> None:
        await self.host_role.watch(
            room,
            origin=self.url,
            roster=lambda: self.view.roster,
            admitted=lambda: self.mesh.admitted() if self.mesh is not None else set(),
            definition=self.definition,
            rom_path=self.rom_path,
            moved=lambda host: self._notify(self.view.host_moved(host)),
            tell=self._tell,
        )

    def _server(self) -> str:
        return self.view.server(
            hosting=self.host_role.hosting, unreachable=self.host_role.unreachable, url=self.url
        )

    # ---- the room: roster and mesh events ------------------------------------------------------

    def roster_changed(self, roster: Roster | None) -> None:
        if roster is None:
            return
        self._notify(self.view.roster_changed(roster, where=self._server))
        if self.mesh is not None and self.view.alone() and not self.gate.arming.room_ready:
            log.info("alone in the room: playing with the state saved on this machine")
            self._act(self.gate.room_is_ready())

    def _on_mesh_event(self, event: Event) -> None:
        self._notify(self.view.event(event, time.monotonic()))  # what it means to the player
        match event:
            case StateChanged():
                self.persistence.changed()
            case BytesChanged(_, changes, deltas):
                self.persistence.changed()
                self._act(self.gate.remote_changes(changes, deltas))
                self._item_news([*changes, *self._counter_runs(first for first, _ in deltas)])
            case FullStateReceived(peer, room_state) if room_state and not self.gate.arming.room_ready:
                log.info("got the room's state from %s", self.view.name(peer))
                self._act(self.gate.room_is_ready())
            case Published(runs, corrections, deltas):
                self.news.seen([*runs, *self._counter_runs()])
                self.persistence.changed()
                self._act(self.gate.remote_changes(corrections, deltas))  # the room's merge of ours
            case PeerAdmitted(peer):
                for line in self.game_guard.differences_to_tell(peer):  # "player2 plays a different ROM"
                    self._tell(line)

    def _check_peer_game(self, peer: bytes, theirs: Platform | None) -> str | None:
        """The binding's check of a peer's hello (see `peer.core.room.room_game`): None admits."""
        already_refused = self.game_guard.refusal is not None
        refused = self.game_guard.check(
            peer, theirs, first_member=self.view.first_member, name=self.view.name
        )
        if self.game_guard.refusal is not None and not already_refused:  # the room refused our game
            self.stop("refused: another game")
        return refused

    def _item_news(self, changes: Iterable[Run]) -> None:
        """ "player2 found the key": only while our game plays (before, it is the room's state)."""
        state = self._state()
        if state is None:
            return

        def who(address: int) -> str:
            return self.view.name(writer_of(state, address))

        news = self.news.remote(changes, who, sharing=self.gate.armed)
        for line in news:
            self.terminal.say(line)
        if news and self.applier is not None:
            self.applier.put(ShowMessage("; ".join(news)))  # one message on screen, however many

    def _counter_runs(self, firsts: Iterable[int] | None = None) -> list[Run]:
        state = self._state()
        return [] if state is None else counter_runs(state, firsts)

    # ---- openMSX events ------------------------------------------------------------------------

    async def _link_loop(self, link: OpenMSXLink) -> None:
        async for event in link.events():
            match event:
                case LocalChanges(changes, emutime, written_at, report, before, jumped):
                    self._act(self.gate.report(changes, emutime, written_at, report, before, jumped=jumped))
                case Requested("resync"):
                    self.resync()
                case Logged(level, text) if level in ("warning", "error") and "sequencer" not in text:
                    # ("Could not open sequencer" is ALSA without MIDI: harmless, and always there.)
                    log.info("openMSX %s: %s", level, text)
                case Exited(reason, tail):
                    log.warning("openMSX went away: %s%s", reason, f"\n{tail}" if tail else "")
                    self.stop(f"openMSX went away: {reason}")
                    return

    # ---- the gate's actions --------------------------------------------------------------------

    def _act(self, actions: Iterable[Action]) -> None:
        for action in actions:
            match action:
                case Publish(runs, written_at, deltas) if self.mesh is not None:
                    self.mesh.local_changes(runs, written_at, deltas)  # comes back as `Published`
                case WriteToEmulator() | AdoptRoom() if self.applier is not None:
                    self.applier.put(action)
                case Check():
                    self._check_arming.set()
                case Tell(text):
                    self._tell(text)

    async def _check_arming_now(self, link: OpenMSXLink) -> None:
        """Judge arming on what the running emulator says now (never on a report alone). An
        answer we cannot read, or a refusal of a still running openMSX, waits for the next poll."""
        try:
            probe = await link.probe(self.gate.watched)
        except (ControlStreamError, CommandError) as exc:
            log.warning("could not check openMSX's state for arming (will try again): %s", exc)
            return
        self._act(self.gate.probed(probe.memory, probe.emutime, probe.last_report))

    async def _arming_loop(self, link: OpenMSXLink) -> None:
        """While disarmed, check the emulator when asked to, and every ARMING_POLL (for --arm-after)."""
        while True:
            with contextlib.suppress(TimeoutError):  # (not wait_for: it may swallow a cancel on 3.11)
                async with asyncio.timeout(ARMING_POLL):
                    await self._check_arming.wait()
            self._check_arming.clear()
            if not self.gate.armed:
                await self._check_arming_now(link)

    async def _clock_watch(self) -> None:
        """Tell the player once per peer when the two clocks are far apart (`RoomView.clock_warnings`)."""
        while True:
            await asyncio.sleep(CLOCK_CHECK)
            if self.mesh is not None:
                self._notify(self.view.clock_warnings(self.mesh.statistics()))

    async def _room_state_deadline(self) -> None:
        await asyncio.sleep(ROOM_STATE_TIMEOUT)
        if not self.gate.arming.room_ready:
            log.warning(
                "no other player answered within %.0f s: playing with this machine's saved state",
                ROOM_STATE_TIMEOUT,
            )
            self._act(self.gate.room_is_ready())

    async def _apply_loop(self) -> None:
        if self.applier is None:
            return
        try:
            await self.applier.run()
        except OpenMSXError as exc:  # openMSX went away mid-command: the session is over
            self.stop(f"openMSX went away: {exc}")

    def resync(self) -> None:
        """Manual resync: ask every peer for its full state and re-adopt the room's bytes."""
        if self.mesh is not None:
            self.mesh.request_resync()
        if not self.gate.armed:  # armed, the adoption's outcome says it (one message)
            self._tell("resync: asked the room again (your game is not sharing yet)")
        self._act(self.gate.resync())

    # ---- what the player sees and types --------------------------------------------------------

    def _notify(self, notices: Iterable[Notice]) -> None:
        for notice in notices:
            match notice:
                case Say(text):
                    self._tell(text)
                case Note(text):
                    log.info("%s", text)

    def _tell(self, text: str) -> None:
        """Tell the player, on the terminal and on openMSX's screen (in order with the applies)."""
        self.terminal.say(text)
        if self.applier is not None:
            self.applier.put(ShowMessage(text))

    def status(self) -> Status:
        return Status(
            game=self.definition.title or self.definition.name,
            room=self.view.room or "?",
            server=self._server(),
            armed=self.gate.armed,
            waiting_for=tuple(self.gate.waiting_for()),
            peers=self._peer_lines(),
        )

    def _peer_lines(self) -> tuple[PeerLine, ...]:
        if self.mesh is None:
            return ()
        return self.view.peer_lines(self.mesh.statistics(), self.mesh.admitted(), time.monotonic())

    def _run_command(self, command: Command) -> None:
        match command:
            case Command("say", text) if self.mesh is not None:
                try:
                    self.mesh.send_chat(text)
                except ValueError:
                    self.terminal.say("msxsync: that message is too long")
                else:
                    self.terminal.say(f"{self.player} (you): {safe_name(text, 200)}")
            case Command("peers"):
                self.terminal.lines(format_peers(self._peer_lines()))
            case Command("resync"):
                self.resync()
            case Command("quit"):
                self.stop("quit")
            case Command(_, text):
                self.terminal.say(text or HELP)
