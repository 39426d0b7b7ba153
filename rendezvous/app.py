"""The rendezvous aiohttp application factory.

`create_app(config)` builds a self-contained `web.Application` (catalogue loaded from disk at
creation, lobby, hashing threads, routes), so the same server runs from the command line or
inside a peer for LAN play. HTTP handlers live in `rendezvous.httpapi`, the lobby WebSocket in
`rendezvous.lobby_socket`, shared state in `rendezvous.state`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from games.catalogue import Catalogue, bundled_games_dir, load_catalogue
from rendezvous import httpapi, listener
from rendezvous.lobby_socket import tell_restarting, websocket_handler
from rendezvous.persist import load_reservations, save_reservations
from rendezvous.reservations import PER_SOURCE, ReservationLimits, Reservations
from rendezvous.rooms import Lobby, LobbyLimits
from rendezvous.state import SERVER, SERVER_NAME, VERSION, Config, Hasher, Server, log

__all__ = ["SERVER", "SERVER_NAME", "VERSION", "Config", "Server", "announce_restart", "create_app"]


def load_games(config: Config) -> Catalogue:
    if config.catalogue is not None:
        return config.catalogue
    catalogue = load_catalogue(config.games if config.games else [bundled_games_dir()])
    for problem in catalogue.problems:
        log.warning("game definition skipped: %s", problem)
    log.info("serving %d games: %s", len(catalogue.entries), ", ".join(sorted(catalogue.entries)))
    return catalogue


async def _hashing_threads(app: web.Application) -> AsyncIterator[None]:
    """Shut the password-hashing threads down when the application stops."""
    yield
    app[SERVER].hasher.close()


async def _reserved_names(app: web.Application) -> AsyncIterator[None]:
    """With a state folder: the reserved room names of the last run at start, this run's at stop
    (`rendezvous.persist`), so a restart does not hand a room's name to the first who asks."""
    server = app[SERVER]
    folder = server.config.state_dir
    clock = asyncio.get_running_loop().time
    if folder is not None:
        held = load_reservations(server.lobby.reservations, folder, clock())
        log.info("%d room names reserved for their players (from %s)", held, folder)
    yield
    if folder is None:
        return
    kept = server.lobby.reservations_at_stop(now=clock())
    try:
        path = save_reservations(kept, folder, clock())
    except OSError as exc:
        log.error("cannot keep the reserved room names in %s: %s", folder, exc.strerror or exc)
    else:
        log.info("kept %d reserved room names in %s", len(kept), path)


async def _log_summaries(app: web.Application) -> AsyncIterator[None]:
    """Once a log window: one line per source and kind of what the log sampler left out (a
    flood from one address is a line of each kind and then these, not a line each)."""
    server = app[SERVER]

    async def summarise() -> None:
        while True:
            await asyncio.sleep(server.config.log_window)
            write_summaries(server)

    task = asyncio.create_task(summarise())
    yield
    task.cancel()
    write_summaries(server)


def write_summaries(server: Server) -> None:
    window = time.monotonic() - server.log_sampler.started
    for item in server.log_sampler.flush(time.monotonic()):
        log.warning(
            "%s: %d more %s lines in the last %.0f s, not logged one by one",
            item.source,
            item.count,
            item.kind,
            window,
            extra={"event": {"event": "suppressed", **dataclasses.asdict(item)}},
        )


async def _close_sockets(app: web.Application) -> None:
    """Whatever is still open at shutdown: after SIGTERM (a restart) close code 1012, as every
    client was told, else 1001 (going away)."""
    server = app[SERVER]
    sockets = list(server.sockets)
    if sockets:
        log.info("closing %d websockets", len(sockets))
    if server.restarting:
        code, message = WSCloseCode.SERVICE_RESTART, b"server restarting"
    else:
        code, message = WSCloseCode.GOING_AWAY, b"server shutting down"
    await asyncio.gather(
        *(ws.close(code=code, message=message) for ws in sockets),
        return_exceptions=True,
    )


def announce_restart(app: web.Application) -> int:
    """SIGTERM: tell every client the server is restarting (a fatal `server_restarting` error,
    then close code 1012) so that it reconnects, to this address, and rejoins its room by name;
    the rooms' state lives in the peers. New connections, and hellos and joins on connections
    that had not said hello yet, are refused the same way meanwhile.
    Returns how many clients were told."""
    server = app[SERVER]
    server.restarting = True
    server.lobby.stopping = True  # the rooms they leave now are all kept for them
    clients = list(server.clients.values())
    for client in clients:
        tell_restarting(client)
    log.info("restarting: told %d clients to reconnect", len(clients))
    return len(clients)


def create_app(config: Config | None = None) -> web.Application:
    """A ready rendezvous application; run it with `web.run_app` or an `AppRunner`."""
    config = config or Config()
    src = config.sources
    limits = LobbyLimits(config.max_rooms, config.room_capacity, src.rooms, src.network_share * src.rooms)
    app = web.Application()
    hasher = Hasher(config.hash_concurrency, config.hash_waiting)
    held = ReservationLimits(
        config.reservation_hold, config.max_reservations, PER_SOURCE, src.network_share * PER_SOURCE
    )
    reserved = Reservations(held)
    app[SERVER] = Server(config, load_games(config), Lobby(limits, reserved), hasher)
    app[listener.LOG_SAMPLER] = app[SERVER].log_sampler
    app[listener.SOURCE_OF] = app[SERVER].source_of
    app.cleanup_ctx.append(_hashing_threads)
    app.cleanup_ctx.append(_reserved_names)
    app.cleanup_ctx.append(_log_summaries)
    app.on_shutdown.append(_close_sockets)
    app.on_response_prepare.append(httpapi.security_headers)
    app.router.add_get("/", httpapi.status_page)
    app.router.add_get("/healthz", httpapi.healthz)
    app.router.add_get("/api/games", httpapi.list_games)
    app.router.add_get("/api/games/{name}", httpapi.game_detail)
    app.router.add_get("/api/games/{name}/rom", httpapi.game_rom)
    app.router.add_get("/api/rooms/{name}", httpapi.room_info)
    app.router.add_get("/ws", websocket_handler)
    return app
