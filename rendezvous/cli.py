"""Command line of `msxsync-rendezvous`: parse flags, set up logging, serve until a signal.

All behaviour lives in `rendezvous.app`; this module only turns flags into a `Config`, sets up
logging (text or `--log-format json`, `rendezvous.logs`), binds the guarded socket
(`rendezvous.listener`, with TLS when given a certificate) and STUN, serves metrics on their own
address when asked, and stops: on SIGTERM clients are told the server is restarting (they
reconnect and rejoin), on Ctrl-C it just closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import ssl
import sys
from collections.abc import Coroutine
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from rendezvous import ice, listener, wire
from rendezvous.app import SERVER, VERSION, Config, announce_restart, create_app
from rendezvous.logs import setup_logging
from rendezvous.metrics import metrics_app
from rendezvous.relay import MIN_COST, RelayLimits
from rendezvous.state import PROXY_HEADERS
from rendezvous.stop_signals import on_signals
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


def _relay_rate(text: str) -> int:
    """Bytes a second through the relay: the burst (4x) must hold one frame's least cost."""
    value = _positive_int(text)
    if not MIN_COST <= 4 * value <= 1 << 30:
        raise argparse.ArgumentTypeError(f"{value} must be between {MIN_COST // 4} and {(1 << 30) // 4}")
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


