"""The player's session: openMSX, the rendezvous, the mesh and the disk, wired in one place.

`Session.run()` starts (or attaches to) openMSX, joins the room, and then one `asyncio.TaskGroup`
owns every task: signalling and the mesh, the link's event loop, the applier, arming, takeover of
hosting, persistence, the status line and the console.

Flow of bytes:
- openMSX reports a frame's changes (`LocalChanges`): bytes at the armed-when addresses feed the
  arming rule; shared bytes are published through the mesh only while armed (and not while an
  adoption is under way), then persisted;
- the mesh reports merged remote bytes (`BytesChanged`): they are persisted at once and, while
  armed, written into openMSX in order by the applier task;
- arming adopts the room's state (see `peer.core.arming`): the applier writes every byte a peer
  has written into openMSX, then publishes the game's values of the bytes nobody has written.

Persistence runs in one worker thread (SQLite fsyncs must not stall the event loop); rows are
taken in the loop, so the thread never reads live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from games.catalogue import CatalogueEntry, hash_rom
from games.definition import GameDefinition, Region
from peer import lan
from peer.console import Command, PeerLine, Status, format_status, parse_command, safe_name
from peer.core import takeover
from peer.core.arming import Adopt, Arming, Check, Disarm
from peer.core.lan import Announcement
from peer.core.replica import (
    BytesChanged,
    ChatReceived,
    Event,
    FullStateReceived,
    Repaired,
    StateChanged,
)
from peer.core.state import NO_WRITER, Layout, Run, SharedState
from peer.hosting import hosting
from peer.mesh.mesh import LinkLost, Mesh, PeerAdmitted, Published
from peer.mesh.room import RoomSession
from peer.mesh.signalling import Member, Roster
from peer.mesh.webrtc import IceOptions
from peer.openmsx import Exited, LocalChanges, Logged, OpenMSXError, OpenMSXLink
from peer.options import PeerOptions, PlayerError
from peer.storage import RoomStore, StorageError, rows_for

log = logging.getLogger("msxsync.peer")

DEFAULT_MACHINE = "C-BIOS_MSX2+"
JOIN_TIMEOUT = 20.0
# Emulated seconds before a game without an armed-when rule may publish: past the BIOS logo
# (C-BIOS about 5 s, real MSX BIOSes less) and the cartridge's start, which clears its RAM.
BOOT_ARM_AFTER = 10.0
ROOM_STATE_TIMEOUT = 10.0  # with others in the room but none reachable, play on with our own state
ARMING_POLL = 0.25
STATUS_INTERVAL = 1.0
RESYNC_MESSAGE = "msxsync: resync requested"
RESYNC_KEY = "F10"
# In a layer of our own: it wins over the default F10 binding while active, and leaving
# deactivates it, so an attached openMSX gets its own F10 back.
_BIND = f'bind -layer msxsync {RESYNC_KEY} {{message "{RESYNC_MESSAGE}" info}}; activate_input_layer msxsync'
_UNBIND = f"deactivate_input_layer msxsync; unbind -layer msxsync {RESYNC_KEY}"
TAKEOVER_CHECK = 1.0
TAKEOVER_AFTER = 3.0  # seconds without a rendezvous (and without the host) before taking over


def arm_after(given: float | None, definition: GameDefinition) -> float | None:
    """--arm-after, or for a game without an armed-when rule BOOT_ARM_AFTER: without either, a
    late joiner would arm before its cartridge boots and publish the boot's clear of its RAM."""
    if given is not None or definition.armed_when is not None:
        return given
    return BOOT_ARM_AFTER


def split_at_regions(runs: Iterable[Run], regions: Iterable[Region]) -> list[Run]:
    """Cut runs where one region ends and the next begins (openMSX writes one region at a time)."""
    pieces: list[Run] = []
    for address, data in runs:
        for region in regions:
            start, end = max(address, region.start), min(address + len(data) - 1, region.end)
            if start <= end:
                pieces.append((start, data[start - address : end - address + 1]))
    return pieces


