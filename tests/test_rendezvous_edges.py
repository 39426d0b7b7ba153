"""Issue 29, the edges of a public rendezvous: TLS connections that never finish a handshake (F1),
STUN floods from forged sources (F6), many addresses of one network (F9), log floods (F12), the
metrics port and forwarded hops (F14). Attackers and honest players on separate loopback
addresses; the honest one is always in another /24 when the attack is one of a network."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aioice import stun

from peer.mesh.webrtc import STUN_SOFTWARE
from rendezvous import cli, listener
from rendezvous import stun as stun_module
from rendezvous.app import SERVER, create_app
from rendezvous.fairness import SourceLimits, Sources, network_of
from rendezvous.logs import LogSampler
from rendezvous.state import hop_address, source_of
from rendezvous.stun import StunResponder
from tests.ports import unused_port
from tests.rendezvous_support import (
    OPEN_SOURCES,
    WAIT,
    Player,
    config_for,
    connect,
    from_address,
    logged_in,
    running,
)

ATTACKER = "127.0.0.5"
HONEST = "127.0.0.1"
OTHER_NETWORK = "127.0.1.1"  # an honest player outside the attackers' 127.0.0.0/24


Idle = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def _open_idle(port: int, source: str, count: int) -> Idle:
    """`count` TCP connections from `source` that never send a byte."""
    return [await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)) for _ in range(count)]


async def _wait_ended(idle: Idle, at_least: int, within: float) -> int:
    """How many of `idle` the server has closed, once at least `at_least` are (or `within` passed)."""
    reads = [asyncio.ensure_future(reader.read()) for reader, _ in idle]
    deadline = time.monotonic() + within
    while sum(r.done() for r in reads) < at_least and time.monotonic() < deadline:
        await asyncio.wait(reads, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
    ended = sum(r.done() for r in reads)
    for read in reads:
        read.cancel()
    return ended


# ---- F1: TLS half-open connections ----------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_pair(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_tls_connections_that_never_handshake_count_and_end_at_the_deadline(
    games: Path, ca: trustme.CA
) -> None:
    server_tls, client_tls = tls_pair(ca)
    config = config_for(games, http_per_source=8, tls_handshake_timeout=2.0)
    async with running(config, ssl_context=server_tls) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = await _open_idle(port, ATTACKER, 100)
        # Over its share the attacker's sockets are closed at accept; its 8 wait for the deadline.
        assert await _wait_ended(idle, 92, WAIT) >= 92
        connector = aiohttp.TCPConnector(ssl=client_tls)
        async with aiohttp.ClientSession(connector=connector) as honest:
            async with honest.get(f"{url}/healthz") as resp:
                assert resp.status == 200
            async with logged_in(honest, url, "honest") as player:
                await player.join("home")
                await player.expect("joined")
        assert await _wait_ended(idle, 100, 2.0 + WAIT) == 100
        for _, writer in idle:
            writer.close()


def test_the_guard_counts_per_network_and_spares_trusted_proxies() -> None:
    guard = listener.ConnectionGuard(total=100, per_source=3, exempt=frozenset({"10.0.0.9"}), per_network=5)
    admitted = [guard.admit(f"10.0.0.{i}") for i in range(1, 5) for _ in range(3)]
    assert sum(admitted) == 5  # the /24 holds 5 whatever its addresses
    assert guard.admit("10.0.1.1")  # another /24
    assert all(guard.admit("10.0.0.9") for _ in range(20))  # the proxy: neither share
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.4")


# ---- F9: many addresses of one network -----------------------------------------------------


def test_network_of_is_the_ipv4_24_or_the_ipv6_64() -> None:
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2:aaaa::1") == network_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert network_of("::ffff:198.51.100.3") == "198.51.100.0/24"
    assert network_of("unknown") == "unknown"


def test_sources_keep_every_share_per_network_too() -> None:
    sources = Sources(SourceLimits(connections=2, password_checks=1, rate=1.0, burst=2, network_share=3))
    opened = [sources.open(f"2001:db8::{i}", 0.0) for i in range(1, 10)]
    assert sum(opened) == 6  # the /64's three times two, spread over any of its addresses
    assert sources.open("2001:db8:0:1::1", 0.0)  # the next /64
    sent = [sources.admit_message(f"198.51.100.{i}", 0.0) for i in range(1, 20)]
    assert sum(sent) == 6  # the /24's bucket: three times a burst of two
    checks = [sources.begin_password_check(f"192.0.2.{i}", 0.0) for i in range(1, 6)]
    assert checks.count(None) == 3 and "busy" in checks


async def _login_from(stack: AsyncExitStack, url: str, address: str, room: str) -> str:
    """Log in from `address` and open `room`: "joined", or the refusal's code."""
    session = await stack.enter_async_context(from_address(address))
    player = await stack.enter_async_context(connect(session, url, "squat"))
    first = await player.next()
    if first["type"] == "error":
        return str(first["code"])
    player.nonce = bytes.fromhex(first["nonce"])
    await player.send(**player.hello())
    await player.expect("welcome")
    await player.join(room)
    answer = await player.next()
    while answer["type"] not in ("joined", "error"):
        answer = await player.next()
    return "joined" if answer["type"] == "joined" else str(answer["code"])


