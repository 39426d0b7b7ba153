"""Command line of `msxsync-rendezvous`: parse flags, set up logging, serve until a signal.

All behaviour lives in `rendezvous.app`; this module only turns flags into a `Config`, binds the
socket and shuts down cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from importlib import resources
from pathlib import Path

from aiohttp import web

from rendezvous.app import VERSION, Config, create_app

log = logging.getLogger("msxsync.rendezvous")
DEFAULT_PORT = 4567
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{value} must be above 0 and at most 3600")
    return value


class _PrintProtocol(argparse.Action):
    """`--protocol`: print PROTOCOL.md, which ships inside the package, and exit."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(resources.files("rendezvous").joinpath("PROTOCOL.md").read_text(encoding="utf-8"))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="msxsync-rendezvous",
        description="Serve msxsync games, rooms and WebRTC signalling so players can meet. "
        "Game traffic never passes through it: players talk to each other directly. "
        "--protocol prints the protocol it speaks (HTTP API, lobby and signalling websocket).",
    )
    parser.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on (default %(default)s: every IPv4 interface, as a public "
        "server wants; use 127.0.0.1 to stay local or :: for IPv6)",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="port (default %(default)s; 0 picks one)"
    )
    parser.add_argument(
        "--games",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a games folder of *.regions (and ROMs); repeat for more; default: the bundled games",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=LEVELS,
        type=str.upper,
        help="least important messages to log, any case (default %(default)s)",
    )
    parser.add_argument(
        "--log-file", type=Path, metavar="PATH", help="log here instead of stderr (default: stderr)"
    )
    parser.add_argument(
        "--protocol",
        action=_PrintProtocol,
        help="print the protocol description that ships with this server, and exit (default: serve)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-clients",
        metavar="N",
        type=_positive_int,
        default=defaults.max_clients,
        help="simultaneous websocket connections (default %(default)s)",
    )
    limits.add_argument(
        "--max-rooms",
        metavar="N",
        type=_positive_int,
        default=defaults.max_rooms,
        help="most rooms open at once (default %(default)s)",
    )
    limits.add_argument(
        "--room-capacity",
        metavar="N",
        type=_positive_int,
        default=defaults.room_capacity,
        help="most players in one room, at least 2 (default %(default)s)",
    )
    limits.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=_seconds,
        default=defaults.heartbeat,
        help="seconds between pings; a silent client is dropped after 1.5x this (default %(default)s)",
    )
    limits.add_argument(
        "--hello-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=defaults.hello_timeout,
        help="seconds a new connection has to say hello (default %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser


def config_from(args: argparse.Namespace) -> Config:
    return Config(
        games=list(args.games) or None,
        max_clients=args.max_clients,
        max_rooms=args.max_rooms,
        room_capacity=args.room_capacity,
        heartbeat=args.heartbeat,
        hello_timeout=args.hello_timeout,
    )


def setup_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


async def serve(config: Config, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then close every websocket and the listening socket."""
    runner = web.AppRunner(create_app(config), shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        for address in runner.addresses:
            log.info("listening on http://%s:%d/", *address[:2])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.room_capacity < 2:
        parser.error("--room-capacity must be at least 2")
    try:
        setup_logging(args.log_level, args.log_file)
    except OSError as exc:
        parser.error(f"cannot open the log file: {exc}")
    try:
        asyncio.run(serve(config_from(args), args.host, args.port))
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
