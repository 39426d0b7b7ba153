"""Who hosts the room, from this peer's side: hosting at start (--host), announcing on the LAN,
and, when the network splits, keeping the room whole (issue 17).

The rules are pure (`peer.core.room.takeover`), and so is their timing
(`peer.core.room.host_watch.HostWatch`: when to tell the player, probe, move or take over). This
module is their driver: it owns the in-process rendezvous (`peer.hosting`), the LAN announcement,
the probes of other rendezvous (`GET /api/rooms/{name}`) and the retargeting of the signalling
client. It looks at the signalling connection when the watch's timer says, and hands the player's
news (`ServerLost`, `ServerBack`, `Moved`) to the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp

from games.catalogue import CatalogueEntry, hash_rom
from games.definition import GameDefinition
from peer import lan
from peer.core.room import takeover
from peer.core.room.host_watch import (
    TAKEOVER_CHECK,
    Action,
    Connection,
    Go,
    HostWatch,
    Moved,
    News,
    Probe,
    ServerBack,
    ServerLost,
    TakeOver,
)
from peer.core.room.lan import Announcement
from peer.core.room.takeover import Sighting
from peer.hosting import hosting, play_stays_on_this_machine
from peer.mesh.room import RoomSession
from peer.options import PeerOptions, PlayerError

log = logging.getLogger("msxsync.peer")

PROBE_TIMEOUT = 1.5


class HostRole:
    """Enter with `async with`; leaving stops whatever this peer hosts and announces."""

    def __init__(self, options: PeerOptions, player: str, me: bytes) -> None:
        self.options = options
        self.player = player
        self.me = me
        self.hosting = False
        self._hosted: contextlib.AsyncExitStack | None = None  # our rendezvous and announcement

    async def __aenter__(self) -> HostRole:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.step_down()

    async def host(self, current: CatalogueEntry | None = None) -> str:
        """Run the rendezvous in this process; returns the URL this peer joins it at."""
        stack = contextlib.AsyncExitStack()
        url = await stack.enter_async_context(hosting(self.options, current, hosted_by=self.me))
        self._hosted = stack
        self.hosting = True
        return url

    async def step_down(self) -> None:
        """Stop our rendezvous and its announcement (its clients are told it is going away)."""
        hosted, self._hosted = self._hosted, None
        self.hosting = False
        if hosted is not None:
            await hosted.aclose()

    def standby_url(self) -> str:
        """Where others would reach this peer's rendezvous, were it to host."""
        address = self._own_address()
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self.options.port}"

    def _own_address(self) -> str:
        if self.options.ice_addresses:
            return self.options.ice_addresses[0]
        found = lan.local_addresses()
        return found[0] if found else "127.0.0.1"

    async def announce(self, game: str, room: str | None) -> None:
        """Announce our rendezvous on the LAN (not when play is pinned to this machine)."""
        if play_stays_on_this_machine(self.options):
            log.info("not announcing on the LAN: --ice-address keeps play on this machine")
            return
        if self._hosted is None:
            return
        try:
            announcement = Announcement(
                player=self.player,
                game=game,
                room=room,
                key=self.me.hex(),
                password=self.options.password is not None,
            )
            await self._hosted.enter_async_context(lan.announce(announcement, port=self.options.port))
        except (lan.LanError, ValueError) as exc:
            log.warning("cannot announce on the LAN (%s); others can still join with --rendezvous", exc)

    # ---- the watch -----------------------------------------------------------------------------

    async def watch(
        self,
        room: RoomSession,
        *,
        origin: str,
        definition: GameDefinition,
        rom_path: Path,
        news: Callable[[News], None],
    ) -> None:
        """Keep the room whole across network splits (see `peer.core.room.host_watch`). ORIGIN is
        the rendezvous the session started with; NEWS hears what the player should (the session
        words it)."""
        watch = HostWatch(self.me, origin=origin, game=definition.name, now=time.monotonic())
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        connector = aiohttp.TCPConnector(ssl=self.options.tls() or True)  # --ca-file for the origin
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            carry_out = _Watching(self, watch, room, http, definition, rom_path, news).carry_out
            while True:
                await _sleep_until(watch.get_timer())
                # (the signalling keeps the room's last roster while it is cut off)
                watch.seen(self._connection(room), room.signalling.roster)
                await carry_out(watch.handle_timer(time.monotonic()))

    def _connection(self, room: RoomSession) -> Connection:
        signalling = room.signalling
        return Connection(signalling.joined, signalling.welcomed, signalling.hosted_by, self.hosting)

    async def take_over(self, definition: GameDefinition, rom_path: Path) -> str | None:
        """Host the room here; returns our rendezvous's URL, or None when we cannot."""
        try:
            # Hashing reads the ROM: a thread.
            entry = await asyncio.to_thread(_catalogue_entry, definition, rom_path)
            return await self.host(entry)
        except PlayerError as exc:
            log.warning("cannot take over hosting: %s", exc)
            return None


class _Watching:
    """The watch's actions carried out, for one `HostRole.watch`."""

    def __init__(
        self,
        role: HostRole,
        watch: HostWatch,
        room: RoomSession,
        http: aiohttp.ClientSession,
        definition: GameDefinition,
        rom_path: Path,
        news: Callable[[News], None],
    ) -> None:
        self.role, self.watch, self.room, self.http = role, watch, room, http
        self.definition, self.rom_path, self.news = definition, rom_path, news

    async def carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case ServerLost() | ServerBack() | Moved():
                    self.news(action)
                case Probe(urls, room, game):
                    seen = await asyncio.gather(*(_room_info(self.http, url, room, game) for url in urls))
                    found = [sighting for sighting in seen if sighting is not None]
                    linked = self.room.mesh.admitted() if self.room.mesh is not None else set()
                    await self.carry_out(self.watch.probed(found, linked, time.monotonic()))
                case Go(url, _):
                    await self._go(url)
                case TakeOver():
                    await self._take_over()

    async def _go(self, url: str) -> None:
        """Join the room at URL; a host that moves stops hosting (its members follow)."""
        log.info("moving to the room's rendezvous at %s", url)
        await self.room.signalling.retarget(url)
        if self.role.hosting:
            await self.role.step_down()

    async def _take_over(self) -> None:
        url = await self.role.take_over(self.definition, self.rom_path)
        if url is None:
            return
        await self.carry_out(self.watch.took_over(url, time.monotonic()))
        await self.room.signalling.retarget(url)
        await self.role.announce(self.definition.name, self.room.signalling.room)  # mDNS: a second or two


async def _sleep_until(deadline: float | None) -> None:
    """Until DEADLINE on the monotonic clock (None never stays: the driver answers every probe)."""
    delay = TAKEOVER_CHECK if deadline is None else deadline - time.monotonic()
    await asyncio.sleep(max(0.0, delay))


async def _room_info(http: aiohttp.ClientSession, url: str, room: str, game: str) -> Sighting | None:
    """Our room at the rendezvous at URL, or None (not there, unreachable, or a bad answer)."""
    try:
        async with http.get(f"{url}/api/rooms/{quote(room, safe='')}") as reply:
            if reply.status != 200:
                return None
            body = json.loads(await reply.text())
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RecursionError):
        return None
    return takeover.parse_room_info(body, url=url, room=room, game=game)


def _catalogue_entry(definition: GameDefinition, rom_path: Path) -> CatalogueEntry:
    """The game being played, to serve when taking over."""
    return CatalogueEntry(definition, rom_path.parent, hash_rom(rom_path))
