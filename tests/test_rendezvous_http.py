"""Issue 16, the HTTP side: names matched whole, If-None-Match parsed, security headers, idle and
malformed connections, and one address's share of HTTP connections."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from rendezvous import listener
from rendezvous.httpapi import _amount
from tests.rendezvous_support import ROM_SHA256, config_for, from_address, logged_in, running


async def test_a_game_name_with_a_trailing_newline_is_bad(base: str, session: aiohttp.ClientSession) -> None:
    for path in ("/api/games/demo%0A", "/api/games/demo%0A/rom"):
        async with session.get(f"{base}{path}") as resp:
            assert resp.status == 400, path


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (f'"{ROM_SHA256}"', 304),
        (f'"other", W/"{ROM_SHA256}"', 304),
        ("*", 304),
        (f'"x{ROM_SHA256}"', 200),  # a substring is not a match
        (f'"{ROM_SHA256}"x', 200),
        ('"other"', 200),
    ],
)
async def test_if_none_match_compares_entity_tags(
    base: str, session: aiohttp.ClientSession, header: str, status: int
) -> None:
    async with session.get(f"{base}/api/games/demo/rom", headers={"If-None-Match": header}) as resp:
        assert resp.status == status


async def test_status_page_headers_and_hidden_private_rooms(
    games: Path, session: aiohttp.ClientSession
) -> None:
    async with (
        running(config_for(games, hide_private_rooms=True)) as url,
        logged_in(session, url, "a") as a,
        logged_in(session, url, "b") as b,
    ):
        await a.join("secret-den", password="pw")
        await a.expect("joined")
        await b.join("open-room")
        await b.expect("joined")
        async with session.get(f"{url}/") as resp:
            page = await resp.text()
            headers = resp.headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "open-room" in page and "secret-den" not in page and "1 passworded rooms not listed" in page
    assert "<script" not in page and 'http-equiv="refresh"' in page


async def _raw(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_malformed_http_is_one_line_and_long_urls_are_cut(
    base: str, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = int(base.rsplit(":", 1)[1])
    answer = await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    assert answer.split(b" ", 2)[1] == b"400"
    async with session.get(f"{base}/api/games/{'a' * 8000}") as resp:
        assert resp.status == 400
    assert "Traceback" not in caplog.text
    malformed = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(malformed) == 1 and malformed[0].exc_info is None
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert access and max(len(line) for line in access) < 400


async def test_one_address_cannot_hold_every_http_connection(games: Path) -> None:
    config = config_for(games, http_per_source=8, keepalive_timeout=1.0)
    async with running(config) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0)) for _ in range(40)
        ]
        # Over its share, the attacker's sockets are closed at once; the rest when idle too long.
        ends = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in idle)), 10)
        assert ends == [b""] * 40
        async with from_address("127.0.0.3") as honest, honest.get(f"{url}/healthz") as resp:
            assert resp.status == 200
        for _, writer in idle:
            writer.close()


def test_running_out_of_file_descriptors_is_logged_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        listener.throttle_accept_errors(loop)
        handler = loop.get_exception_handler()
        assert handler is not None
        for _ in range(1000):
            handler(loop, {"message": "socket.accept() out of system resource", "exception": OSError(24)})
    finally:
        loop.close()
    lines = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
async def test_status_page_renders_in_headless_chromium(games: Path, tmp_path: Path) -> None:
    """Renders the page as a browser does; the screenshot is kept at tmp_path/status.png to look at."""
    async with (
        running(config_for(games)) as url,
        aiohttp.ClientSession() as session,
        logged_in(session, url, "alice") as alice,
        logged_in(session, url, "bob") as bob,
        logged_in(session, url, "carol") as carol,
    ):
        await alice.join("friday night")
        await bob.join("friday night")
        await carol.join("vault", password="pw")
        await carol.expect("joined")
        await bob.join("vault", password="wrong")
        await bob.expect("error")
        shot = tmp_path / "status.png"
        chromium = [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,1100",
            f"--screenshot={shot}",
            f"{url}/",
        ]
        process = await asyncio.create_subprocess_exec(
            *chromium, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    assert shot.stat().st_size > 10_000
    assert b"Content Security Policy" not in stderr  # the style sheet was allowed, nothing refused
    keep = os.environ.get("MSXSYNC_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


async def test_status_page_writes_limits_as_people_do(games: Path, session: aiohttp.ClientSession) -> None:
    """A generous host's limits read 1,000,000, not 1e+06; every number of a column lines up."""
    config = config_for(games, max_clients=1_000_000, rate=2_500_000.0)
    async with running(config) as url, session.get(f"{url}/") as resp:
        page = await resp.text()
    assert "<td class=n>1,000,000</td>" in page
    assert "2,500,000 (bursts of 1,000)" in page
    assert "e+0" not in page
    limits = page[page.index("<h2>Limits</h2>") :]
    assert limits.count("<td class=n>") == limits.count("<tr>") - 1  # (the header row)


@pytest.mark.parametrize(
    "value, shown",
    [(8, "8"), (1e6, "1,000,000"), (2.5e6 + 0.25, "2,500,000"), (0.5, "0.5"), (float("inf"), "no limit")],
)
def test_limits_are_written_as_people_write_them(value: float, shown: str) -> None:
    assert _amount(value) == shown
