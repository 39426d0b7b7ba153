"""The rendezvous application over a real loopback socket: HTTP, handshake, rooms, relay."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from games.catalogue import bundled_games_dir, load_catalogue
from rendezvous.app import Config, create_app
from tests.rendezvous_support import (
    ROM_BYTES,
    ROM_SHA1,
    ROM_SHA256,
    config_for,
    connect,
    logged_in,
    running,
)

# --- HTTP ---------------------------------------------------------------------------------


async def test_catalogue_skips_broken_definitions(games: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "msxsync.rendezvous")
    async with TestClient(TestServer(create_app(config_for(games)))) as client:
        resp = await client.get("/api/games")
        assert resp.status == 200
        listed = {g["name"]: g for g in (await resp.json())["games"]}
    assert sorted(listed) == ["demo", "norom"]
    demo = listed["demo"]
    assert demo["rom"] == {"size": len(ROM_BYTES), "sha1": ROM_SHA1, "sha256": ROM_SHA256}
    assert demo["rom_available"] is True and demo["title"] == "Demo Game"
    assert listed["norom"]["rom"] is None and listed["norom"]["rom_available"] is False
    assert "broken.regions:2" in caplog.text


async def test_game_detail_rom_and_etag(base: str, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{base}/api/games/demo") as resp:
        detail = await resp.json()
    assert detail["definition"]["regions"][0]["start"] == 0xE000
    assert detail["definition"]["armed_when"] == "e000 == 01"
    async with session.get(f"{base}/api/games/demo/rom") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(ROM_BYTES))
        etag = resp.headers["ETag"]
        assert await resp.read() == ROM_BYTES
    assert etag == f'"{ROM_SHA256}"'
    async with session.get(f"{base}/api/games/demo/rom", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    async with logged_in(session, base, "a"), session.get(f"{base}/healthz") as resp:
        health = await resp.json()
    assert health["status"] == "ok" and health["players"] == 1 and health["games"] == 2


async def test_rom_changed_on_disk_is_not_served(games: Path) -> None:
    async with TestClient(TestServer(create_app(config_for(games)))) as client:
        (games / "demo.rom").write_bytes(b"not the hashed ROM")
        resp = await client.get("/api/games/demo/rom")
        assert resp.status == 404
        assert (await resp.json())["error"] == "rom_absent"


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/api/games/nothere", {404}),
        ("/api/games/norom/rom", {404}),
        ("/api/games/nothere/rom", {404}),
        ("/api/games/..%2F..%2Fetc%2Fpasswd", {400, 404}),
        ("/api/games/demo%2F..%2Fdemo/rom", {400, 404}),
        ("/api/games/../games/demo/rom", {200, 404}),  # normalised by the client: still catalogue
        ("/api/games/demo.rom", {404}),
        ("/api/games/demo.regions/rom", {404}),
        ("/api/games/%2e%2e/rom", {400, 404}),
        ("/api/games/~demo", {400}),
    ],
)
async def test_path_tricks(base: str, session: aiohttp.ClientSession, path: str, statuses: set[int]) -> None:
    async with session.get(base + path) as resp:
        body = await resp.read()
        assert resp.status in statuses, (path, resp.status)
        if resp.status == 200:
            assert body == ROM_BYTES  # only ever the catalogue's own ROM


async def test_status_page_shows_rooms_without_secrets(base: str, session: aiohttp.ClientSession) -> None:
    async with logged_in(session, base, "<b>Alice</b>") as alice:
        await alice.join("secret <room>", password="hunter22")
        await alice.error("bad_message")  # '<' is outside the room-name alphabet
        await alice.join("secret room", password="hunter22")
        await alice.expect("joined")
        async with session.get(base + "/") as resp:
            page = await resp.text()
    assert "secret room" in page and "1/8" in page and "demo" in page
    assert alice.key not in page and "hunter22" not in page and "argon2" not in page
    assert "Uptime" in page or "Up " in page


async def test_bundled_games_load(caplog: pytest.LogCaptureFixture) -> None:
    # Whatever is bundled right now must load without crashing the server.
    config = Config(games=[bundled_games_dir()])
    async with TestClient(TestServer(create_app(config))) as client:
        resp = await client.get("/api/games")
        names = {g["name"] for g in (await resp.json())["games"]}
    assert names == set(load_catalogue([bundled_games_dir()]).entries)


# --- handshake ----------------------------------------------------------------------------


async def test_hello_and_welcome(base: str, session: aiohttp.ClientSession) -> None:
    async with connect(session, base, "Alice") as alice:
        await alice.challenge()
        await alice.send(type="join", game="demo", room=None)
        await alice.error("hello_required")
        await alice.send(**alice.hello())
        welcome = await alice.expect("welcome")
        assert welcome["key"] == alice.key and welcome["version"] == 4
        assert welcome["relay"]["client_rate"] > 0  # the relay of last resort is on by default
        assert welcome["limits"]["max_message"] == 65536
        await alice.send(**alice.hello())
        await alice.error("already_welcomed")


async def test_bad_signature_is_fatal(base: str, session: aiohttp.ClientSession) -> None:
    async with connect(session, base, "Mallory") as mallory:
        await mallory.challenge()
        hello = mallory.hello()
        hello["signature"] = "00" * 64
        await mallory.send(**hello)
        error = await mallory.error("bad_signature")
        assert error["fatal"] is True
        await mallory.wait_closed()


async def test_replayed_hello_fails_on_a_new_challenge(base: str, session: aiohttp.ClientSession) -> None:
    async with connect(session, base, "A") as first:
        await first.challenge()
        hello = first.hello()
    async with connect(session, base, "A") as second:
        await second.challenge()
        await second.send(**hello)  # signed over the first challenge
        await second.error("bad_signature")


async def test_version_mismatch_names_both(base: str, session: aiohttp.ClientSession) -> None:
    async with connect(session, base) as player:
        await player.challenge()
        await player.send(**player.hello(version=3))  # an msxsync from before TURN went to members
        error = await player.error("version_mismatch")
        assert "version 4" in error["message"] and "version 3" in error["message"] and error["fatal"]
        await player.wait_closed()


async def test_hello_deadline(games: Path, session: aiohttp.ClientSession) -> None:
    async with running(config_for(games, hello_timeout=0.3)) as url, connect(session, url) as p:
        await p.challenge()
        assert (await p.error("hello_timeout"))["fatal"] is True
        await p.wait_closed()


async def test_same_key_on_a_new_connection_takes_over(base: str, session: aiohttp.ClientSession) -> None:
    async with logged_in(session, base, "Bob") as bob, logged_in(session, base, "A") as old:
        await old.join("r")
        await old.expect("joined")
        await bob.join("r")
        await bob.expect("joined")
        async with connect(session, base, "A") as new:
            new.signing, new.key = old.signing, old.key
            await new.login()
            await old.error("replaced")
            await old.wait_closed()
            left = await bob.expect("member_left")
            assert left["key"] == old.key
            await new.join("r")
            joined = await new.expect("joined")
            assert [m["key"] for m in joined["members"]] == [bob.key, new.key]


# --- rooms --------------------------------------------------------------------------------


async def test_rooms_presence_ready_chat_and_host_handover(base: str, session: aiohttp.ClientSession) -> None:
    async with (
        logged_in(session, base, "Alice") as alice,
        logged_in(session, base, "Bob") as bob,
        logged_in(session, base, "Carol") as carol,
    ):
        await alice.join("friday", capacity=3)
        joined = await alice.expect("joined")
        assert joined["host"] == alice.key and joined["capacity"] == 3
        await bob.join("friday")
        await bob.expect("joined")
        event = await alice.expect("member_joined")
        assert event["key"] == bob.key and event["name"] == "Bob"
        await carol.join("friday", game="norom")
        await carol.error("wrong_game")
        await carol.join("friday", game="nothere")
        await carol.error("unknown_game")
        await bob.send(type="ready", ready=True)
        ready = await alice.expect("member_ready")
        assert ready["key"] == bob.key and ready["ready"] is True
        roster = await alice.expect("roster")
        assert [m["ready"] for m in roster["members"]] == [False, True]
        await alice.send(type="chat", text="hi all")
        chat = await bob.expect("chat")
        assert (chat["from"], chat["name"], chat["text"]) == (alice.key, "Alice", "hi all")
        await alice.send(type="leave")
        await alice.expect("left")
        roster = await bob.expect("roster")
        assert roster["host"] == bob.key
        await alice.send(type="chat", text="anyone?")
        await alice.error("not_in_room")


async def test_room_full_and_capacity_limits(base: str, session: aiohttp.ClientSession) -> None:
    async with (
        logged_in(session, base, "a") as a,
        logged_in(session, base, "b") as b,
        logged_in(session, base, "c") as c,
    ):
        await a.join("duo", capacity=9)
        await a.error("bad_message")  # above the server's room capacity (8)
        await a.join("duo", capacity=2)
        await a.expect("joined")
        await b.join("duo")
        await b.expect("joined")
        await c.join("duo")
        assert (await c.error("room_full"))["request"] == "join"
        await a.join("other")
        await a.error("already_in_room")


async def test_max_rooms_limit(games: Path, session: aiohttp.ClientSession) -> None:
    async with (
        running(config_for(games, max_rooms=1)) as url,
        logged_in(session, url, "a") as a,
        logged_in(session, url, "b") as b,
    ):
        await a.join("one")
        await a.expect("joined")
        await b.join("two")
        await b.error("too_many_rooms")


async def test_passwords(base: str, session: aiohttp.ClientSession) -> None:
    async with (
        logged_in(session, base, "a") as a,
        logged_in(session, base, "b") as b,
    ):
        await a.join("vault", password="open sesame")
        assert (await a.expect("joined"))["password"] is True
        await b.join("vault")
        await b.error("password_required")
        await b.join("vault", password="guess")
        await b.error("wrong_password")
        await b.join("vault", password="open sesame")
        assert (await b.expect("joined"))["members"][0]["key"] == a.key


async def test_kick(base: str, session: aiohttp.ClientSession) -> None:
    async with (
        logged_in(session, base, "a") as a,
        logged_in(session, base, "b") as b,
    ):
        await a.join("r")
        await a.expect("joined")
        await b.join("r")
        await b.expect("joined")
        await b.send(type="kick", key=a.key)
        await b.error("not_host")
        await a.send(type="kick", key=b.key)
        assert (await b.expect("kicked"))["by"] == a.key
        kicked = await a.expect("member_kicked")
        assert kicked["key"] == b.key
        await b.join("r")
        await b.error("banned")


async def test_quick_match_pairs_players(base: str, session: aiohttp.ClientSession) -> None:
    async with (
        logged_in(session, base, "a") as a,
        logged_in(session, base, "b") as b,
        logged_in(session, base, "c") as c,
    ):
        rooms = []
        for player in (a, b, c):
            await player.join(None, capacity=2)
            rooms.append((await player.expect("joined"))["room"])
        assert rooms[0] == rooms[1] != rooms[2]


async def test_relay_only_within_the_room(base: str, session: aiohttp.ClientSession) -> None:
    async with (
        logged_in(session, base, "a") as a,
        logged_in(session, base, "b") as b,
        logged_in(session, base, "c") as c,
    ):
        for player, room in ((a, "r"), (b, "r"), (c, "s")):
            await player.join(room)
            await player.expect("joined")
        offer = {"kind": "offer", "sdp": "v=0..."}
        await a.send(type="signal", to=b.key, data=offer)
        signal = await b.expect("signal")
        assert signal == {"type": "signal", "from": a.key, "room": "r", "data": offer}
        await a.send(type="signal", to=c.key, data=offer)
        await a.error("bad_target")
        await c.send(type="signal", to=a.key, data=offer)
        await c.error("bad_target")
        # c got nothing addressed to it: its next message is the answer to its own ping-chat.
        await c.send(type="chat", text="ping")
        assert (await c.next())["type"] == "chat"


def test_config_refuses_nonsense() -> None:
    for bad in ({"max_clients": 0}, {"room_capacity": 1}, {"heartbeat": 0.0}, {"rate": -1.0}):
        with pytest.raises(ValueError):
            Config(**bad)


async def test_embedding_with_a_ready_catalogue(games: Path) -> None:
    # A peer hosting on the LAN hands over the catalogue it already loaded.
    config = Config(catalogue=load_catalogue([games]))
    async with TestClient(TestServer(create_app(config))) as client:
        resp = await client.get("/api/games/demo")
        assert (await resp.json())["rom"]["sha256"] == ROM_SHA256
