"""Who hosts the room, from this peer's side: hosting at start (--host), announcing on the LAN,
and taking over when the host and the rendezvous are both gone.

The takeover rule itself is pure (`peer.core.takeover`); this module owns the in-process
rendezvous (`peer.hosting`), the LAN announcement and the clock that decides when to act.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from games.catalogue import CatalogueEntry, hash_rom
from games.definition import GameDefinition
from peer import lan
from peer.core import takeover
from peer.core.lan import Announcement
from peer.hosting import hosting
from peer.mesh.room import RoomSession
from peer.mesh.signalling import Member, Roster
from peer.options import PeerOptions, PlayerError

log = logging.getLogger("msxsync.peer")

TAKEOVER_CHECK = 1.0
TAKEOVER_AFTER = 3.0  # seconds without a rendezvous (and without the host) before taking over


class HostRole:
    """Enter with `async with`; leaving stops whatever this peer hosts and announces."""

    def __init__(self, options: PeerOptions, player: str, me: bytes) -> None:
        self.options = options
        self.player = player
        self.me = me
        self.hosting = False
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> HostRole:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def host(self, current: CatalogueEntry | None = None) -> str:
        """Run the rendezvous in this process; returns the URL this peer joins it at."""
        url = await self._stack.enter_async_context(hosting(self.options, current))
        self.hosting = True
        return url

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
        addresses = self.options.ice_addresses
        if addresses and all(a.startswith("127.") or a == "::1" for a in addresses):
            log.info("not announcing on the LAN: --ice-address keeps play on this machine")
            return
        try:
            announcement = Announcement(
                player=self.player,
                game=game,
                room=room,
                key=self.me.hex(),
                password=self.options.password is not None,
            )
            await self._stack.enter_async_context(lan.announce(announcement, port=self.options.port))
        except (lan.LanError, ValueError) as exc:
            log.warning("cannot announce on the LAN (%s); others can still join with --rendezvous", exc)

    async def watch(
        self,
        room: RoomSession,
        roster: Callable[[], Roster | None],
        host: Callable[[], bytes | None],
        admitted: Callable[[], set[bytes]],
        definition: GameDefinition,
        rom_path: Path,
        moved: Callable[[Member], None],
    ) -> None:
        """When the rendezvous and the host are both gone, the first remaining member hosts."""
        lost_since: float | None = None
        while True:
            await asyncio.sleep(TAKEOVER_CHECK)
            if room.signalling.stats.connected:
                lost_since = None
                continue
            now = time.monotonic()
            lost_since = lost_since if lost_since is not None else now
            current = roster()
            if now - lost_since < TAKEOVER_AFTER or current is None:
                continue
            successor = takeover.successor(
                current.members, gone_host=host(), me=self.me, connected=admitted()
            )
            if successor is not None:
                lost_since = None
                await self._move_to(successor, room, definition, rom_path, moved)

    async def _move_to(
        self,
        successor: Member,
        room: RoomSession,
        definition: GameDefinition,
        rom_path: Path,
        moved: Callable[[Member], None],
    ) -> None:
        url = successor.standby
        if successor.key == self.me:
            try:
                # Hashing reads the ROM: a thread.
                entry = await asyncio.to_thread(_catalogue_entry, definition, rom_path)
                url = await self.host(entry)
            except PlayerError as exc:
                log.warning("cannot take over hosting: %s", exc)
                return
            await self.announce(
                definition.name, room.signalling.roster.room if room.signalling.roster else None
            )
        moved(successor)
        if url is not None:
            await room.signalling.retarget(url)


def _catalogue_entry(definition: GameDefinition, rom_path: Path) -> CatalogueEntry:
    """The game being played, to serve when taking over."""
    return CatalogueEntry(definition, rom_path.parent, hash_rom(rom_path))
