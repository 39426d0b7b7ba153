"""HTTP side of the rendezvous: health, the game catalogue, ROM downloads and the status page.

Game names from URLs are only ever looked up in the catalogue, never joined into a path; ROM
bytes are served only if they still hash to what the catalogue (and the ETag) promises.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
from pathlib import Path

from aiohttp import web

from games.catalogue import CatalogueEntry
from games.definition import is_valid_game_name
from rendezvous import protocol, wire
from rendezvous.state import SERVER, VERSION, log

# --- HTTP ---------------------------------------------------------------------------------


def _json_error(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    body = json.dumps({"error": code, "message": message})
    return status(text=body, content_type="application/json")


def _entry(request: web.Request) -> CatalogueEntry:
    name = request.match_info["name"]
    if not is_valid_game_name(name):
        raise _json_error(web.HTTPBadRequest, "bad_name", "That is not a valid game name.")
    entry = request.app[SERVER].catalogue.get(name)
    if entry is None:
        raise _json_error(web.HTTPNotFound, "unknown_game", "This server has no such game.")
    return entry


def game_summary(entry: CatalogueEntry) -> dict[str, object]:
    definition = entry.definition
    rom = entry.rom
    return {
        "name": entry.name,
        "title": definition.title or entry.name,
        "machine": definition.machine,
        "romtype": definition.romtype,
        "rom": None if rom is None else {"size": rom.size, "sha1": rom.sha1, "sha256": rom.sha256},
        "rom_available": rom is not None,
        "known_roms": [{"sha1": k.sha1, "remark": k.remark} for k in definition.known_roms],
    }


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    body = {"status": "ok", "version": VERSION, "protocol": protocol.PROTOCOL_VERSION}
    return web.json_response({**body, **server.statistics(), "stun": server.stun_statistics()})


async def list_games(request: web.Request) -> web.Response:
    entries = request.app[SERVER].catalogue.entries
    return web.json_response({"games": [game_summary(entries[n]) for n in sorted(entries)]})


async def game_detail(request: web.Request) -> web.Response:
    entry = _entry(request)
    return web.json_response({**game_summary(entry), "definition": entry.definition.to_json()})


async def game_rom(request: web.Request) -> web.Response:
    entry = _entry(request)
    rom = entry.rom
    if rom is None:
        raise _json_error(web.HTTPNotFound, "rom_absent", "This server does not have that ROM.")
    etag = f'"{rom.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    cache = request.app[SERVER].roms
    data = cache.get(entry.name)
    if data is None:
        # Read and check once, off the loop; later requests cost neither disk nor hashing.
        data = await asyncio.to_thread(_read_rom, rom.path, rom.sha256)
        if data is None:
            log.warning("%s changed on disk since start; not serving it", rom.path)
            raise _json_error(web.HTTPNotFound, "rom_absent", "The ROM changed on this server.")
        cache[entry.name] = data
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


async def room_info(request: web.Request) -> web.Response:
    """One room by its exact name, for players looking for their room after a network split:
    whether it is here, its game and size, and whose program this rendezvous is. Never keys of
    members, passwords or hashes; rooms are not listed (a name must be known)."""
    name = request.match_info["name"]
    if not wire.is_valid_room_name(name):
        raise _json_error(web.HTTPBadRequest, "bad_name", "That is not a valid room name.")
    server = request.app[SERVER]
    room = server.lobby.room(name)
    if room is None:
        raise _json_error(web.HTTPNotFound, "unknown_room", "There is no room of that name here.")
    body = {
        "room": room.name,
        "game": room.game,
        "players": len(room.members),
        "capacity": room.capacity,
        "password": room.password_hash is not None,
        "hosted_by": server.config.hosted_by,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _read_rom(path: Path, sha256: str) -> bytes | None:
    """The ROM bytes, only if they are still the ones hashed at start (the ETag promises that)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


async def status_page(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    esc = html.escape
    stats = server.statistics()
    uptime = stats["uptime_s"]
    games = "".join(
        f"<tr><td>{esc(e.name)}</td><td>{esc(e.definition.title or e.name)}</td>"
        f"<td>{'yes' if e.rom else 'no'}</td></tr>"
        for _, e in sorted(server.catalogue.entries.items())
    )
    rooms = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{esc(r.game)}</td><td>{r.players}/{r.capacity}</td>"
        f"<td>{'yes' if r.password else 'no'}</td></tr>"
        for r in server.lobby.summaries()
    )
    stun = server.stun_statistics()
    ice = server.ice
    stun_line = (
        "STUN off."
        if stun is None or ice.stun_port is None
        else f"STUN on UDP port {ice.stun_port}: {stun['answered']} answered, {stun['dropped']} dropped."
    )
    turn_line = f" TURN: {esc(', '.join(ice.turn_urls))}." if ice.turn_urls else " No TURN."
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>msxsync rendezvous</title></head><body>
<h1>msxsync rendezvous {esc(VERSION)}</h1>
<p>Protocol {protocol.PROTOCOL_VERSION}. Up {uptime // 3600}h {uptime // 60 % 60}m {uptime % 60}s.
{stats["connections"]} connected ({stats["players"]} said hello), {stats["rooms"]} rooms.
{stun_line}{turn_line}</p>
<h2>Games</h2>
<table><tr><th>name</th><th>title</th><th>ROM here</th></tr>{games}</table>
<h2>Rooms</h2>
<table><tr><th>room</th><th>game</th><th>players</th><th>password</th></tr>{rooms}</table>
</body></html>
"""
    return web.Response(text=page, content_type="text/html")
