"""Hosting the rendezvous inside a peer, and finding such a host on the local network.

`hosting()` runs the same application as `msxsync-rendezvous` in this process; `find_lan_host()`
browses mDNS for hosts of a game (see `peer.lan`) and chooses one as `peer.core.lan.choose` says.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from games.catalogue import CatalogueEntry, bundled_games_dir, load_catalogue
from peer import lan
from peer.core.lan import Chosen, NoHost, Several, choose, join_hint
from peer.options import PeerOptions, PlayerError

log = logging.getLogger("msxsync.peer")

LAN_DISCOVERY_SECONDS = 3.0


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

    folders = [Path(folder) for folder in options.games]
    catalogue = load_catalogue([*folders, bundled_games_dir()])
    for problem in catalogue.problems:
        log.warning("games: %s", problem)
    if current is not None:
        catalogue.entries.setdefault(current.name, current)
    runner = web.AppRunner(
        create_app(Config(catalogue=catalogue, hosted_by=hosted_by.hex() if hosted_by else None)),
        handle_signals=False,
    )
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
    addresses = options.ice_addresses
    if addresses and all(a.startswith("127.") or a == "::1" for a in addresses):
        return "127.0.0.1"
    return "0.0.0.0"


async def find_lan_host(options: PeerOptions) -> str:
    """The rendezvous URL of the host on this network that runs our game (and room, if named)."""
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
            return host.url
        case NoHost() as none:
            raise PlayerError(
                none.describe() + "; ask a friend to start with --host, or give --rendezvous URL."
            )
        case Several() as several:
            raise PlayerError(several.describe())
    raise AssertionError("unreachable")  # pragma: no cover
