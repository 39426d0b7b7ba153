#!/usr/bin/env python3
"""Benchmark the rendezvous: N clients connect, say hello, join rooms of 4 and relay signals.

The server runs in its own process (`python -m rendezvous.cli`) on 127.0.0.1 with its production
defaults (rate limits included); all clients live in this process. Measured per N:
connections/s (connect + challenge + signed hello + welcome), the relay latency of signalling
messages (p50/p99/max, sender to addressee through the server) and the server's peak RSS
(VmHWM from /proc). Prints one human line per N, then one JSON line with everything.

    python3 scripts/bench_rendezvous.py                 # 100 and 1000 clients
    python3 scripts/bench_rendezvous.py --clients 500 --rounds 5
    python3 scripts/bench_rendezvous.py --attacks       # issues 16, 29: honest players under attack
    python3 scripts/bench_rendezvous.py --attacks --tls --only tls_half_open --honest 8

With `--attacks`, the server runs with its production limits and honest clients, each from its
own address (127.0.1.N), measure their join (connect, hello, join: until `joined`) and relay
latency, p50 and p99, on a quiet server and then while one address (127.0.0.2, or its /24; its own
block 127.2.0.N where an attack needs many) runs each attack of issues 16 and 29
(`scripts/rendezvous_attacks.py`; `--only NAME ...` picks some), a fresh server for each, all in
one run. That server hands out TURN credentials (for a TURN server that is not there: what is
measured is who gets them) and hides passworded rooms (`--hide-private-rooms`); `--tls` serves
them over https/wss with a throwaway CA, and each result has the server's peak RSS and log size
(`--log-level INFO` to count every line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rendezvous_attacks import ATTACKS, TLS_TRUST_ENV, session_from  # noqa: E402

from rendezvous.protocol import PROTOCOL_VERSION, signed_hello_bytes  # noqa: E402
from tests.ports import unused_port  # noqa: E402

ROOM_SIZE = 4
ATTACKER, HONEST = "127.0.0.2", "127.0.1."  # honest players: 127.0.1.1, 127.0.1.2, ...


def raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def write_games(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.regions").write_text("bench.rom\n#! title Bench\ne000 e0ff\n", "utf-8")
    (folder / "bench.rom").write_bytes(bytes(32 * 1024))
    return folder


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@dataclass
class Tally:
    """Counts relayed signals across clients and says when all expected ones arrived."""

    expected: int = 0
    received: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self) -> None:
        self.received += 1
        if self.received >= self.expected:
            self.done.set()


@dataclass
class Client:
    index: int
    tally: Tally
    signing: SigningKey = field(default_factory=SigningKey.generate)
    ws: aiohttp.ClientWebSocketResponse | None = None
    latencies: list[float] = field(default_factory=list)
    room_full: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.signing.verify_key.encode().hex()

    @property
    def room(self) -> str:
        return f"bench-{self.index // ROOM_SIZE}"

    async def next(self) -> dict[str, object]:
        assert self.ws is not None
        msg = await self.ws.receive(timeout=30)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"client {self.index}: {msg.type!r}")
        body: dict[str, object] = json.loads(msg.data)
        return body

    async def expect(self, kind: str) -> dict[str, object]:
        while True:
            body = await self.next()
            if body["type"] == kind:
                return body
            if body["type"] == "error":
                raise ConnectionError(f"client {self.index}: {body}")

    async def connect(self, session: aiohttp.ClientSession, url: str) -> None:
        self.ws = await session.ws_connect(url)
        challenge = await self.expect("challenge")
        nonce = bytes.fromhex(str(challenge["nonce"]))
        signature = self.signing.sign(signed_hello_bytes(nonce)).signature.hex()
        hello = {"type": "hello", "version": PROTOCOL_VERSION, "name": f"c{self.index}", "key": self.key}
        await self.ws.send_json({**hello, "signature": signature})
        await self.expect("welcome")

    async def join(self) -> None:
        assert self.ws is not None
        await self.ws.send_json({"type": "join", "game": "bench", "room": self.room, "capacity": 4})
        await self.expect("joined")

    async def read_loop(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                continue  # (an attacker in the room relaying at us)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.perf_counter()
            body = json.loads(msg.data)
            match body["type"]:
                case "signal" if isinstance(body["data"].get("t"), float):  # (not an attacker's)
                    self.latencies.append(now - body["data"]["t"])
                    self.tally.add()
                case "roster" if len(body["members"]) >= ROOM_SIZE:  # (an attacker may be in it)
                    self.room_full.set()
                case "error":
                    self.errors.append(body["code"])


async def relay_round(clients: list[Client], period: float) -> None:
    """Every client sends one signal to the next member of its room, spread over `period`."""
    start = time.perf_counter()
    for i, client in enumerate(clients):
        delay = start + period * i / len(clients) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        base = client.index - client.index % ROOM_SIZE
        target = clients[base + (client.index + 1) % ROOM_SIZE]
        data = {"t": time.perf_counter(), "kind": "candidate", "candidate": "candidate:1 1 udp 1"}
        assert client.ws is not None
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):  # (cut off: counted as closed)
            await client.ws.send_json({"type": "signal", "to": target.key, "data": data})


async def run_clients(url: str, count: int, rounds: int, period: float) -> dict[str, object]:
    tally = Tally(expected=count * rounds)
    clients = [Client(i, tally) for i in range(count)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(64)

        async def connect(client: Client) -> None:
            async with gate:
                await client.connect(session, url)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for client in clients:
                group.create_task(connect(client))
        connect_seconds = time.perf_counter() - started
        for client in clients:  # in order, so rooms fill in index order
            await client.join()
        async with asyncio.TaskGroup() as group:
            for client in clients:
                group.create_task(client.read_loop())
            await asyncio.wait_for(asyncio.gather(*(c.room_full.wait() for c in clients)), timeout=60)
            for _ in range(rounds):
                await relay_round(clients, period)
            with contextlib.suppress(TimeoutError):  # a shortfall shows as relayed < expected
                await asyncio.wait_for(tally.done.wait(), timeout=30)
            for client in clients:
                assert client.ws is not None
                await client.ws.close()
    latencies = sorted(x for c in clients for x in c.latencies)
    errors = [code for c in clients for code in c.errors]
    return {
        "clients": count,
        "connect_seconds": round(connect_seconds, 3),
        "connections_per_s": round(count / connect_seconds, 1),
        "relayed": len(latencies),
        "expected": tally.expected,
        "relay_p50_ms": round(1000 * statistics.median(latencies), 3) if latencies else None,
        "relay_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else None,
        "relay_max_ms": round(1000 * latencies[-1], 3) if latencies else None,
        "errors": len(errors),
    }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[int(fraction * (len(ordered) - 1))], 3)


async def run_honest(url: str, count: int, rounds: int, period: float, network: str) -> dict[str, object]:
    """`count` clients, each from its own address (`network` + 1, 2, ...: households), connect,
    say hello and join (timed one by one, 16 at a time), then relay `rounds` signals; join and
    relay p50/p99 in ms."""
    tally = Tally(expected=count * rounds)
    clients = [Client(i, tally) for i in range(count)]
    closed = 0  # honest clients the server closed (evicted) before the end
    joins: list[float] = []
    failures: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(session_from(f"{network}{i + 1}")) for i in range(count)]
        gate = asyncio.Semaphore(16)

        async def enter(client: Client) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    await client.connect(sessions[client.index], url)
                    await client.join()
                except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
                    failures.append(str(exc)[:160])
                    return
                joins.append(time.perf_counter() - started)

        async with asyncio.TaskGroup() as group:
            for client in clients:
                group.create_task(enter(client))
        if not failures:
            async with asyncio.TaskGroup() as group:
                for client in clients:
                    group.create_task(client.read_loop())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*(c.room_full.wait() for c in clients)), 30)
                for _ in range(rounds):
                    await relay_round(clients, period)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.done.wait(), timeout=15)
                closed = sum(1 for client in clients if client.ws is not None and client.ws.closed)
                for client in clients:
                    assert client.ws is not None
                    await client.ws.close()
        for client in clients:
            if client.ws is not None:
                await client.ws.close()
    relays = [x for c in clients for x in c.latencies]
    return {
        "joined": len(joins),
        "join_failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "join_p50_ms": percentile(joins, 0.5),
        "join_p99_ms": percentile(joins, 0.99),
        "relayed": len(relays),
        "expected": tally.expected,
        "relay_p50_ms": percentile(relays, 0.5),
        "relay_p99_ms": percentile(relays, 0.99),
        "closed_by_server": closed,
    }


def tls_files(workdir: Path) -> tuple[str, ...]:
    """A throwaway CA and a certificate for 127.0.0.1: the server's flags; clients (this process
    and the attacker's) trust the CA through `TLS_TRUST_ENV`."""
    import trustme  # a test dependency: only --tls needs it

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, trust = workdir / "chain.pem", workdir / "key.pem", workdir / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(trust))
    os.environ[TLS_TRUST_ENV] = str(trust)
    return ("--tls-cert", str(chain), "--tls-key", str(key))


