"""The player's session: openMSX, the room, the disk and the terminal, wired in one place.

`Session.run()` opens (or attaches to) openMSX, joins the room, and then one `asyncio.TaskGroup`
owns every task of the session. The parts, each in its own module:
- `peer.core.gating.Gate` (pure): what may be published when, what the emulator must be given;
- `peer.applier.Applier`: everything written into openMSX, in order (typed commands);
- `peer.persistence.Persistence`: the room's durable state, saved from a worker thread;
- `peer.host_role.HostRole`: hosting, the LAN announcement, taking over from a gone host;
- `peer.terminal.Terminal`: the status line and the console;
- `peer.mesh.room.RoomSession`: signalling, the replica and the WebRTC mesh.
This module routes events between them and carries out the gate's actions (`_act`).

Flow of bytes: openMSX reports a check's changes (`LocalChanges`) → the gate → `Publish` through
the mesh; the mesh reports merged remote bytes (`BytesChanged`) → the gate → `WriteToEmulator`
through the applier; every merge that moved a stamp (`StateChanged`, `Published`) → persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from nacl.signing import SigningKey

from games.definition import GameDefinition, Region
from peer.applier import Applier, ShowMessage
from peer.console import HELP, Command, PeerLine, Status, format_peers, safe_name, server_words
from peer.core.clock import clocks_far_apart
from peer.core.gating import Action, AdoptRoom, Check, Gate, Publish, Tell, WriteToEmulator
from peer.core.items import ItemNews
from peer.core.openmsx_protocol import REMEMBER_SHOWN, label_command, unlabel_command
from peer.core.paths import Path as LinkPath
from peer.core.replica import (
    BytesChanged,
    ChatReceived,
    Event,
    FullStateReceived,
    Repaired,
    Replica,
    RosterDiffers,
    StateChanged,
)
from peer.core.room_game import Admit, GameCheck, Platform, Refuse, judge, refusal_sentence
from peer.core.state import Layout, SharedState
from peer.host_role import HostRole
from peer.mesh.events import LinkLost, PathChanged, PeerAdmitted, PeerRefused, Published
from peer.mesh.mesh import Mesh
from peer.mesh.room import RoomSession
from peer.mesh.signalling import Roster
from peer.mesh.webrtc import IceOptions
from peer.openmsx import Exited, LocalChanges, Logged, OpenMSXError, OpenMSXLink
from peer.options import PeerOptions, PlayerError
from peer.persistence import Persistence
from peer.terminal import Terminal

log = logging.getLogger("msxsync.peer")

DEFAULT_MACHINE = "C-BIOS_MSX2+"
JOIN_TIMEOUT = 20.0
# Emulated seconds before a game without an armed-when rule may publish: past the BIOS logo
# (C-BIOS about 5 s, real MSX BIOSes less) and the cartridge's start, which clears its RAM.
BOOT_ARM_AFTER = 10.0
ROOM_STATE_TIMEOUT = 10.0  # with others in the room but none reachable, play on with our own state
ARMING_POLL = 0.25
CLOCK_CHECK = 5.0
RESYNC_MESSAGE = "resync: asking the other players"
RESYNC_KEY = "F10"
# In a layer of our own: it wins over the default F10 binding while active, and leaving
# deactivates it, so an attached openMSX gets its own F10 back. Its message is the one on screen
# until the resync's outcome replaces it (see `message_command`).
_BIND = (
    f'bind -layer msxsync {RESYNC_KEY} {{message "{RESYNC_MESSAGE}" info; {REMEMBER_SHOWN}}}; '
    "activate_input_layer msxsync"
)
_UNBIND = f"deactivate_input_layer msxsync; unbind -layer msxsync {RESYNC_KEY}; {unlabel_command()}"


def arm_after(given: float | None, definition: GameDefinition) -> float | None:
    """--arm-after, or for a game without an armed-when rule BOOT_ARM_AFTER: without either, a
    late joiner would arm before its cartridge boots and publish the boot's clear of its RAM."""
    if given is not None or definition.armed_when is not None:
        return given
    return BOOT_ARM_AFTER


def platform(options: PeerOptions, definition: GameDefinition, rom_path: Path) -> Platform:
    """What this player's game runs (the hello's): the ROM's SHA-1, and the machine when the
    definition names one (then a --machine that differs counts as another game)."""
    machine = (options.machine or definition.machine or "") if definition.machine else ""
    return Platform(hashlib.sha1(rom_path.read_bytes()).digest(), machine, options.force_rom)


