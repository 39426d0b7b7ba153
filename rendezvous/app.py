"""The rendezvous aiohttp application factory.

`create_app(config)` builds a self-contained `web.Application` (catalogue loaded from disk at
creation, lobby, hashing threads, routes), so the same server runs from the command line or
inside a peer for LAN play. HTTP handlers live in `rendezvous.httpapi`, the lobby WebSocket in
`rendezvous.lobby_socket`, shared state in `rendezvous.state`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from games.catalogue import Catalogue, bundled_games_dir, load_catalogue
from rendezvous import httpapi
from rendezvous.lobby_socket import websocket_handler
from rendezvous.rooms import Lobby, LobbyLimits
from rendezvous.state import SERVER, SERVER_NAME, VERSION, Config, Hasher, Server, log

__all__ = ["SERVER", "SERVER_NAME", "VERSION", "Config", "Server", "create_app"]


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


async def _close_sockets(app: web.Application) -> None:
    sockets = list(app[SERVER].sockets)
    if sockets:
        log.info("closing %d websockets", len(sockets))
    message = b"server shutting down"
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=message) for ws in sockets),
        return_exceptions=True,
    )


def create_app(config: Config | None = None) -> web.Application:
    """A ready rendezvous application; run it with `web.run_app` or an `AppRunner`."""
    config = config or Config()
    limits = LobbyLimits(max_rooms=config.max_rooms, room_capacity=config.room_capacity)
    app = web.Application()
    hasher = Hasher(config.hash_concurrency, config.hash_waiting)
    app[SERVER] = Server(config, load_games(config), Lobby(limits), hasher)
    app.cleanup_ctx.append(_hashing_threads)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/", httpapi.status_page)
    app.router.add_get("/healthz", httpapi.healthz)
    app.router.add_get("/api/games", httpapi.list_games)
    app.router.add_get("/api/games/{name}", httpapi.game_detail)
    app.router.add_get("/api/games/{name}/rom", httpapi.game_rom)
    app.router.add_get("/api/rooms/{name}", httpapi.room_info)
    app.router.add_get("/ws", websocket_handler)
    return app