async def test_125_addresses_of_one_network_cannot_take_every_connection_or_room(games: Path) -> None:
    sources = replace(OPEN_SOURCES, connections=2, rooms=1, network_share=4)
    config = config_for(games, max_clients=60, max_rooms=30, sources=sources)
    async with running(config) as url, AsyncExitStack() as stack:
        outcomes = [await _login_from(stack, url, f"127.0.0.{i}", f"squat-{i}") for i in range(2, 127)]
        # The /24 holds 4 x 2 connections and 4 x 1 rooms, not the server's 60 and 30.
        assert outcomes.count("joined") == 4
        assert outcomes.count("too_many_rooms") == 4
        assert outcomes.count("too_many_connections") == 117
        async with from_address(OTHER_NETWORK) as honest, logged_in(honest, url, "honest") as player:
            await player.join("home")
            await player.expect("joined")


# ---- F6: STUN ------------------------------------------------------------------------------


def binding() -> bytes:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["SOFTWARE"] = STUN_SOFTWARE
    return bytes(request)


def honest_fraction(responder: StunResponder, honest: str, seconds: int, forged_per_second: int) -> float:
    """Answers the honest source got to one request every 200 ms while forged sources (a new
    one each datagram) send `forged_per_second`."""
    data, asked, answered = binding(), 0, 0
    step = 1 / forged_per_second
    for n in range(seconds * forged_per_second):
        now = n * step
        responder.datagram_received(data, (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 3478), now)
        if n % (forged_per_second // 5) == 0:
            asked += 1
            answered += responder.datagram_received(data, (honest, 5000), now) is not None
    return answered / asked


def test_forged_sources_cannot_spend_the_answers_kept_for_welcomed_players() -> None:
    welcomed = {"198.51.100.20"}
    responder = StunResponder(welcomed=welcomed.__contains__)
    assert honest_fraction(responder, "198.51.100.20", 5, 20_000) == 1.0
    assert responder.stats.answered <= 5 * 2000 + 2000  # the global budget, its burst included


def test_a_refused_stun_datagram_costs_no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = 0
    parse = stun_module.parse_request

    def counting(data: bytes) -> stun.Message | None:
        nonlocal parsed
        parsed += 1
        return parse(data)

    monkeypatch.setattr(stun_module, "parse_request", counting)
    responder = StunResponder(global_rate=100)
    data = binding()
    for n in range(10_000):
        responder.datagram_received(data, (f"10.0.{n >> 8}.{n & 255}", 1), 0.0)
    for garbage in (b"\x00\x01" + b"\x00" * 30, data[:-4], b"x" * 100):
        responder.datagram_received(garbage, ("10.9.9.9", 1), 0.0)
    assert parsed == responder.stats.answered == 100


async def test_over_udp_a_welcomed_player_is_answered_through_a_flood(games: Path) -> None:
    app = create_app(config_for(games))
    runner = listener.runner(app, 15.0, shutdown_timeout=1.0)
    await runner.setup()
    site = listener.GuardedSite(runner, "127.0.0.1", 0, cli.public_guard(app[SERVER].config))
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    stun_port = unused_port()
    transport = await cli.start_stun(app, "127.0.0.1", stun_port, global_rate=40.0)
    flooders = []
    try:
        async with from_address(OTHER_NETWORK) as session, logged_in(session, url, "honest"):
            for i in range(100):  # 100 real sources, 127.0.0.10-109, each within its own bucket
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((f"127.0.0.{10 + i}", 0))
                sock.setblocking(False)
                flooders.append(sock)
            stop = asyncio.Event()

            async def flood() -> None:
                data = binding()
                while not stop.is_set():
                    for sock in flooders:
                        with suppress(BlockingIOError):
                            sock.sendto(data, ("127.0.0.1", stun_port))
                    await asyncio.sleep(0.002)

            flooding = asyncio.create_task(flood())
            await asyncio.sleep(0.3)
            answered = await _ask_stun(OTHER_NETWORK, stun_port, 10)
            stop.set()
            await flooding
        stats = app[SERVER].stun_statistics()
        assert stats is not None and stats["rate_limited"] > 100  # the flood was refused...
        assert answered == 10  # ... and the welcomed player answered every time
    finally:
        transport.close()
        for sock in flooders:
            sock.close()
        await runner.cleanup()


async def _ask_stun(source: str, port: int, count: int) -> int:
    """Binding requests from `source`, one at a time; how many got an answer within 1 s."""
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(
        Receiver, local_addr=(source, 0), remote_addr=("127.0.0.1", port)
    )
    answered = 0
    try:
        for _ in range(count):
            transport.sendto(binding())
            try:
                await asyncio.wait_for(answers.get(), 1.0)
                answered += 1
            except TimeoutError:
                pass
            await asyncio.sleep(0.05)
    finally:
        transport.close()
    return answered


# ---- F12: log floods -----------------------------------------------------------------------


def test_the_sampler_writes_a_line_of_each_kind_then_counts() -> None:
    sampler = LogSampler(window=60.0, per_window=3, global_rate=1000, global_burst=1000)
    written = [sampler.admit("a", "refused x", 0.0) for _ in range(100)]
    assert written.count(True) == 3
    assert sampler.admit("a", "refused y", 0.0)  # the first of another kind
    assert sampler.admit("b", "refused x", 0.0)  # another source
    (summary,) = sampler.flush(60.0)
    assert (summary.source, summary.kind, summary.count) == ("a", "refused x", 97)
    assert sampler.admit("a", "refused x", 60.0)  # a new window


async def test_a_flood_of_refusals_is_a_few_lines_and_a_summary_with_the_count(
    games: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = config_for(games, sources=replace(OPEN_SOURCES, connections=1), log_window=1.0)
    requests = 0
    started = time.monotonic()
    async with running(config) as url, from_address(ATTACKER) as attacker:
        async with logged_in(attacker, url, "holder"):
            for _ in range(60):  # refused: its one connection is taken
                async with connect(attacker, url) as player:
                    await player.error("too_many_connections")
                    requests += 1
            for i in range(300):
                async with attacker.get(f"{url}/api/rooms/nothing-{i}") as resp:
                    assert resp.status in (404, 429)  # (429: look-ups are rate-limited too)
                    requests += 1
        windows = (time.monotonic() - started) / config.log_window + 2
        await asyncio.sleep(config.log_window * 1.5)  # the summary comes once a window
    about = [r for r in caplog.records if ATTACKER in r.getMessage()]
    summaries = [getattr(r, "event", {}) for r in about]
    summaries = [e for e in summaries if e.get("event") == "suppressed"]
    written = len(about) - len(summaries)
    # A line of each kind and 20 in all per window, against 2 lines (refusal, access) each before.
    assert written <= 24 * windows < requests
    assert sum(e["count"] for e in summaries) >= requests - written
    assert any(e["kind"] == "refused too_many_connections" for e in summaries)


# ---- F14: the metrics port, forwarded hops --------------------------------------------------


async def test_the_metrics_port_has_a_guard(games: Path) -> None:
    app = create_app(config_for(games))
    port = unused_port()
    runner = await cli._serve_metrics(app, ("127.0.0.1", port))
    try:
        idle = await _open_idle(port, ATTACKER, 50)
        assert await _wait_ended(idle, 50 - cli.METRICS_PER_SOURCE, WAIT) >= 50 - cli.METRICS_PER_SOURCE
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200 and "msxsync_rendezvous_joins_total" in await resp.text()
        for _, writer in idle:
            writer.close()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("hop", "address"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("198.51.100.7:4711", "198.51.100.7"),
        ("[2001:db8::7]:4711", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ('"[2001:db8::7]:4711"', "2001:db8::7"),
        ("unknown", None),
        ("_hidden", None),
        ("198.51.100.7:http", None),
        ("[2001:db8::7]x", None),
    ],
)
def test_a_forwarded_hop_is_read_with_or_without_its_port(hop: str, address: str | None) -> None:
    assert hop_address(hop) == address


def _request(headers: dict[str, str], peer: str = "10.0.0.1") -> web.Request:
    transport = _Peer(peer)
    return make_mocked_request("GET", "/ws", headers=headers, transport=transport)


class _Peer:
    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.address, 4000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def test_source_of_reads_the_operators_header_only() -> None:
    trusted = frozenset({"10.0.0.1"})
    xff = {"X-Forwarded-For": "203.0.113.5:1111, 10.0.0.1:2222"}
    assert source_of(_request(xff), trusted) == "203.0.113.5"
    forwarded = {"Forwarded": 'for="[2001:db8::5]:1111";proto=https, for=10.0.0.1'}
    assert source_of(_request(forwarded), trusted, "forwarded") == "2001:db8::5"
    # A client's own Forwarded header means nothing when the proxy writes X-Forwarded-For.
    both = {"Forwarded": "for=192.0.2.1", "X-Forwarded-For": "203.0.113.5"}
    assert source_of(_request(both), trusted) == "203.0.113.5"
    assert source_of(_request({"X-Forwarded-For": "unknown"}), trusted) == "10.0.0.1"
    assert source_of(_request(xff, peer="10.0.0.2"), trusted) == "10.0.0.2"  # not a proxy we trust


@asynccontextmanager
async def _through_proxy(url: str, hop: str) -> AsyncIterator[Player]:
    async with (
        aiohttp.ClientSession(headers={"X-Forwarded-For": hop}) as session,
        connect(session, url, "p") as player,
    ):
        yield player


async def test_clients_behind_a_proxy_that_writes_ports_get_their_own_shares(games: Path) -> None:
    sources = replace(OPEN_SOURCES, connections=2)
    config = config_for(games, sources=sources, trusted_proxies=frozenset({HONEST}))
    async with running(config) as url, AsyncExitStack() as stack:
        for i in range(1, 11):  # ten clients, each of its own network, behind the proxy
            player = await stack.enter_async_context(_through_proxy(url, f"198.51.{i}.7:{40000 + i}"))
            await player.login()