def watched_regions(definition: GameDefinition) -> list[Region]:
    """The shared regions plus the armed-when bytes outside them (arming must see those)."""
    extra = []
    if definition.armed_when is not None:
        extra = [Region(a, a) for a in definition.armed_when.addresses if not definition.is_shared(a)]
    return [*definition.regions, *extra]


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
        self.relay_told: set[bytes] = set()  # players we said can only be reached via the relay
        self.news = ItemNews(definition.items, definition.counters)
        self.last_change: dict[bytes, float] = {}  # when each player's last change reached us
        self.names: dict[bytes, str] = {}
        self.known_names: dict[bytes, str] = {}  # everyone ever in the room (a split drops them)
        self.standby: dict[bytes, str | None] = {}
        self.host_key: bytes | None = None
        self.roster: Roster | None = None
        self.mesh: Mesh | None = None
        self.applier: Applier | None = None
        self.platform = platform(options, definition, rom_path)
        self._different: dict[bytes, str] = {}  # admitted peers of another ROM or machine: whose, what
        self._told_different: set[bytes] = set()
        self._refusal: str | None = None  # the room refused our game: the sentence to end with
        self._check_arming = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_reason = "quit"

    # ---- the whole session ---------------------------------------------------------------------

    async def run(self) -> str:
        try:
            async with self._open_link() as link:
                self.applier = Applier(link, self.definition.regions, self.gate, self._replica, self._act)
                await self._install_key_binding(link)
                with contextlib.suppress(OpenMSXError):  # two windows side by side: whose is whose
                    await link.command(label_command(f"you are {self.player}"))
                await self._check_arming_now(link)  # a game already in play (--attach) may never report
                await self._play(link)
        except OpenMSXError as exc:
            raise PlayerError(f"openMSX failed: {exc}") from None
        finally:
            self.persistence.close()
        if self._refusal is not None:
            raise PlayerError(self._refusal)
        return self._stop_reason

    def _open_link(self) -> contextlib.AbstractAsyncContextManager[OpenMSXLink]:
        options, regions = self.options, watched_regions(self.definition)
        if options.attach is not None:
            return OpenMSXLink.attach(regions, pid=options.attach or None)
        return OpenMSXLink.launch(
            regions,
            home=self.state_dir / "openmsx-home",
            machine=options.machine or self.definition.machine or DEFAULT_MACHINE,
            cartridge=self.rom_path,
            romtype=self.definition.romtype,
            openmsx=options.openmsx,
            scripts=[Path(script) for script in options.openmsx_scripts],
            headless=options.headless,
        )

    async def _play(self, link: OpenMSXLink) -> None:
        room = self._room()
        async with asyncio.TaskGroup() as tasks:
            self.mesh = await self._join(room, tasks)
            self.news.seen(self._named_values())
            self.roster_changed(room.signalling.roster or self.roster)
            if self.host_role.hosting:
                await self.host_role.announce(self.definition.name, self.roster.room if self.roster else None)
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
            await self._leave(link, background)

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
            game_check=GameCheck(self.platform, self._check_peer_game),
        )

    async def _until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, self.stop, "interrupted")
        try:
            await self._stopped.wait()
        finally:
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signal_number)

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

    async def _leave(self, link: OpenMSXLink, background: Iterable[asyncio.Task[object]]) -> None:
        await self.persistence.flush(self._state())
        for task in background:
            task.cancel()
        with contextlib.suppress(OpenMSXError):
            await link.show_message("you left the room")
            await link.command(_UNBIND)  # an attached openMSX plays on, F10 as before

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
            roster=lambda: self.roster,
            admitted=lambda: self.mesh.admitted() if self.mesh is not None else set(),
            definition=self.definition,
            rom_path=self.rom_path,
            moved=self._host_moved,
            tell=self._tell,
        )

    def _host_moved(self, host: bytes | None) -> None:
        if host is None or host == self.host_key:
            return
        self.host_key = host
        self._tell("you now host the room" if host == self.me else f"{self._name(host)} now hosts the room")

    # ---- the room: roster and mesh events ------------------------------------------------------

    def roster_changed(self, roster: Roster | None) -> None:
        if roster is None:
            return
        previous, first = self.names, self.roster is None
        self.roster = roster
        self.names = {member.key: safe_name(member.name) for member in roster.members}
        self.known_names.update(self.names)
        self.standby = {member.key: member.standby for member in roster.members}
        if self.host_key != roster.host and roster.host in self.names:
            self.host_key = roster.host
            if first:
                self._tell(f"you are {self.player}, in room {roster.room} ({self._server()})")
            else:
                log.info("the room's first member is now %s", self._name(roster.host))
        for key in set(previous) - set(self.names):
            self._tell(f"{previous[key]} left")
        if self.mesh is not None and set(roster.keys) <= {self.me} and not self.gate.arming.room_ready:
            log.info("alone in the room: playing with the state saved on this machine")
            self._act(self.gate.room_is_ready())

    def _on_mesh_event(self, event: Event) -> None:
        match event:
            case StateChanged():
                self.persistence.changed()
            case BytesChanged(peer, changes, deltas):
                self.last_change[peer] = time.monotonic()
                self.persistence.changed()
                self._act(self.gate.remote_changes(changes, deltas))
                self._item_news([*changes, *self._counter_runs(first for first, _ in deltas)])
            case FullStateReceived(peer, room_state):
                if room_state and not self.gate.arming.room_ready:
                    log.info("got the room's state from %s", self._name(peer))
                    self._act(self.gate.room_is_ready())
            case Published(runs, corrections, deltas):
                self.news.seen([*runs, *self._counter_runs()])
                self.persistence.changed()
                self._act(self.gate.remote_changes(corrections, deltas))  # the room's merge of ours
            case PeerAdmitted(peer):
                self._tell(f"{self._name(peer)} joined")
                self._tell_different(peer)
            case PeerRefused(peer, "different-game", detail):
                log.info("not sharing with %s: it %s", self._name(peer), detail)
            case LinkLost(peer, reason):
                log.info("connection to %s lost: %s", self._name(peer), reason)
            case PathChanged(peer, LinkPath.RELAYED) if peer not in self.relay_told:
                self.relay_told.add(peer)  # once per player and session: it is news, not noise
                self._tell(f"{self._name(peer)} can only be reached through the server's relay")
            case ChatReceived(peer, text):
                self._tell(f"{self._name(peer)}: {safe_name(text, 200)}")
            case Repaired(peer):
                log.info("repaired differences with %s", self._name(peer))
            case RosterDiffers(peer, agree):
                if agree:
                    self._tell(f"{self._name(peer)} and you see the same players again")
                else:
                    self._tell(
                        f"{self._name(peer)} sees other players than you: the server may split the room"
                    )

    def _check_peer_game(self, peer: bytes, theirs: Platform | None) -> str | None:
        """The binding's check of a peer's hello (see `peer.core.room_game`): None admits."""
        if theirs is None:
            return "named no game in its hello"
        host = self.roster.host if self.roster is not None else None
        verdict = judge(self.platform, theirs, i_started=host == self.me, they_started=host == peer)
        match verdict:
            case Refuse(detail, fatal=True):
                game = self.definition.title or self.definition.name
                self._refusal = refusal_sentence(game, theirs, self.platform)
                self.stop("refused: another game")
                return detail
            case Refuse(detail):
                return detail
            case Admit(they_differ=True, what=what):
                self._different[peer] = f"{self._name(peer)} plays a different {what}"
            case Admit(i_differ=True, what=what):
                self._different[self.me] = f"{self.player} (you) plays a different {what}"
        return None

    def _tell_different(self, peer: bytes) -> None:
        """Once per player: "player2 plays a different ROM" (a --force-rom player was admitted)."""
        for who in (peer, self.me):
            if who in self._different and who not in self._told_different:
                self._told_different.add(who)
                self._tell(self._different[who])

    def _name(self, key: bytes) -> str:
        return self.names.get(key) or self.known_names.get(key, key.hex()[:8])

    def _item_news(self, changes: Iterable[tuple[int, bytes]]) -> None:
        """ "player2 found the key": only while our game plays (before, it is the room's state)."""
        if not self.gate.armed:
            self.news.seen(changes)
            return
        news = self.news.remote(changes, self._writer_name)
        for line in news:
            self.terminal.say(line)
        if news and self.applier is not None:
            self.applier.put(ShowMessage("; ".join(news)))  # one message on screen, however many

    def _counter_runs(self, firsts: Iterable[int] | None = None) -> list[tuple[int, bytes]]:
        """The bytes counters (`add` regions) show now (all of them, or those at FIRSTS): they
        change by deltas, never in a `BytesChanged` run."""
        state = self._state()
        if state is None:
            return []
        counters = state.layout.counters
        wanted = counters if firsts is None else firsts
        return [(first, state.read(first, counters[first].width)) for first in wanted]

    def _writer_name(self, address: int) -> str:
        state = self._state()
        if state is None:
            return "someone"
        return self._name(state.writers[state.layout.index(address)])

    def _named_values(self) -> list[tuple[int, bytes]]:
        state = self._state()
        if state is None:
            return []
        return [(address, state.read(address)) for address in sorted(self.news.addresses)]

    def _server(self) -> str:
        if self.host_role.unreachable:
            return "server unreachable, retrying"
        host = self.host_key
        return server_words(
            hosting=self.host_role.hosting,
            host_name=self._name(host) if host is not None else None,
            host_standby=self.standby.get(host) if host is not None else None,
            url=self.url,
        )

    # ---- openMSX events ------------------------------------------------------------------------

    async def _link_loop(self, link: OpenMSXLink) -> None:
        async for event in link.events():
            match event:
                case LocalChanges(changes, emutime, written_at, report, before, jumped):
                    self._act(self.gate.report(changes, emutime, written_at, report, before, jumped=jumped))
                case Logged(_, text) if text.strip() == RESYNC_MESSAGE:
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
        """Judge arming on what the running emulator says now (never on a report alone)."""
        probe = await link.probe(self.gate.watched)
        self._act(self.gate.probed(probe.memory, probe.emutime, probe.last_report))

    async def _arming_loop(self, link: OpenMSXLink) -> None:
        """While disarmed, check the emulator when asked to, and every ARMING_POLL (for --arm-after)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_arming.wait(), ARMING_POLL)
            self._check_arming.clear()
            if not self.gate.armed:
                await self._check_arming_now(link)

    async def _clock_watch(self) -> None:
        """Tell the player once per peer when the two clocks are far apart: writes stamped more
        than the clock bound ahead of a receiver's clock are refused there (`peer.core.clock`)."""
        told: set[bytes] = set()
        while True:
            await asyncio.sleep(CLOCK_CHECK)
            if self.mesh is None:
                continue
            for key, stats in self.mesh.statistics().items():
                skew = stats.sync.skew if stats.sync is not None else None
                if skew is None or not clocks_far_apart(skew) or key in told:
                    continue
                told.add(key)
                faster = "yours" if skew < 0 else f"{self._name(key)}'s"
                self._tell(
                    f"your clock and {self._name(key)}'s differ by {abs(skew):.0f} s ({faster} is ahead); "
                    "set both to the time from the internet, or some writes will be refused"
                )

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

    def _tell(self, text: str) -> None:
        """Tell the player, on the terminal and on openMSX's screen (in order with the applies)."""
        self.terminal.say(text)
        if self.applier is not None:
            self.applier.put(ShowMessage(text))

    def status(self) -> Status:
        return Status(
            game=self.definition.title or self.definition.name,
            room=self.roster.room if self.roster else "?",
            server=self._server(),
            armed=self.gate.armed,
            waiting_for=tuple(self.gate.waiting_for()),
            peers=self._peer_lines(),
        )

    def _peer_lines(self) -> tuple[PeerLine, ...]:
        if self.mesh is None:
            return ()
        now, admitted, lines = time.monotonic(), self.mesh.admitted(), []
        for key, stats in self.mesh.statistics().items():
            rtt = stats.sync.rtt if stats.sync is not None else None
            changed = self.last_change.get(key)
            path = stats.path.value if stats.path is not None else None
            ago = None if changed is None else now - changed
            lines.append(PeerLine(self._name(key), key in admitted, rtt, ago, path))
        return tuple(lines)

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

    async def _install_key_binding(self, link: OpenMSXLink) -> None:
        """F10 in openMSX asks for a resync (the message comes back to us as a log line)."""
        with contextlib.suppress(OpenMSXError):
            await link.command(_BIND)
