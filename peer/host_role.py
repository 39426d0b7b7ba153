"""Who hosts the room, from this peer's side: hosting at start (--host), announcing on the LAN,
and, when the network splits, keeping the room whole (issue 17).

The rules are pure (`peer.core.room.takeover`); this module owns the in-process rendezvous
(`peer.hosting`), the LAN announcement, the probes of other rendezvous (`GET /api/rooms/{name}`)
and the clock that decides when to act. Once a second it looks at the signalling connection:

- a **standalone** rendezvous (the welcome's `hosted_by` is null) is never replaced: the signalling
  client retries it by itself; this only tells the player it is unreachable, and "reconnected";
- in a **player-hosted** room, a host and a peer that lost the rendezvous probe the original
  rendezvous and every member's standby URL, and go where `takeover.move_to` says (a host that
  moves stops hosting: its members lose it and look for the room the same way);
- a peer that found the room nowhere for TAKEOVER_AFTER, and whose set of live links has held
  still for STABLE_FOR (links that died with the same cable go silent a heartbeat apart), elects
  `takeover.successor`: never itself when it has no live link.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

import aiohttp

from games.catalogue import CatalogueEntry, hash_rom
from games.definition import GameDefinition
from peer import lan
from peer.core.room import takeover
from peer.core.room.lan import Announcement
from peer.core.room.takeover import Sighting
from peer.hosting import hosting, play_stays_on_this_machine
from peer.mesh.room import RoomSession
from peer.mesh.signalling import Roster
from peer.options import PeerOptions, PlayerError

log = logging.getLogger("msxsync.peer")

TAKEOVER_CHECK = 1.0
UNREACHABLE_AFTER = 3.0  # seconds without the rendezvous before the player is told
TAKEOVER_AFTER = 3.0  # seconds without the rendezvous (and without the room anywhere) before electing
STABLE_FOR = 2.0  # the live links must have held still this long: more than a heartbeat (1 s)
PROBE_EVERY = 2.0  # a host that is fine looks for a better rendezvous of its room this often
PROBE_TIMEOUT = 1.5
RETARGET_GRACE = 6.0  # a fresh retarget to the same URL is left to finish (connect + handshake)


class HostRole:
    """Enter with `async with`; leaving stops whatever this peer hosts and announces."""

    def __init__(self, options: PeerOptions, player: str, me: bytes) -> None:
        self.options = options
        self.player = player
        self.me = me
        self.hosting = False
        self.unreachable = False  # the player was told the rendezvous is unreachable
        self._hosted: contextlib.AsyncExitStack | None = None  # our rendezvous and announcement
        self._standby: dict[bytes, str] = {}  # every member's standby URL ever seen in the room
        self._retargeted: tuple[str, float] | None = None
        self._survivors: tuple[frozenset[bytes], float] = (frozenset(), 0.0)

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
        roster: Callable[[], Roster | None],
        admitted: Callable[[], set[bytes]],
        definition: GameDefinition,
        rom_path: Path,
        moved: Callable[[bytes | None], None],
        tell: Callable[[str], None],
    ) -> None:
        """Keep the room whole across network splits (see the module docstring). ORIGIN is the
        rendezvous the session started with; MOVED is told who hosts after a move; TELL speaks to
        the player."""
        lost_since: float | None = None
        probed_at = 0.0
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        connector = aiohttp.TCPConnector(ssl=self.options.tls() or True)  # --ca-file for the origin
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            while True:
                await asyncio.sleep(TAKEOVER_CHECK)
                signalling, now = room.signalling, time.monotonic()
                self._remember(roster())
                joined = signalling.joined
                if joined:
                    lost_since = None
                    if self.unreachable:
                        self.unreachable = False
                        tell("reconnected to the room's server")
                else:
                    lost_since = now if lost_since is None else lost_since
                    if not self.unreachable and now - lost_since >= UNREACHABLE_AFTER:
                        self.unreachable = True
                        tell("the room's server is unreachable: playing on, retrying")
                if not signalling.welcomed or signalling.hosted_by is None:
                    continue  # a standalone rendezvous is never replaced: the client retries it
                if joined and (not self.hosting or now - probed_at < PROBE_EVERY):
                    continue  # a member in the room: its host looks out for the room
                probed_at = now
                current = roster()
                if current is None:
                    continue
                seen = await self._probe(http, self._urls(origin), current.room, definition.name)
                target = takeover.move_to(signalling.hosted_by, joined=joined, me=self.me, seen=seen)
                if target is not None:
                    await self._go(room, target.url, target.hosted_by, moved, time.monotonic())
                elif lost_since is not None and now - lost_since >= TAKEOVER_AFTER:
                    await self._elect(room, current, admitted(), definition, rom_path, moved, now)

    def _remember(self, roster: Roster | None) -> None:
        for member in roster.members if roster is not None else ():
            if member.standby is not None and member.key != self.me:
                self._standby[member.key] = member.standby

    def _urls(self, origin: str) -> list[str]:
        """Where the room may be: the original rendezvous and every member's standby URL."""
        urls = [origin.rstrip("/"), *(url.rstrip("/") for url in self._standby.values())]
        return list(dict.fromkeys(urls))

    async def _probe(
        self, http: aiohttp.ClientSession, urls: Iterable[str], room: str, game: str
    ) -> list[Sighting]:
        found = await asyncio.gather(*(_room_info(http, url, room, game) for url in urls))
        return [sighting for sighting in found if sighting is not None]

    async def _elect(
        self,
        room: RoomSession,
        roster: Roster,
        linked: set[bytes],
        definition: GameDefinition,
        rom_path: Path,
        moved: Callable[[bytes | None], None],
        now: float,
    ) -> None:
        survivors = frozenset(linked)
        if survivors != self._survivors[0]:
            self._survivors = (survivors, now)
        if now - self._survivors[1] < STABLE_FOR:
            return
        gone = room.signalling.hosted_by
        chosen = takeover.successor(roster.members, gone_host=gone, me=self.me, connected=survivors)
        if chosen is None:
            return
        if chosen.key == self.me:
            await self._take_over(room, definition, rom_path, moved)
        elif chosen.standby is not None:
            await self._go(room, chosen.standby, chosen.key, moved, now)

    async def _take_over(
        self,
        room: RoomSession,
        definition: GameDefinition,
        rom_path: Path,
        moved: Callable[[bytes | None], None],
    ) -> None:
        try:
            # Hashing reads the ROM: a thread.
            entry = await asyncio.to_thread(_catalogue_entry, definition, rom_path)
            url = await self.host(entry)
        except PlayerError as exc:
            log.warning("cannot take over hosting: %s", exc)
            return
        moved(self.me)
        self._retargeted = (url, time.monotonic())
        await room.signalling.retarget(url)
        await self.announce(definition.name, room.signalling.room)  # mDNS takes a second or two

    async def _go(
        self,
        room: RoomSession,
        url: str,
        host: bytes | None,
        moved: Callable[[bytes | None], None],
        now: float,
    ) -> None:
        """Join the room at URL (hosted by HOST); a host that moves stops hosting."""
        last = self._retargeted
        if last is not None and last[0] == url and now - last[1] < RETARGET_GRACE:
            return  # that move is still under way
        log.info("moving to the room's rendezvous at %s", url)
        moved(host)
        self._retargeted = (url, now)
        await room.signalling.retarget(url)
        if self.hosting:
            await self.step_down()  # our members lose us, look for the room and follow


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
