"""Issue 16, running it: TLS with a throwaway CA, SIGTERM making clients reconnect to the new
server with their rooms re-formed, JSON logs that say why, Prometheus metrics on their own port."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestClient, TestServer
from nacl.signing import SigningKey

from peer.mesh.signalling import Roster, SignallingClient
from rendezvous.app import SERVER, create_app
from rendezvous.metrics import metrics_app
from tests.ports import unused_port
from tests.rendezvous_support import WAIT, config_for, logged_in, make_games, running

ROOT = Path(__file__).resolve().parent.parent


class Rosters:
    def __init__(self) -> None:
        self.latest: Roster | None = None

    def roster_changed(self, roster: Roster) -> None:
        self.latest = roster

    def signal_received(self, sender: bytes, data: dict[str, Any]) -> None:
        pass

    def relay_received(self, sender: bytes, frame: bytes) -> None:
        pass


def client(url: str, name: str, tls: ssl.SSLContext | None = None) -> tuple[SignallingClient, Rosters]:
    rosters = Rosters()
    signalling = SignallingClient(
        url,
        signing_key=SigningKey.generate(),
        name=name,
        game="demo",
        room="r",
        password=None,
        listener=rosters,
        tls=tls,
    )
    return signalling, rosters


async def test_tls_with_a_private_ca(games: Path) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with running(config_for(games), ssl_context=server_tls) as url:
        assert url.startswith("https://")
        signalling, _ = client(url, "alice", tls=trusting)
        task = asyncio.create_task(signalling.run())
        try:
            roster = await asyncio.wait_for(signalling.wait_joined(), WAIT)
            assert roster.room == "r"
        finally:
            task.cancel()
        # Without the CA the certificate does not verify: no connection, never a silent fallback.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"{url}/healthz")


@asynccontextmanager
async def cli_server(
    port: int, games: Path, log: Path, *extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    command = [sys.executable, "-m", "rendezvous.cli", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--games", str(games), "--log-format", "json", "--log-file", str(log), *extra]
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT)
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:  # the process says it listens only in its log: ask it
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_sigterm_clients_reconnect_to_the_new_server_and_rooms_reform(tmp_path: Path) -> None:
    games = make_games(tmp_path / "games")
    port, metrics_port = unused_port(), unused_port()
    url = f"http://127.0.0.1:{port}"
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    alice, alice_rosters = client(url, "alice")
    bob, bob_rosters = client(url, "bob")

    def together(rosters: Rosters) -> bool:
        return rosters.latest is not None and len(rosters.latest.members) == 2

    async with asyncio.TaskGroup() as tasks:
        async with cli_server(port, games, old_log, "--metrics", f"127.0.0.1:{metrics_port}") as old:
            runs = [tasks.create_task(alice.run()), tasks.create_task(bob.run())]
            async with asyncio.timeout(WAIT):
                await alice.wait_until(lambda: together(alice_rosters))
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                    scraped = await resp.text()
                async with session.get(f"{url}/metrics") as resp:
                    assert resp.status == 404  # never on the public port
            assert "msxsync_rendezvous_players 2.0" in scraped
            assert "msxsync_rendezvous_joins_total 2.0" in scraped
            old.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(old.wait(), 15) == 0
        alice_rosters.latest = bob_rosters.latest = None
        async with cli_server(port, games, new_log):
            async with asyncio.timeout(15):
                await alice.wait_until(lambda: alice.joined and together(alice_rosters))
                await bob.wait_until(lambda: bob.joined and together(bob_rosters))
        for run in runs:
            run.cancel()
    events = [json.loads(line) for line in old_log.read_text().splitlines()]
    assert {e.get("event") for e in events} >= {"welcome", "join", "bye"}
    assert any("told 2 clients to reconnect" in e["message"] for e in events)
    joins = [e for e in events if e.get("event") == "join"]
    assert {e["room"] for e in joins} == {"r"} and all(e["source"] == "127.0.0.1" for e in joins)
    assert not any("password" in json.dumps(e) for e in events)


async def test_refusals_are_logged_counted_and_shown(games: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", "msxsync.rendezvous")
    app = create_app(config_for(games))
    async with (
        running(config_for(games)) as url,
        aiohttp.ClientSession() as session,
        logged_in(session, url, "a") as a,
        logged_in(session, url, "b") as b,
    ):
        await a.join("vault", password="secret")
        await a.expect("joined")
        await b.join("vault", password="guess")
        await b.error("wrong_password")
        await b.join("vault")
        await b.error("password_required")
        async with session.get(f"{url}/") as resp:
            page = await resp.text()
    assert "wrong_password" in page and "password_required" in page
    refusals = [r.getMessage() for r in caplog.records if "refused join" in r.getMessage()]
    assert len(refusals) == 2 and "wrong_password" in refusals[0]
    assert not any("secret" in r.getMessage() or "guess" in r.getMessage() for r in caplog.records)
    async with TestClient(TestServer(metrics_app(app[SERVER].metrics))) as scraper:
        resp = await scraper.get("/metrics")
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "msxsync_rendezvous_message_latency_seconds_bucket" in await resp.text()
