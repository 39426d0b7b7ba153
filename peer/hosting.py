"""Hosting the rendezvous inside a peer, and finding such a host on the local network.

`hosting()` runs the same application as `msxsync-rendezvous` in this process; `find_lan_host()`
browses mDNS for hosts of a game (see `peer.lan`) and chooses one as `peer.core.room.lan.choose` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import ipaddress
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web

from games.catalogue import CatalogueEntry, bundled_games_dir, load_catalogue
from peer import lan
from peer.core.room.lan import Chosen, DiscoveredHost, NoHost, Several, choose, join_hint
from peer.options import PeerOptions, PlayerError

log = logging.getLogger("msxsync.peer")

LAN_DISCOVERY_SECONDS = 3.0
LAN_NETWORK_SHARE = 64  # a LAN party: up to 64 players of one /24, each with an address's share


@contextlib.asynccontextmanager
async def hosting(
    options: PeerOptions, current: CatalogueEntry | None = None, *, hosted_by: bytes | None = None
) -> AsyncIterator[str]:
    """Run the rendezvous in this process (the same application as msxsync-rendezvous).

    It serves the bundled games plus `--games` folders, and `current` (the game being played,
    with our ROM) when this peer takes over hosting, so newcomers can still get it here. Its
    welcome names `hosted_by` (our key): players know it is a player's program, which another
    may replace if this one goes away (issue 17)."""
    from rendezvous.app import Config, create_app
    from rendezvous.fairness import SourceLimits

    folders = [Path(folder) for folder in options.games]
    # (off the event loop: it hashes every ROM, and a takeover comes in the middle of a game)
    catalogue = await asyncio.to_thread(load_catalogue, [*folders, bundled_games_dir()])
    for problem in catalogue.problems:
        log.warning("games: %s", problem)
    if current is not None:
        catalogue.entries.setdefault(current.name, current)
    # On a LAN every player is in one /24: there, a network's share must not be what limits them.
    sources = SourceLimits(network_share=LAN_NETWORK_SHARE)
    config = Config(catalogue=catalogue, hosted_by=hosted_by.hex() if hosted_by else None, sources=sources)
    runner = web.AppRunner(create_app(config), handle_signals=False)
    await runner.setup()
    listen = listen_address(options)
    site = web.TCPSite(runner, listen, options.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise PlayerError(
            f"cannot host on port {options.port} ({exc.strerror}); pick another with --port."
        ) from None
    hint = join_hint(lan.local_addresses(), options.port, listen)
    print(f"msxsync-peer: hosting on port {options.port}; {hint}", file=sys.stderr)
    try:
        yield f"http://127.0.0.1:{options.port}"
    finally:
        await runner.cleanup()


def listen_address(options: PeerOptions) -> str:
    """Every IPv4 interface, or loopback only when --ice-address keeps play on this machine (the
    demo: its rendezvous opens no port to the network)."""
    return "127.0.0.1" if play_stays_on_this_machine(options) else "0.0.0.0"


def play_stays_on_this_machine(options: PeerOptions) -> bool:
    """--ice-address names loopback addresses only (several players on one machine, the demo)."""
    addresses = [ipaddress.ip_address(a) for a in options.ice_addresses]
    return bool(addresses) and all(a.is_loopback for a in addresses)


async def find_lan_host(options: PeerOptions) -> DiscoveredHost:
    """The host on this network that runs our game (and room, if named); with several, the player
    picks one at the terminal (or names it with --room)."""
    print(f"msxsync-peer: looking for a {options.game} host on this network...", file=sys.stderr)
    try:
        hosts = await lan.discover(options.game, timeout=LAN_DISCOVERY_SECONDS)
    except lan.LanError as exc:
        raise PlayerError(
            f"cannot search the local network ({exc}); give --rendezvous URL instead."
        ) from None
    match choose(hosts, game=options.game, room=options.room):
        case Chosen(host):
            log.info("found %s", host.describe())
            return host
        case NoHost() as none:
            raise PlayerError(
                none.describe() + "; ask a friend to start with --host, or give --rendezvous URL."
            )
        case Several() as several:
            if not sys.stdin.isatty():
                raise PlayerError(several.describe())
            return await asyncio.to_thread(_pick, several.hosts)
    raise AssertionError("unreachable")  # pragma: no cover


def _pick(hosts: Sequence[DiscoveredHost]) -> DiscoveredHost:
    """Ask the player which host to join (a terminal is there)."""
    print(f"msxsync-peer: {len(hosts)} hosts of this game on the network:", file=sys.stderr)
    for number, host in enumerate(hosts, start=1):
        print(f"  {number}. {host.describe()}", file=sys.stderr)
    while True:
        try:
            answer = input(f"join which one (1-{len(hosts)})? ").strip()
        except EOFError:
            raise PlayerError("no host chosen; pick one with --room or --rendezvous URL.") from None
        if answer.isdigit() and 1 <= int(answer) <= len(hosts):
            return hosts[int(answer) - 1]
        print(f"type a number from 1 to {len(hosts)}", file=sys.stderr)


def lan_options(options: PeerOptions, host: DiscoveredHost) -> PeerOptions:
    """--lan joins the room the host announced (unless --room named one), asking for its password
    at the terminal when it has one and none was given."""
    room = options.room if options.room is not None else host.room
    password = options.password
    if host.password and password is None:
        if not sys.stdin.isatty():
            raise PlayerError(f"{host.player}'s room {room} has a password: pass --password.")
        password = getpass.getpass(f"password of {host.player}'s room {room}: ")
    print(f"msxsync-peer: joining {host.describe()}", file=sys.stderr)
    return dataclasses.replace(options, room=room, password=password)
