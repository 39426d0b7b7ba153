"""Child process for the LAN discovery test: runs inside a network namespace (`ip netns exec`).

`announce` announces a host (and, with --hostile, a few malformed msxsync services next to it),
prints `ready <instance name>` and keeps announcing until its stdin closes; without --interface it
uses the defaults a real host uses (every interface, every address of the namespace). `discover`
browses and prints the hosts it found as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator

from zeroconf import InterfaceChoice
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from peer.core.room.lan import SERVICE_TYPE, Announcement
from peer.lan import LanError, announce, discover, local_addresses

GOOD_KEY = "ab" * 32
# Each of these must be skipped by a browser, with a log line, and must not stop it.
HOSTILE: dict[str, dict[str, str | None]] = {
    "bad game": {"v": "1", "game": "../../etc/passwd", "name": "Mallory", "key": GOOD_KEY},
    "bad name": {"v": "1", "game": "demo", "name": "Mal\x1b[31mlory", "key": GOOD_KEY},
    "bad key": {"v": "1", "game": "demo", "name": "Mallory", "key": "not-a-key"},
    "future": {"v": "2", "game": "demo", "name": "Mallory", "key": GOOD_KEY},
    "no value": {"v": "1", "game": None, "name": "Mallory", "key": GOOD_KEY},
    "bad room": {"v": "1", "game": "demo", "room": "x" * 200, "name": "Mallory", "key": GOOD_KEY},
}


@contextlib.asynccontextmanager
async def hostile_services(interface: str | None, port: int) -> AsyncIterator[None]:
    address = interface or local_addresses()[0]
    infos = [
        AsyncServiceInfo(
            SERVICE_TYPE,
            f"hostile {label}.{SERVICE_TYPE}",
            port=port,
            properties=properties,
            server="hostile.local.",
            parsed_addresses=[address],
        )
        for label, properties in HOSTILE.items()
    ]
    async with AsyncZeroconf(interfaces=[address] if interface else InterfaceChoice.All) as aiozc:
        # Side by side: each registration probes and announces for about two seconds.
        async with asyncio.TaskGroup() as group:
            for info in infos:
                group.create_task(register(aiozc, info))
        yield


async def register(aiozc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
    await (await aiozc.async_register_service(info))


async def run_announce(options: argparse.Namespace) -> None:
    announcement = Announcement(options.name, options.game or "demo", options.room, options.key)
    async with contextlib.AsyncExitStack() as stack:
        if options.hostile:
            await stack.enter_async_context(hostile_services(options.interface, options.port))
        name = await stack.enter_async_context(
            announce(
                announcement,
                port=options.port,
                interfaces=[options.interface] if options.interface else None,
            )
        )
        print("ready", name, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def run_discover(options: argparse.Namespace) -> None:
    interfaces = [options.interface] if options.interface else None
    hosts = await discover(options.game, timeout=options.timeout, interfaces=interfaces)
    rows = [
        {"player": h.player, "game": h.game, "room": h.room, "key": h.key, "urls": list(h.urls)}
        for h in hosts
    ]
    print(json.dumps(rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["announce", "discover"])
    parser.add_argument("--interface")
    parser.add_argument("--port", type=int, default=4567)
    parser.add_argument("--name", default="Alice")
    parser.add_argument("--game", help="game to announce (default demo) or to look for (default any)")
    parser.add_argument("--room")
    parser.add_argument("--key", default=GOOD_KEY)
    parser.add_argument("--hostile", action="store_true")
    parser.add_argument("--timeout", type=float, default=3.0)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        asyncio.run(run_announce(options) if options.mode == "announce" else run_discover(options))
    except LanError as error:
        print(f"LanError: {error}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