def _default_state_dir() -> Path | None:
    """systemd's StateDirectory= (contrib/msxsync-rendezvous.service): the first one it names."""
    named = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(named) if named else None


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
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object a line for log shippers (default %(default)s)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="serve https:// and wss:// with this certificate chain (with --tls-key; default: plain http)",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert (default: none)"
    )
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
        help="a reverse proxy whose X-Forwarded-For (or Forwarded, see --proxy-header) names the "
        "real source; repeat for more (default: none, the socket's address counts)",
    )
    parser.add_argument(
        "--proxy-header",
        default=defaults.proxy_header,
        choices=PROXY_HEADERS,
        type=str.lower,
        help="the header --trust-proxy writes the client's address in: X-Forwarded-For, or RFC 7239 "
        "Forwarded (for=); only that one is read, so a client cannot forge the other "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--tls-handshake-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=defaults.tls_handshake_timeout,
        help="seconds from a connection's accept to its finished TLS handshake; later it is closed "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--hide-private-rooms",
        action="store_true",
        help="leave rooms that have a password off the status page (default: listed, without their password)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        default=_default_state_dir(),
        help="keep the reserved room names here across a restart (reservations.json, written when "
        "the server stops, read when it starts) so that a stranger cannot take a room's name while "
        "its players reconnect (default: systemd's $STATE_DIRECTORY when set, else none: not kept)",
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
        "--room-reservation",
        metavar="SECONDS",
        type=_seconds,
        default=defaults.reservation_hold,
        help="an emptied room's name, password and bans stay reserved for its past players this "
        "long, so they can rejoin after a blip or a restart and nobody else can take it "
        "(default %(default)s)",
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
        "server the same secret; each player in a room then gets short-lived credentials, renewed "
        "while it stays a member. "
        "See 'Running a public rendezvous' in README.md.",
    )
    nat.add_argument(
        "--no-relay",
        action="store_true",
        help="do not relay mesh messages for players who reach each other neither directly nor "
        "through TURN (the relay is on by default: the last resort, rate limited per player and room)",
    )
    nat.add_argument(
        "--relay-rate",
        metavar="BYTES",
        type=_relay_rate,
        default=64 * 1024,
        help="bytes a second one player may send through the relay (default %(default)s; a room "
        "gets four times that, all its players together)",
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
        help="how long handed-out TURN credentials work (default %(default)s = 20 minutes); a room's "
        "member gets new ones before they expire, a player who leaves or is kicked none",
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
        f"reconnects (default %(default)s; one connection: {defaults.rate:g} a second, "
        f"bursts of {defaults.burst})",
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
    per.add_argument(
        "--network-share",
        metavar="N",
        type=_positive_int,
        default=src.network_share,
        help="an IPv4 /24 or IPv6 /64 network may hold N times each share of one address, all its "
        "addresses together: room for shared addresses (CGNAT, a campus, privacy addresses), and "
        "short of a server's worth (default %(default)s)",
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
    defaults = Config()
    sources = replace(
        defaults.sources,
        connections=args.connections_per_address,
        rooms=args.rooms_per_address,
        rate=float(args.messages_per_address),
        burst=max(4 * args.messages_per_address, 1),
        password_rate=args.password_checks_per_minute / 60,
        network_share=args.network_share,
    )
    return Config(
        ice=ice_config or ice.IceConfig(),
        games=list(args.games) or None,
        max_clients=args.max_clients,
        max_rooms=args.max_rooms,
        room_capacity=args.room_capacity,
        heartbeat=args.heartbeat,
        hello_timeout=args.hello_timeout,
        sources=sources,
        trusted_proxies=frozenset(args.trust_proxy),
        proxy_header=args.proxy_header,
        tls_handshake_timeout=args.tls_handshake_timeout,
        hide_private_rooms=args.hide_private_rooms,
        reservation_hold=args.room_reservation,
        state_dir=args.state_dir,
        http_per_source=max(args.http_connections_per_address, args.connections_per_address + 4),
        max_http_connections=listener.http_cap(defaults.max_http_connections),
        relay=RelayLimits(
            enabled=not args.no_relay,
            client_rate=float(args.relay_rate),
            client_burst=4 * args.relay_rate,  # (the defaults: a send queue's relay share ...
            room_rate=4.0 * args.relay_rate,
            room_burst=16 * args.relay_rate,  # ... and its whole bound)
        ),
    )


class StunPortError(OSError):
    """The STUN port could not be opened."""


async def serve(
    config: Config,
    host: str,
    port: int,
    stun_port: int | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    metrics: tuple[str, int] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. SIGTERM first tells every client to reconnect (a restart);
    then every websocket and the listening socket are closed. STUN listens on `stun_port`
    (None: the HTTP port, 0: no STUN); metrics on `metrics` when given."""
    app = create_app(config)
    loop = asyncio.get_running_loop()
    listener.throttle_accept_errors(loop)
    runner = listener.runner(app, config.keepalive_timeout)
    await runner.setup()
    runners = [runner]
    stun = None
    try:
        guard = public_guard(config)
        site = listener.GuardedSite(runner, host, port, guard, config.tls_handshake_timeout, ssl_context=tls)
        await site.start()
        scheme = "https" if tls else "http"
        for address in runner.addresses:
            log.info("listening on %s://%s:%d/", scheme, *address[:2])
        if metrics is not None:
            runners.append(await _serve_metrics(app, metrics))
        if stun_port != 0:
            stun_port = stun_port or runner.addresses[0][1]
            stun = await start_stun(app, host, stun_port)
        turn = app[SERVER].ice
        if turn.turn_urls:
            urls = ", ".join(turn.turn_urls)
            log.info("handing out TURN %s, credentials valid %d s", urls, turn.turn_lifetime)
        stop = asyncio.Event()
        restart = asyncio.Event()
        signalled = {signal.SIGINT: stop, signal.SIGTERM: restart}
        with on_signals(tuple(signalled), lambda number: signalled[number].set()):
            await _first(stop.wait(), restart.wait())
        if restart.is_set():
            await _wait_clients_told(app, config.close_timeout)
        log.info("shutting down")
    finally:
        if stun is not None:
            stun.close()
        for each in reversed(runners):
            await each.cleanup()


def public_guard(config: Config) -> listener.ConnectionGuard:
    """The guard of the public port: caps per address and network from the config."""
    per_network = config.http_per_source * config.sources.network_share
    return listener.ConnectionGuard(
        config.max_http_connections, config.http_per_source, config.trusted_proxies, per_network
    )


METRICS_CONNECTIONS = 64  # the metrics port's guard: a scraper or two need a few connections
METRICS_PER_SOURCE = 8


async def _serve_metrics(app: web.Application, address: tuple[str, int]) -> web.AppRunner:
    """Metrics behind a guard of their own (the public port's may be full when they matter most),
    with the public port's short keep-alive; no access lines."""
    keepalive = app[SERVER].config.keepalive_timeout
    runner = listener.runner(metrics_app(app[SERVER].metrics), keepalive, access_log=False)
    await runner.setup()
    guard = listener.ConnectionGuard(METRICS_CONNECTIONS, METRICS_PER_SOURCE)
    await listener.GuardedSite(runner, *address, guard).start()
    log.info("metrics on http://%s:%d/metrics", *runner.addresses[0][:2])
    return runner


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _wait_clients_told(app: web.Application, within: float) -> None:
    """Tell every client to reconnect, and give them until `within` to take the message."""
    if announce_restart(app) == 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[SERVER].wait_no_sockets(), within)


async def start_stun(app: web.Application, host: str, port: int, **limits: Any) -> asyncio.DatagramTransport:
    """STUN for `app` on UDP (host, port); `limits` go to `StunResponder` (its defaults otherwise).
    A share of the answers is kept for addresses that hold a welcomed WebSocket of `app`."""
    server = app[SERVER]
    now = asyncio.get_running_loop().time()
    responder = StunResponder(now=now, welcomed=server.holds_welcomed, **limits)
    try:
        transport = await serve_stun(responder, host, port)
    except OSError as exc:
        raise StunPortError(
            f"cannot listen for STUN on UDP {host} port {port}: {exc.strerror or exc}"
        ) from None
    server.stun = responder
    server.ice = dataclasses.replace(server.ice, stun_port=port)
    log.info("STUN on udp://%s:%d", host, port)
    return transport


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
            tls = listener.tls_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"cannot load the TLS certificate or key: {exc}")
    try:
        ice_config = ice_config_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        config = config_from(args, ice_config)
        asyncio.run(serve(config, args.host, args.port, args.stun_port, tls=tls, metrics=args.metrics))
    except StunPortError as exc:
        log.error("%s; pick another with --stun-port N, or --stun-port 0 to go without STUN", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
