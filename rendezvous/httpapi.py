"""HTTP side of the rendezvous: health, the game catalogue, ROM downloads and the status page.

Game names from URLs are only ever looked up in the catalogue, never joined into a path; ROM
bytes are served only if they still hash to what the catalogue (and the ETag) promises. Every
response carries the security headers (`security_headers`); the status page needs no script
and its one style sheet is allowed by its hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import math
import time
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
    relay = server.relay.statistics() if server.config.relay.enabled else None
    stats = {**server.statistics(), "stun": server.stun_statistics(), "relay": relay}
    return web.json_response({**body, **stats})


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
    if etag_matches(request.headers.getall("If-None-Match", []), etag):
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


def etag_matches(header_values: list[str], etag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or a list of entity tags compared weakly (W/ ignored)."""
    for value in header_values:
        for candidate in value.split(","):
            tag = candidate.strip()
            if tag == "*" or tag.removeprefix("W/") == etag:
                return True
    return False


async def room_info(request: web.Request) -> web.Response:
    """One room by its exact name, for players looking for their room after a network split:
    whether it is here, its game and size, and whose program this rendezvous is. Never keys of
    members, passwords or hashes; rooms are not listed (a name must be known). Look-ups are rate
    limited per address (names could be guessed), and with `--hide-private-rooms` a passworded
    room is answered exactly as an absent one: hidden on the status page and here alike."""
    server = request.app[SERVER]
    wait = server.access.room_lookup(server.source_of(request), time.monotonic())
    if wait is not None:
        server.metrics.rate_limited.labels("room_lookups").inc()
        message = f"Too many room look-ups from your address; try again in {math.ceil(wait)} s."
        error = _json_error(web.HTTPTooManyRequests, "rate_limited", message)
        error.headers["Retry-After"] = str(math.ceil(wait))
        raise error
    name = request.match_info["name"]
    if not wire.is_valid_room_name(name):
        raise _json_error(web.HTTPBadRequest, "bad_name", "That is not a valid room name.")
    room = server.lobby.room(name)
    if room is None or (server.config.hide_private_rooms and room.password_hash is not None):
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


STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1d2330;
background:#f6f7fb}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem}
.sub{color:#5a6275;margin:0 0 1rem}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}
.card{background:#fff;border:1px solid #dde1ea;border-radius:8px;padding:.5rem .9rem;min-width:7rem}
.card b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1ea}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #eceef4}
th{background:#eef1f7;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.none{color:#5a6275;font-style:italic}
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REFRESH_SECONDS = 10


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer says what it is and that it runs nothing."""
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control" and name in response.headers:
            continue  # the ROM's own caching rule stays
        response.headers.setdefault(name, value)


def _table(headers: list[str], rows: list[list[str]], empty: str, numeric: tuple[int, ...] = ()) -> str:
    """An HTML table; the columns at `numeric` are right-aligned, every row alike."""
    if not rows:
        return f'<p class="none">{html.escape(empty)}</p>'
    head = "".join(
        f"<th{' class=n' if i in numeric else ''}>{html.escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if i in numeric else ''}>{html.escape(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _amount(value: float) -> str:
    """A limit as people write it: 1,000,000 rather than 1e+06, 0.5 rather than 0.500000."""
    if not math.isfinite(value):
        return "no limit"
    if value == int(value) or abs(value) >= 1000:
        return f"{round(value):,}"
    return f"{value:g}"


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return (f"{days}d " if days else "") + f"{rest // 3600}h {rest // 60 % 60}m {rest % 60}s"


async def status_page(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    config = server.config
    stats = server.statistics()
    games = [
        [e.name, e.definition.title or e.name, "yes" if e.rom else "no"]
        for _, e in sorted(server.catalogue.entries.items())
    ]
    summaries = server.lobby.summaries()
    shown = [r for r in summaries if not (config.hide_private_rooms and r.password)]
    rooms = [
        [
            r.name,
            r.game,
            f"{r.players}/{r.capacity}",
            "yes" if r.password else "no",
            "quick" if r.quick else "",
        ]
        for r in shown
    ]
    hidden = len(summaries) - len(shown)
    src, access = config.sources, config.access
    limits = [
        ["players on this server", _amount(config.max_clients)],
        ["rooms on this server", _amount(config.max_rooms)],
        ["players in a room", _amount(config.room_capacity)],
        ["connections from one address", _amount(src.connections)],
        ["rooms opened by one address", _amount(src.rooms)],
        [
            "messages a second from one connection",
            f"{_amount(config.rate)} (bursts of {_amount(config.burst)})",
        ],
        ["messages a second from one address", f"{_amount(src.rate)} (bursts of {_amount(src.burst)})"],
        ["password checks a minute from one address", _amount(60 * src.password_rate)],
        [
            "password checks a minute at one room (its past members exempt)",
            f"{_amount(60 * access.guess_rate)} (bursts of {_amount(access.guess_burst)})",
        ],
        [
            "TURN credentials a minute for one address's joins",
            f"{_amount(60 * access.turn_rate)} (bursts of {_amount(access.turn_burst)})",
        ],
        [
            "room look-ups a second from one address",
            f"{_amount(access.lookup_rate)} (bursts of {_amount(access.lookup_burst)})",
        ],
        ["share of one network (IPv4 /24, IPv6 /64)", f"{src.network_share} times an address's"],
    ]
    refusals = [[reason, str(count)] for reason, count in sorted(server.refusals.items())]
    cards = [
        ("players", stats["players"]),
        ("connections", stats["connections"]),
        ("rooms", stats["rooms"]),
        ("games", stats["games"]),
        ("refusals", stats["refusals"]),
    ]
    card_html = "".join(f'<div class="card"><b>{n}</b>{html.escape(label)}</div>' for label, n in cards)
    restarting = " Restarting: players will reconnect." if server.restarting else ""
    stun = server.stun_statistics()
    ice = server.ice
    stun_line = (
        "STUN off."
        if stun is None or ice.stun_port is None
        else f"STUN on UDP port {ice.stun_port}: {stun['answered']} answered, {stun['dropped']} dropped."
    )
    turn_line = f" TURN: {html.escape(', '.join(ice.turn_urls))}." if ice.turn_urls else " No TURN."
    note = f"<p class=sub>{hidden} passworded rooms not listed.</p>" if hidden else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>msxsync rendezvous</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<style>{STYLE}</style></head><body>
<h1>msxsync rendezvous</h1>
<p class="sub">Version {html.escape(VERSION)}, protocol {protocol.PROTOCOL_VERSION}.
Up {_duration(stats["uptime_s"])}. Refreshes every {REFRESH_SECONDS} s.{restarting}<br>
{stun_line}{turn_line}</p>
<div class="cards">{card_html}</div>
<h2>Rooms</h2>{note}
{_table(["room", "game", "players", "password", ""], rooms, "No rooms open.", numeric=(2,))}
<h2>Games</h2>
{_table(["name", "title", "ROM here"], games, "No games.")}
<h2>Refusals since start</h2>
{_table(["reason", "count"], refusals, "None.", numeric=(1,))}
<h2>Limits</h2>
{_table(["limit", "value"], limits, "", numeric=(1,))}
</body></html>
"""
    return web.Response(text=page, content_type="text/html")