@contextlib.asynccontextmanager
async def server_process(workdir: Path, name: str, *extra: str) -> AsyncIterator[tuple[str, int]]:
    """`msxsync-rendezvous` on 127.0.0.1 in its own process; yields its URL and pid (https when
    `extra` has --tls-cert)."""
    port = unused_port()
    games = write_games(workdir / "games")
    scheme = "https" if "--tls-cert" in extra else "http"
    command = [sys.executable, "-m", "rendezvous.cli", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--games", str(games), "--log-level", "WARNING", "--stun-port", "0"]
    command += ["--log-file", str(workdir / f"server-{name}.log"), *extra]
    server = await asyncio.create_subprocess_exec(*command, cwd=ROOT)
    try:
        async with session_from("127.0.0.1") as session:

            async def healthy() -> bool:
                try:
                    async with session.get(f"{scheme}://127.0.0.1:{port}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            deadline = time.perf_counter() + 30
            while not await healthy():
                if time.perf_counter() > deadline or server.returncode is not None:
                    raise RuntimeError("the server did not start")
                await asyncio.sleep(0.1)
        yield f"{scheme}://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=30)


async def attack_scenario(
    name: str, count: int, rounds: int, period: float, settle: float, workdir: Path, *extra: str
) -> dict[str, object]:
    """Honest clients on a fresh server with production limits, while `name` runs (or "quiet")
    in a process of its own, so that it competes with the clients only as a real attacker does."""
    secret = workdir / "turn-secret"
    secret.write_text("bench-turn-secret-" + "x" * 16 + "\n")
    secret.chmod(0o600)
    flags = ("--turn", "turn:127.0.0.1:3478", "--turn-secret-file", str(secret), "--hide-private-rooms")
    async with server_process(workdir, name, *flags, *extra) as (url, pid):
        attacker = None
        if name != "quiet":
            script = str(ROOT / "scripts" / "rendezvous_attacks.py")
            command = [sys.executable, script, name, f"{url}/ws", ATTACKER, str(settle + 60)]
            attacker = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(settle)  # let the attack reach its full pressure first
        try:
            result = await run_honest(f"{url}/ws", count, rounds, period, HONEST)
        finally:
            report: object = None
            if attacker is not None:
                attacker.send_signal(signal.SIGINT)
                out, _ = await asyncio.wait_for(attacker.communicate(), 30)
                lines = out.decode().strip().splitlines()
                report = json.loads(lines[-1]) if lines else f"exit {attacker.returncode}"
        result["attack"] = name
        result["attacker"] = report
        result["server_peak_rss_mib"] = round(peak_rss_kib(pid) / 1024, 1)
        log = workdir / f"server-{name}.log"
        result["server_log_kib"] = round(log.stat().st_size / 1024, 1) if log.exists() else 0
        return result


def attacks_main(
    count: int, rounds: int, period: float, settle: float, only: list[str], tls: bool, log_level: str
) -> int:
    raise_open_files_limit(4096)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        extra = (*(tls_files(Path(tmp)) if tls else ()), "--log-level", log_level)
        for name in ["quiet", *(only or ATTACKS)]:
            result = asyncio.run(attack_scenario(name, count, rounds, period, settle, Path(tmp), *extra))
            results.append(result)
            print(
                f"{name:16} join p50 {result['join_p50_ms']} p99 {result['join_p99_ms']} ms "
                f"({result['joined']}/{count} joined), relay p50 {result['relay_p50_ms']} "
                f"p99 {result['relay_p99_ms']} ms ({result['relayed']}/{result['expected']}, "
                f"{result['closed_by_server']} cut off), "
                f"server RSS {result['server_peak_rss_mib']} MiB, log {result['server_log_kib']} KiB; "
                f"attacker {result['attacker']}",
                flush=True,
            )
    summary = {"benchmark": "rendezvous_attacks", "clients": count, "tls": tls, "results": results}
    print(json.dumps(summary))
    return 0


async def bench(count: int, rounds: int, period: float, workdir: Path) -> dict[str, object]:
    extra: tuple[str, ...] = ("--max-clients", str(count + 100), "--max-rooms", str(count))
    # One address runs every client here: give it the whole server.
    extra += ("--connections-per-address", str(count + 100), "--rooms-per-address", str(count))
    extra += ("--messages-per-address", "100000", "--http-connections-per-address", str(count + 200))
    async with server_process(workdir, str(count), *extra) as (url, pid):
        result = await run_clients(f"{url}/ws", count, rounds, period)
        result["server_peak_rss_mib"] = round(peak_rss_kib(pid) / 1024, 1)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=10, help="signals sent by each client")
    parser.add_argument("--period", type=float, default=1.0, help="seconds per round")
    parser.add_argument(
        "--attacks",
        action="store_true",
        help="honest clients' join and relay latency on a quiet server, then during each attack",
    )
    parser.add_argument("--honest", type=int, default=40, help="honest clients with --attacks")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds an attack runs before measuring")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(ATTACKS),
        default=[],
        metavar="ATTACK",
        help="with --attacks: these (and quiet)",
    )
    parser.add_argument("--tls", action="store_true", help="with --attacks: https and wss (a throwaway CA)")
    parser.add_argument(
        "--log-level", default="WARNING", help="with --attacks: the server's (INFO counts every log line)"
    )
    args = parser.parse_args()
    if args.attacks:
        rounds, period = min(args.rounds, 5), min(args.period, 0.5)
        return attacks_main(args.honest, rounds, period, args.settle, args.only, args.tls, args.log_level)
    raise_open_files_limit(2 * max(args.clients) + 256)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.clients:
            result = asyncio.run(bench(count, args.rounds, args.period, Path(tmp)))
            results.append(result)
            print(
                f"{count} clients: {result['connections_per_s']} connections/s, "
                f"relay p50 {result['relay_p50_ms']} ms p99 {result['relay_p99_ms']} ms "
                f"({result['relayed']}/{result['expected']} relayed, {result['errors']} errors), "
                f"server peak RSS {result['server_peak_rss_mib']} MiB",
                flush=True,
            )
    summary: dict[str, object] = {"benchmark": "rendezvous", "results": results}
    summary["cpus"] = os.cpu_count()
    goal = next((r for r in results if r["clients"] == 1000), None)
    if goal is not None:
        p99 = goal["relay_p99_ms"]
        rss = goal["server_peak_rss_mib"]
        summary["goal_met"] = (
            goal["relayed"] == goal["expected"]
            and isinstance(p99, float)
            and p99 < 10
            and isinstance(rss, float)
            and rss < 200
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
