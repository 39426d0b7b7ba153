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

from rendezvous import ice, wire
from rendezvous.app import SERVER, VERSION, Config, create_app
from rendezvous.stun import StunResponder, serve_stun

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
    nat = parser.add_argument_group(
        "internet play (STUN and TURN)",
        "Players behind home routers find each other with STUN, which this server answers on UDP at "
        "its HTTP port number by default (so one firewall rule, TCP+UDP, covers both). Players behind "
        "strict (symmetric) NATs need a TURN relay: run coturn with use-auth-secret and give this "
        "server the same secret; each player then gets short-lived credentials in its welcome. "
        "See 'Running a public rendezvous' in README.md.",
    )
    nat.add_argument(
        "--stun-port",
        metavar="N",
        type=_port,
        help="UDP port for STUN (default: the HTTP port number; 0 turns STUN off)",
    )
    nat.add_argument(
        "--turn",
        action="append",
        default=[],
        metavar="URL",
        type=_turn_url,
        help="a TURN server to hand out, turn:HOST:PORT[?transport=udp|tcp] or turns:...; repeatable "
        "(needs --turn-secret-file; default: none)",
    )
    nat.add_argument(
        "--turn-secret-file",
        metavar="PATH",
        type=Path,
        help="file holding coturn's static-auth-secret on one line (keep it chmod 600); the secret "
        "is never logged nor shown (default: none, no TURN)",
    )
    nat.add_argument(
        "--turn-lifetime",
        metavar="SECONDS",
        type=_lifetime,
        default=ice.DEFAULT_LIFETIME,
        help="how long handed-out TURN credentials work (default %(default)s = 12 h); a player "
        "gets new ones whenever it reconnects",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser


def _turn_url(text: str) -> str:
    if not wire.is_turn_url(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a TURN URL: turn:HOST:PORT, turn:HOST:PORT?transport=tcp or turns:HOST:PORT"
        )
    return text


def _lifetime(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not ice.MIN_LIFETIME <= value <= ice.MAX_LIFETIME:
        raise argparse.ArgumentTypeError(f"{value} must be {ice.MIN_LIFETIME} to {ice.MAX_LIFETIME} seconds")
    return value


def ice_config_from(args: argparse.Namespace) -> ice.IceConfig:
    """The TURN part of the ICE config (the STUN port is known once the HTTP port is bound);
    ValueError with a sentence for the operator when the flags do not fit together."""
    secret = None
    if args.turn_secret_file is not None:
        if not args.turn:
            raise ValueError("--turn-secret-file without --turn: name the TURN server(s) to hand out")
        secret = ice.read_secret(args.turn_secret_file)
        warning = ice.secret_file_warning(args.turn_secret_file)
        if warning is not None:
            log.warning("%s", warning)
    elif args.turn:
        raise ValueError("--turn needs --turn-secret-file (coturn's static-auth-secret)")
    return ice.IceConfig(turn_urls=tuple(args.turn), turn_secret=secret, turn_lifetime=args.turn_lifetime)


def config_from(args: argparse.Namespace, ice_config: ice.IceConfig | None = None) -> Config:
    return Config(
        ice=ice_config or ice.IceConfig(),
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


class StunPortError(OSError):
    """The STUN port could not be opened."""


async def serve(config: Config, host: str, port: int, stun_port: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then close every websocket and the listening socket.
    STUN listens on `stun_port` (None: the HTTP port, 0: no STUN)."""
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    stun = None
    try:
        await web.TCPSite(runner, host, port).start()
        for address in runner.addresses:
            log.info("listening on http://%s:%d/", *address[:2])
        if stun_port != 0:
            stun_port = stun_port or runner.addresses[0][1]
            stun = await _start_stun(app, host, stun_port)
        turn = app[SERVER].ice
        if turn.turn_urls:
            urls = ", ".join(turn.turn_urls)
            log.info("handing out TURN %s, credentials valid %d s", urls, turn.turn_lifetime)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if stun is not None:
            stun.close()
        await runner.cleanup()


async def _start_stun(app: web.Application, host: str, port: int) -> asyncio.DatagramTransport:
    server = app[SERVER]
    responder = StunResponder(now=asyncio.get_running_loop().time())
    try:
        transport = await serve_stun(responder, host, port)
    except OSError as exc:
        raise StunPortError(
            f"cannot listen for STUN on UDP {host} port {port}: {exc.strerror or exc}"
        ) from None
    server.stun = responder
    server.ice = ice.IceConfig(
        stun_port=port,
        turn_urls=server.ice.turn_urls,
        turn_secret=server.ice.turn_secret,
        turn_lifetime=server.ice.turn_lifetime,
    )
    log.info("STUN on udp://%s:%d", host, port)
    if server.ice.turn_urls:
        log.info(
            "handing out TURN %s, credentials valid %d s",
            ", ".join(server.ice.turn_urls),
            server.ice.turn_lifetime,
        )
    return transport


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
        ice_config = ice_config_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config_from(args, ice_config), args.host, args.port, args.stun_port))
    except StunPortError as exc:
        log.error("%s; pick another with --stun-port N, or --stun-port 0 to go without STUN", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
