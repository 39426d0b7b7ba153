"""One player's room: signalling client, replica and mesh, their tasks in the caller's TaskGroup.

The replica can only be made once the room's name is known (quick match names it on joining),
so `run()` joins first, then builds the replica and the mesh and hands them every roster and
signal from then on. Signals that arrive in between (an offer from a member who saw us join)
are held, up to `EARLY_SIGNALS`, and replayed to the new mesh.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from games.definition import Region
from peer.core.mesh.binding import derive_room_key
from peer.core.mesh.core import MeshCore
from peer.core.room.room_game import GameCheck
from peer.core.room.signalling import IceServer
from peer.core.sync import codec
from peer.core.sync.replica import Event, Replica
from peer.core.sync.state import SharedState
from peer.mesh.mesh import Mesh, random_nonces
from peer.mesh.signalling import Roster, SignallingClient
from peer.mesh.webrtc import IceOptions, WebRTCLinks

log = logging.getLogger(__name__)

EARLY_SIGNALS = 64


@dataclass(frozen=True)
class RoomConfig:
    """How this player joins one room, built once (the session from the player's options).

    `rendezvous`: its URL; `name`: the player's; `game`: the definition's name, `regions` its
    shared regions; `room`: None for quick match (which has no password); `ice`: STUN, TURN and
    host addresses; `relay`: whether peers unreachable otherwise may be reached through the
    rendezvous's relay (`--no-relay`: False); `standby`: where this player would host; `tls`: what
    verifies an https:// rendezvous (None: the system's CAs)."""

    rendezvous: str
    signing_key: SigningKey
    name: str
    game: str
    regions: tuple[Region, ...]
    room: str | None = None
    password: str | None = None
    ice: IceOptions = field(default_factory=IceOptions)
    relay: bool = True
    standby: str | None = None
    tls: ssl.SSLContext | None = None
    capacity: int | None = None

    def __post_init__(self) -> None:
        if self.password is not None and self.room is None:
            raise ValueError("quick-match rooms have no password")


class RoomSession:
    """One player in one room. `mesh` exists once `wait_ready()` returned."""

    def __init__(
        self,
        config: RoomConfig,
        *,
        state: SharedState | None = None,
        on_event: Callable[[Event], None] | None = None,
        prepare: Callable[[Roster], Awaitable[tuple[SharedState | None, int]]] | None = None,
        on_roster: Callable[[Roster], None] | None = None,
        game_check: GameCheck | None = None,
        on_rejoin_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        """`prepare(roster)`, when given, is awaited once the room is known (quick match names it
        on joining) and returns the state to start from and the session number to sign with;
        `on_roster` sees every roster, the first included; `game_check`: our game in the hello,
        and the check of each peer's; `on_rejoin_refused(code, message)`: the rendezvous would not
        let us back into the room (the mesh plays on with the peers it has; the join is retried)."""
        self.config = config
        self._state = state
        self._on_event = on_event
        self._prepare = prepare
        self._on_roster = on_roster
        self._game_check = game_check
        self.signalling = SignallingClient(
            config.rendezvous,
            signing_key=config.signing_key,
            name=config.name,
            game=config.game,
            room=config.room,
            password=config.password,
            capacity=config.capacity,
            listener=self,
            standby=config.standby,
            tls=config.tls,
            on_rejoin_refused=on_rejoin_refused,
            on_ice_servers=self._ice_servers_changed,
        )
        self.mesh: Mesh | None = None
        self._links: WebRTCLinks | None = None
        self._ice_servers: tuple[IceServer, ...] = ()
        self._early: list[tuple[bytes, dict[str, Any]]] = []
        self._ready = asyncio.Event()
        self._signalling_task: asyncio.Task[None] | None = None
        self._mesh_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._stop_reason = "leaving"

    async def join(self, tasks: asyncio.TaskGroup) -> Mesh:
        """Join the room and start syncing, the signalling and mesh tasks in the caller's TASKS.

        Returns the mesh once it runs. A refusal ends the signalling task with
        SignallingRefused, which ends TASKS (the caller's TaskGroup sees it)."""
        self._signalling_task = tasks.create_task(self.signalling.run())
        roster = await self.signalling.wait_joined()
        self.mesh = mesh = await self._make_mesh(roster)
        self._mesh_task = tasks.create_task(mesh.run())
        await mesh.wait_running()
        current = self.signalling.roster
        if current is not None:
            mesh.core.add_past_members(current.past)
        mesh.set_roster(current.keys if current is not None else [])
        for sender, data in self._early:
            mesh.handle_signal(sender, data)
        self._early.clear()
        self._ready.set()
        return mesh

    async def leave(self, reason: str = "leaving") -> None:
        """Say goodbye to every peer, stop the mesh, then the signalling."""
        if self.mesh is not None:
            self.mesh.stop(reason)
        if self._mesh_task is not None:
            await self._mesh_task
        if self._signalling_task is not None:
            self._signalling_task.cancel()

    async def run(self) -> None:
        """Join, then sync until `stop()`, in a TaskGroup of its own (for tools and tests)."""
        async with asyncio.TaskGroup() as tasks:
            await self.join(tasks)
            await self._stop.wait()
            await self.leave(self._stop_reason)

    async def _make_mesh(self, roster: Roster) -> Mesh:
        room_key = None
        if self.config.password is not None:
            # Argon2id takes ~0.1 s of CPU: keep the event loop (and other links) responsive.
            room_key = await asyncio.to_thread(derive_room_key, self.config.password, roster.room)
        state = self._state  # (no store: a session from the clock, unique within its second)
        session = codec.session_floor(time.time()) + secrets.randbits(16)
        if self._prepare is not None:
            state, session = await self._prepare(roster)
        replica = Replica(
            signing_key=self.config.signing_key,
            room=roster.room,
            regions=self.config.regions,
            session=session,
            state=state,
        )
        core = MeshCore(
            replica=replica,
            nonces=random_nonces,
            now=time.monotonic(),
            room_key=room_key,
            game_check=self._game_check,
            relay_allowed=self.config.relay,
        )
        self._links = links = WebRTCLinks(
            local_key=replica.key, signals=self.signalling, ice=self._current_ice()
        )
        relay = self.signalling if self.config.relay else None
        return Mesh(core, links=links, signals=self.signalling, relay=relay, on_event=self._on_event)

    def _current_ice(self) -> IceOptions:
        """The player's ICE options with the servers of the rendezvous's latest welcome."""
        self._ice_servers = self.signalling.ice_servers
        return self.config.ice.with_rendezvous(self._ice_servers)

    async def wait_ready(self) -> Mesh:
        await self._ready.wait()
        if self.mesh is None:
            raise RuntimeError("ready without a mesh")
        return self.mesh

    def stop(self, reason: str = "leaving") -> None:
        self._stop_reason = reason
        self._stop.set()

    # ---- SignallingListener ------------------------------------------------------------------

    def roster_changed(self, roster: Roster) -> None:
        if self._on_roster is not None:
            self._on_roster(roster)
        if self.mesh is not None and self._ready.is_set():
            self._ice_servers_changed()
            self.mesh.core.add_past_members(roster.past)
            self.mesh.set_roster(roster.keys)

    def _ice_servers_changed(self) -> None:
        """New links dial with the rendezvous's latest servers (a rejoin's, or renewed TURN
        credentials); links already up keep theirs."""
        if self._links is not None and self.signalling.ice_servers != self._ice_servers:
            self._links.set_ice(self._current_ice())

    def signal_received(self, sender: bytes, data: dict[str, Any]) -> None:
        if self.mesh is not None and self._ready.is_set():
            self.mesh.handle_signal(sender, data)
        elif len(self._early) < EARLY_SIGNALS:
            self._early.append((sender, data))

    def relay_received(self, sender: bytes, frame: bytes) -> None:
        if self.mesh is not None and self._ready.is_set():
            self.mesh.handle_relay(sender, frame)