@dataclass(slots=True)
class _Rates:
    """Writes per second over the last few seconds, for the status line."""

    window: float = 5.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, count: int) -> None:
        self.samples.append((now, count))

    def per_second(self, now: float) -> float:
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()
        return sum(count for _, count in self.samples) / self.window


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
    ) -> None:
        self.options = options
        self.key = key
        self.me = bytes(key.verify_key)
        self.definition = definition
        self.rom_path = rom_path
        self.url = url
        self.state_dir = state_dir
        self.layout = Layout(definition.regions)
        self.arming = Arming(definition.armed_when, arm_after(options.arm_after, definition))
        self.memory: dict[int, int] = {}
        self.names: dict[bytes, str] = {}
        self.host_key: bytes | None = None
        self.hosting = False  # this peer runs the rendezvous in-process
        self._hosting_stack = contextlib.AsyncExitStack()
        self.roster: Roster | None = None
        self.mesh: Mesh | None = None
        self.link: OpenMSXLink | None = None
        self.store: RoomStore | None = None
        self.adopting = False
        # During a manual resync the game is in play: its changes are held, then re-applied and
        # published once the room's bytes are in (on arming they are boot noise and dropped).
        self._hold_during_adoption = False
        self._held: dict[int, int] = {}
        self.out_rates, self.in_rates = _Rates(), _Rates()
        self._applies: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._check_arming = asyncio.Event()
        self._dirty_event = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_reason = "quit"
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="msxsync-disk")

    # ---- the whole session ---------------------------------------------------------------------

    async def run(self) -> str:
        try:
            async with self._open_link() as link:
                self.link = link
                await self._install_key_binding(link)
                # A game already in play (--attach) may never change these bytes again: judge now.
                await self._check_arming_now(link)
                await self._play(link)
        except OpenMSXError as exc:
            raise PlayerError(f"openMSX failed: {exc}") from None
        finally:
            await self._hosting_stack.aclose()
            self._disk.shutdown(wait=True)
            if self.store is not None:
                self.store.close()
        return self._stop_reason

    def _watched_regions(self) -> list[Region]:
        """The shared regions plus the armed-when bytes outside them (arming must see those)."""
        extra = []
        if self.definition.armed_when is not None:
            extra = [
                Region(a, a) for a in self.definition.armed_when.addresses if not self.definition.is_shared(a)
            ]
        return [*self.definition.regions, *extra]

    def _open_link(self) -> contextlib.AbstractAsyncContextManager[OpenMSXLink]:
        options = self.options
        if options.attach is not None:
            return OpenMSXLink.attach(self._watched_regions(), pid=options.attach or None)
        return OpenMSXLink.launch(
            self._watched_regions(),
            home=self.state_dir / "openmsx-home",
            machine=options.machine or self.definition.machine or DEFAULT_MACHINE,
            cartridge=self.rom_path,
            romtype=self.definition.romtype,
            openmsx=options.openmsx,
            scripts=[Path(script) for script in options.openmsx_scripts],
            headless=options.headless,
        )

    async def _play(self, link: OpenMSXLink) -> None:
        room = RoomSession(
            rendezvous=self.url,
            signing_key=self.key,
            name=safe_name(self.options.name or os.environ.get("USER", "player")),
            game=self.definition.name,
            room=self.options.room,
            password=self.options.password,
            regions=self.definition.regions,
            ice=self._ice_options(),
            on_event=self._on_mesh_event,
            prepare=self._prepare_room,
            on_roster=self.roster_changed,
            standby=self._standby_url(),
        )
        async with asyncio.TaskGroup() as tasks:
            room_task = tasks.create_task(room.run())
            self.mesh = await self._wait_ready(room, room_task)
            self.roster_changed(room.signalling.roster or self.roster)
            if self.hosting:
                await self._announce()
            background = [
                tasks.create_task(self._takeover_loop(room)),
                tasks.create_task(self._persist_loop()),
                tasks.create_task(self._apply_loop(link)),
                tasks.create_task(self._arming_loop(link)),
                tasks.create_task(self._status_loop()),
                tasks.create_task(self._room_state_deadline()),
            ]
            if sys.stdin.isatty():
                background.append(tasks.create_task(self._console_loop()))
            if self.options.quit_after is not None:
                background.append(tasks.create_task(self._quit_later(self.options.quit_after)))
            watcher = tasks.create_task(self._link_loop(link))
            loop = asyncio.get_running_loop()
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signal_number, self.stop, "interrupted")
            await self._stopped.wait()
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signal_number)
            watcher.cancel()
            room.stop(self._stop_reason)
            await self._leave(background)

    async def _wait_ready(self, room: RoomSession, task: asyncio.Task[None]) -> Mesh:
        ready = asyncio.ensure_future(room.wait_ready())
        try:
            done, _ = await asyncio.wait(
                {ready, task}, timeout=JOIN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if ready in done and not ready.cancelled():
            return ready.result()
        if task.done():
            await task  # raises what ended it (a refusal), handled by `run_peer`
        raise PlayerError(
            f"could not reach the rendezvous at {self.url} within {JOIN_TIMEOUT:.0f} s; check --rendezvous."
        )

    async def _prepare_room(self, roster: Roster) -> tuple[SharedState, int]:
        """Open this room's durable state (once its name is known) and take a session number."""
        try:
            self.store = await asyncio.to_thread(
                RoomStore,
                self.state_dir / "rooms.sqlite",
                game=self.definition.name,
                room=roster.room,
                layout=self.layout,
            )
            session = await asyncio.to_thread(self.store.next_session)
            state = await asyncio.to_thread(self.store.load)
        except StorageError as exc:
            raise PlayerError(str(exc)) from None
        log.info(
            "joined room %r of %s as %s (session %d)",
            roster.room,
            self.definition.name,
            self.me.hex()[:8],
            session,
        )
        return state, session

    # ---- hosting and taking over --------------------------------------------------------------

    def _own_address(self) -> str:
        """The address other players reach this machine at (for the standby URL)."""
        if self.options.ice_addresses:
            return self.options.ice_addresses[0]
        found = lan.local_addresses()
        return found[0] if found else "127.0.0.1"

    def _standby_url(self) -> str:
        address = self._own_address()
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self.options.port}"

    async def _announce(self) -> None:
        """Announce our rendezvous on the LAN (not when play is pinned to this machine)."""
        if self.options.ice_addresses and all(
            a.startswith("127.") or a == "::1" for a in self.options.ice_addresses
        ):
            log.info("not announcing on the LAN: --ice-address keeps play on this machine")
            return
        room = self.roster.room if self.roster else None
        player = safe_name(self.options.name or os.environ.get("USER", "player"))
        try:
            announcement = Announcement(
                player=player, game=self.definition.name, room=room, key=self.me.hex()
            )
            await self._hosting_stack.enter_async_context(lan.announce(announcement, port=self.options.port))
        except (lan.LanError, ValueError) as exc:
            log.warning("cannot announce on the LAN (%s); others can still join with --rendezvous", exc)

    async def _takeover_loop(self, room: RoomSession) -> None:
        """When the rendezvous and the host are both gone, the first remaining member hosts."""
        lost_since: float | None = None
        while True:
            await asyncio.sleep(TAKEOVER_CHECK)
            if room.signalling.stats.connected:
                lost_since = None
                continue
            now = time.monotonic()
            lost_since = lost_since if lost_since is not None else now
            successor = self._successor()
            if now - lost_since >= TAKEOVER_AFTER and successor is not None:
                lost_since = None
                await self._move_to(successor, room)

    def _successor(self) -> Member | None:
        if self.roster is None or self.mesh is None:
            return None
        return takeover.successor(
            self.roster.members, gone_host=self.host_key, me=self.me, connected=self.mesh.admitted()
        )

    async def _move_to(self, successor: Member, room: RoomSession) -> None:
        url = successor.standby
        if successor.key == self.me:
            try:
                url = await self._hosting_stack.enter_async_context(
                    hosting(self.options, await asyncio.to_thread(self._catalogue_entry))
                )
            except PlayerError as exc:
                log.warning("cannot take over hosting: %s", exc)
                return
            self.hosting = True
            await self._announce()
        self.host_key = successor.key
        self._osd(f"{self._name(successor.key)} now hosts the room")
        if url is not None:
            await room.signalling.retarget(url)

    def _catalogue_entry(self) -> CatalogueEntry:
        """The game being played, to serve when taking over (hashing reads the ROM: a thread)."""
        return CatalogueEntry(self.definition, self.rom_path.parent, hash_rom(self.rom_path))

    def _ice_options(self) -> IceOptions:
        options = self.options
        try:
            return IceOptions(
                stun=options.stun,
                turn=options.turn,
                turn_user=options.turn_user,
                turn_password=options.turn_password,
                host_addresses=options.ice_addresses or None,
            )
        except ValueError as exc:
            raise PlayerError(f"{exc}; see --help for the STUN/TURN URL forms.") from None

    async def _leave(self, background: Iterable[asyncio.Task[Any]]) -> None:
        await self._flush_disk()
        for task in background:
            task.cancel()
        if self.link is not None:
            with contextlib.suppress(OpenMSXError):
                await self.link.show_message("msxsync: left the room")
                await self.link.command(_UNBIND)  # an attached openMSX plays on, F10 as before

    def stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stopped.set()

    async def _quit_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.stop("time is up")

    # ---- signalling listener -------------------------------------------------------------------

    def roster_changed(self, roster: Roster | None) -> None:
        if roster is None:
            return
        previous = self.names
        self.roster = roster
        self.names = {member.key: safe_name(member.name) for member in roster.members}
        if self.host_key != roster.host and roster.host in self.names:
            self.host_key = roster.host
            self._osd(f"{self._name(roster.host)} hosts the room")
        for key in set(previous) - set(self.names):
            self._osd(f"{previous[key]} left")
        if self.mesh is not None and set(roster.keys) <= {self.me} and not self.arming.room_ready:
            log.info("alone in the room: playing with the state saved on this machine")
            self._arming_actions(self.arming.room_is_ready())

    # ---- mesh events ---------------------------------------------------------------------------

    def _on_mesh_event(self, event: Event) -> None:
        match event:
            case StateChanged():
                self._dirty_event.set()
            case BytesChanged(_, changes):
                self.in_rates.add(time.monotonic(), sum(len(data) for _, data in changes))
                self._dirty_event.set()
                if self.arming.armed:
                    self._applies.put_nowait(("apply", changes))
            case FullStateReceived(peer):
                if not self.arming.room_ready:
                    log.info("got the room's state from %s", self._name(peer))
                    self._arming_actions(self.arming.room_is_ready())
            case Published(runs):
                self.out_rates.add(time.monotonic(), sum(len(data) for _, data in runs))
                self._dirty_event.set()
            case PeerAdmitted(peer):
                self._osd(f"{self._name(peer)} joined")
            case LinkLost(peer, reason):
                log.info("connection to %s lost: %s", self._name(peer), reason)
            case ChatReceived(peer, text):
                self._osd(f"{self._name(peer)}: {safe_name(text, 200)}")
            case Repaired(peer):
                self._osd(f"resynced with {self._name(peer)}")

    def _name(self, key: bytes) -> str:
        return self.names.get(key, key.hex()[:8])

    # ---- openMSX events ------------------------------------------------------------------------

    async def _link_loop(self, link: OpenMSXLink) -> None:
        async for event in link.events():
            match event:
                case LocalChanges():
                    self._local_changes(event)
                case Logged(_, text) if text.strip() == RESYNC_MESSAGE:
                    self.resync()
                case Logged(level, text) if level in ("warning", "error") and "sequencer" not in text:
                    # ("Could not open sequencer" is ALSA without MIDI: harmless, and always there.)
                    log.info("openMSX %s: %s", level, text)
                case Exited(reason, tail):
                    log.warning("openMSX went away: %s%s", reason, f"\n{tail}" if tail else "")
                    self.stop(f"openMSX went away: {reason}")
                    return

    def _local_changes(self, report: LocalChanges) -> None:
        shared: list[Run] = []
        for address, data in report.changes:
            for offset, value in enumerate(data):
                if address + offset in self.memory:
                    self.memory[address + offset] = value
            if self.layout.check_run(address, len(data)):
                shared.append((address, data))
        self._arming_actions(self.arming.observe(self.memory, report.emutime, report.report))
        # Made before the check that armed, or disarming: the boot or the title screen writing.
        if not shared or not self.arming.publishes(report.report):
            return
        if not self.adopting:
            self._publish(shared, report.written_at)
        elif self._hold_during_adoption:
            self._held.update((a + i, value) for a, data in shared for i, value in enumerate(data))

    def _publish(self, runs: list[Run], written_at: float | None = None) -> None:
        if self.mesh is not None:
            # (what goes out comes back as a `Published` event)
            self.mesh.local_changes(runs, written_at)

    # ---- arming --------------------------------------------------------------------------------

    async def _check_arming_now(self, link: OpenMSXLink) -> None:
        """Judge arming on what the running emulator says now (never on a report alone)."""
        addresses = self.definition.armed_when.addresses if self.definition.armed_when else ()
        probe = await link.probe(addresses)
        self.memory.update(probe.memory)
        self._arming_actions(self.arming.check(self.memory, probe.emutime, probe.last_report))

    def _arming_actions(self, actions: Iterable[object]) -> None:
        for action in actions:
            match action:
                case Check():
                    self._check_arming.set()
                case Adopt(reason):
                    self.adopting = True
                    self._hold_during_adoption = self.arming.armed and reason != "armed"
                    self._applies.put_nowait(("adopt", reason))
                case Disarm(reason):
                    self._osd(f"msxsync: paused sharing ({reason})")

    async def _arming_loop(self, link: OpenMSXLink) -> None:
        """While disarmed, check the emulator when asked to, and every ARMING_POLL (for --arm-after)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_arming.wait(), ARMING_POLL)
            self._check_arming.clear()
            if not self.arming.armed:
                await self._check_arming_now(link)

    async def _room_state_deadline(self) -> None:
        await asyncio.sleep(ROOM_STATE_TIMEOUT)
        if not self.arming.room_ready:
            log.warning(
                "no other player answered within %.0f s: playing with this machine's saved state",
                ROOM_STATE_TIMEOUT,
            )
            self._arming_actions(self.arming.room_is_ready())

    def resync(self) -> None:
        """Manual resync: ask every peer for its full state and re-adopt the room's bytes."""
        if self.mesh is not None:
            self.mesh.request_resync()
        self._arming_actions(self.arming.resync())
        self._osd("msxsync: resync")

    async def _apply_loop(self, link: OpenMSXLink) -> None:
        """Everything that writes into openMSX, in order: remote bytes, adoptions, messages."""
        while True:
            kind, payload = await self._applies.get()
            try:
                if kind == "adopt":
                    await self._adopt(link, payload)
                elif kind == "message":
                    await link.show_message(payload)
                elif self.arming.armed:
                    await self._write(link, payload)
            except ValueError as exc:  # refused by the link's validation: report, keep playing
                log.error("could not %s in openMSX: %s", kind, exc)
            except OpenMSXError as exc:  # openMSX went away mid-command: the session is over
                self.stop(f"openMSX went away: {exc}")
                return

    async def _write(self, link: OpenMSXLink, runs: Iterable[Run]) -> None:
        missed = await link.apply(split_at_regions(runs, self.definition.regions))
        if missed:
            log.warning("%d shared bytes did not take in openMSX (no RAM mapped there now)", len(missed))

    async def _adopt(self, link: OpenMSXLink, reason: str) -> None:
        if self.mesh is None:
            return
        state = self.mesh.replica.state
        written = [(e.address, e.data) for e in state.entries() if e.writer != NO_WRITER]
        if written:
            await self._write(link, written)
        unwritten = set(self.mesh.replica.unwritten_addresses())
        game_values: list[Run] = []
        for region in self.definition.regions:
            data = await link.read(region.start, region.size)
            game_values += [
                (region.start + i, data[i : i + 1])
                for i in range(region.size)
                if region.start + i in unwritten
            ]
        self.adopting = False
        if game_values and self.arming.armed:
            self._publish(game_values)
        held, self._held = sorted(self._held.items()), {}
        if held and self.arming.armed:
            runs = [(address, bytes([value])) for address, value in held]
            await self._write(link, runs)  # the game's newer bytes win over what adoption wrote
            self._publish(runs)
        adopted = sum(len(data) for _, data in written)
        self._osd(f"msxsync: sharing ({reason}, {adopted} bytes from the room)")

    # ---- persistence ---------------------------------------------------------------------------

    async def _persist_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            await self._flush_disk()

    async def _flush_disk(self) -> None:
        self._dirty_event.clear()
        if self.store is None or self.mesh is None or not self.mesh.replica.state.dirty:
            return
        state = self.mesh.replica.state
        rows = rows_for(state, state.take_dirty())  # taken here: the thread never reads live state
        await asyncio.get_running_loop().run_in_executor(self._disk, self.store.write_rows, rows)

    # ---- what the player sees and types --------------------------------------------------------

    def _osd(self, text: str) -> None:
        """Tell the player, on the terminal and on openMSX's screen (in order with the applies)."""
        print(f"\n{text}" if sys.stderr.isatty() else text, file=sys.stderr, flush=True)
        self._applies.put_nowait(("message", text))

    def status(self) -> Status:
        now = time.monotonic()
        peers = []
        if self.mesh is not None:
            admitted = self.mesh.admitted()
            for key, stats in self.mesh.statistics().items():
                rtt = stats.sync.rtt if stats.sync is not None else None
                peers.append(PeerLine(self._name(key), key in admitted, rtt))
        return Status(
            game=self.definition.name,
            room=self.roster.room if self.roster else "?",
            host=self._name(self.host_key) if self.host_key else "?",
            armed=self.arming.armed,
            waiting_for=tuple(self.arming.waiting_for()),
            peers=tuple(peers),
            writes_out_per_s=self.out_rates.per_second(now),
            writes_in_per_s=self.in_rates.per_second(now),
        )

    async def _status_loop(self) -> None:
        tty = sys.stderr.isatty()
        tick = 0
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            tick += 1
            line = format_status(self.status())
            if tty:
                sys.stderr.write("\r" + line[:200].ljust(200)[: os.get_terminal_size().columns - 1])
                sys.stderr.flush()
            elif tick % 5 == 0:
                print(line, file=sys.stderr, flush=True)

    async def _console_loop(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("msxsync: type 'help' for commands", file=sys.stderr)
        while line := await reader.readline():
            command = parse_command(line.decode("utf-8", "replace"))
            if command is not None:
                self._run_command(command)
        self.stop("quit")

    def _run_command(self, command: Command) -> None:
        match command:
            case Command("say", text) if self.mesh is not None:
                try:
                    self.mesh.send_chat(text)
                except ValueError:
                    print("msxsync: that message is too long", file=sys.stderr)
            case Command("peers"):
                print(format_status(self.status()), file=sys.stderr)
            case Command("resync"):
                self.resync()
            case Command("quit"):
                self.stop("quit")
            case Command(_, text):
                print(text or "commands: say TEXT, peers, resync, quit", file=sys.stderr)

    async def _install_key_binding(self, link: OpenMSXLink) -> None:
        """F10 in openMSX asks for a resync (the message comes back to us as a log line)."""
        with contextlib.suppress(OpenMSXError):
            await link.command(_BIND)
