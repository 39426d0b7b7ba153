"""Command line of `msxsync-rendezvous`: parse flags, set up logging, serve until a signal.

All behaviour lives in `rendezvous.app`; this module only turns flags into a `Config`, sets up
logging (text or `--log-format json`), binds the guarded socket (`rendezvous.listener`, with TLS
when given a certificate), serves metrics on their own address when asked, and stops: on SIGTERM
clients are told the server is restarting (they reconnect and rejoin), on Ctrl-C it just closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import resource
import signal
import ssl
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from rendezvous import listener
from rendezvous.app import SERVER, VERSION, Config, announce_restart, create_app
from rendezvous.metrics import metrics_app

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


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="msxsync-rendezvous",
        description="Serve msxsync games, rooms and WebRTC signalling so players can meet. "
        "Game traffic never passes through it: players talk to each other directly. "
        "The protocol is described in rendezvous/PROTOCOL.md.",
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
    parser.add_argument("--log-level", default="INFO", choices=LEVELS, type=str.upper)
    parser.add_argument("--log-file", type=Path, metavar="PATH", help="log here instead of stderr")
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object a line for log shippers (default %(default)s)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="serve https:// and wss:// with this certificate chain (with --tls-key)",
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--metrics",
        type=_address,
        metavar="ADDR:PORT",
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (default: off; keep it private)",
    )
    parser.add_argument(
        "--trust-proxy",
        action="append",
        default=[],
        type=_ip,
        metavar="ADDR",
        help="a reverse proxy whose X-Forwarded-For names the real source; repeat for more",
    )
    parser.add_argument(
        "--hide-private-rooms",
        action="store_true",
        help="leave rooms that have a password off the status page",
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
    src = defaults.sources
    per = parser.add_argument_group(
        "limits per source address",
        "what one address may hold, so that one host cannot shut the others out; the defaults "
        "let a family or a LAN party behind one address play",
    )
    per.add_argument(
        "--connections-per-address",
        metavar="N",
        type=_positive_int,
        default=src.connections,
        help="open websocket connections (default %(default)s)",
    )
    per.add_argument(
        "--rooms-per-address",
        metavar="N",
        type=_positive_int,
        default=src.rooms,
        help="rooms it created that are still open (default %(default)s)",
    )
    per.add_argument(
        "--messages-per-address",
        metavar="N",
        type=_positive_int,
        default=int(src.rate),
        help=f"messages a second over all its connections, bursts of {src.burst}; outlives "
        "reconnects (default %(default)s; one connection: 20 a second, bursts of 60)",
    )
    per.add_argument(
        "--password-checks-per-minute",
        metavar="N",
        type=_positive_int,
        default=int(60 * src.password_rate),
        help=f"password checks, after a burst of {src.password_burst}, "
        f"{src.password_checks} at once (default %(default)s)",
    )
    per.add_argument(
        "--http-connections-per-address",
        metavar="N",
        type=_positive_int,
        default=defaults.http_per_source,
        help="open HTTP connections, websockets included (default %(default)s; of "
        f"{defaults.max_http_connections} in all, fewer if the open-files limit is lower)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDR:PORT")
    return host.strip("[]"), _port(port)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def config_from(args: argparse.Namespace) -> Config:
    defaults = Config()
    sources = replace(
        defaults.sources,
        connections=args.connections_per_address,
        rooms=args.rooms_per_address,
        rate=float(args.messages_per_address),
        burst=max(4 * args.messages_per_address, 1),
        password_rate=args.password_checks_per_minute / 60,
    )
    return Config(
        games=list(args.games) or None,
        max_clients=args.max_clients,
        max_rooms=args.max_rooms,
        room_capacity=args.room_capacity,
        heartbeat=args.heartbeat,
        hello_timeout=args.hello_timeout,
        sources=sources,
        trusted_proxies=frozenset(args.trust_proxy),
        hide_private_rooms=args.hide_private_rooms,
        http_per_source=max(args.http_connections_per_address, args.connections_per_address + 4),
        max_http_connections=_http_cap(defaults.max_http_connections),
    )


def _http_cap(wanted: int) -> int:
    """Open HTTP connections in all: under the open-files limit (raised to its hard ceiling), with
    room to spare for the listening sockets, logs, games and the hashing threads."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(16, min(wanted, soft - 64))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the `event` fields a log call
    passed in `extra` (join, leave, refusal: its source, key, room and reason)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update(event)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, log_file: Path | None, log_format: str = "text") -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler()
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve(
    config: Config,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    metrics: tuple[str, int] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. SIGTERM first tells every client to reconnect (a restart);
    then every websocket and the listening socket are closed."""
    app = create_app(config)
    loop = asyncio.get_running_loop()
    listener.throttle_accept_errors(loop)
    runner = listener.runner(app, config.keepalive_timeout)
    await runner.setup()
    runners = [runner]
    try:
        guard = listener.ConnectionGuard(
            config.max_http_connections, config.http_per_source, config.trusted_proxies
        )
        await listener.GuardedSite(runner, host, port, guard, ssl_context=tls).start()
        scheme = "https" if tls else "http"
        for address in runner.addresses:
            log.info("listening on %s://%s:%d/", scheme, *address[:2])
        if metrics is not None:
            metrics_runner = web.AppRunner(metrics_app(app[SERVER].metrics), access_log=None)
            await metrics_runner.setup()
            runners.append(metrics_runner)
            await web.TCPSite(metrics_runner, *metrics).start()
            log.info("metrics on http://%s:%d/metrics", *metrics_runner.addresses[0][:2])
        stop = asyncio.Event()
        restart = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, restart.set)
        await _first(stop.wait(), restart.wait())
        if restart.is_set():
            await _wait_clients_told(app, config.close_timeout)
        log.info("shutting down")
    finally:
        for each in reversed(runners):
            await each.cleanup()


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _wait_clients_told(app: web.Application, within: float) -> None:
    """Tell every client to reconnect, and give them until `within` to take the message."""
    server = app[SERVER]
    if announce_restart(app) == 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_no_sockets(), within)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.room_capacity < 2:
        parser.error("--room-capacity must be at least 2")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    try:
        setup_logging(args.log_level, args.log_file, args.log_format)
    except OSError as exc:
        parser.error(f"cannot open the log file: {exc}")
    tls = None
    if args.tls_cert is not None:
        try:
            tls = tls_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"cannot load the TLS certificate or key: {exc}")
    try:
        asyncio.run(serve(config_from(args), args.host, args.port, tls=tls, metrics=args.metrics))
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
