"""Whose program a rendezvous is (the welcome's `hosted_by`) and `GET /api/rooms/{name}` (issue 17):
what players need to find their room again after a network split, and nothing more."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from nacl.signing import SigningKey

from peer.core.room.signalling import SignallingProtocol, Welcomed
from peer.core.room.takeover import Sighting, parse_room_info
from rendezvous.app import Config
from tests.rendezvous_support import config_for, logged_in, running

HOST_KEY = "cd" * 32


async def test_a_standalone_rendezvous_says_so_and_a_players_program_names_the_player(games: Path) -> None:
    async with aiohttp.ClientSession() as session:
        async with running(config_for(games)) as base, logged_in(session, base, "a") as player:
            assert player.welcomed["hosted_by"] is None
        hosted = config_for(games, hosted_by=HOST_KEY)
        async with running(hosted) as base, logged_in(session, base, "a") as player:
            assert player.welcomed["hosted_by"] == HOST_KEY


def test_hosted_by_must_be_a_key() -> None:
    with pytest.raises(ValueError, match="hosted_by"):
        Config(hosted_by="CD" * 32)


async def test_room_info_by_exact_name_without_keys_or_secrets(games: Path) -> None:
    async with (
        running(config_for(games, hosted_by=HOST_KEY)) as base,
        aiohttp.ClientSession() as session,
        logged_in(session, base, "alice") as alice,
    ):
        await alice.join("friday night", password="s" * 64, standby="http://10.0.0.2:4567")
        await alice.expect("roster")
        async with session.get(f"{base}/api/rooms/{quote('friday night')}") as reply:
            assert reply.status == 200 and reply.headers["Cache-Control"] == "no-store"
            body = await reply.json()
        assert body == {
            "room": "friday night",
            "game": "demo",
            "players": 1,
            "capacity": 8,
            "password": True,
            "hosted_by": HOST_KEY,
        }
        assert alice.key not in str(body) and "10.0.0.2" not in str(body)
        url = base
        assert parse_room_info(body, url=url, room="friday night", game="demo") == Sighting(
            url, bytes.fromhex(HOST_KEY)
        )
        for name, status, code in (("saturday", 404, "unknown_room"), ("-bad", 400, "bad_name")):
            async with session.get(f"{base}/api/rooms/{quote(name)}") as reply:
                assert reply.status == status
                assert (await reply.json())["error"] == code
        async with session.get(f"{base}/api/rooms/{'x' * 40}") as reply:
            assert reply.status == 400


def _welcomed(hosted_by: object) -> tuple[SignallingProtocol, list[object]]:
    client = SignallingProtocol(signing_key=SigningKey.generate(), name="a", game="demo", room="r")
    client.connection_made(0.0)
    client.receive_text('{"type":"challenge","version":4,"nonce":"' + "00" * 32 + '"}', 0.0)
    welcome = {"type": "welcome", "version": 4, "key": client.key.hex(), "ice_servers": []}
    if hosted_by != "absent":
        welcome["hosted_by"] = hosted_by
    return client, list(client.receive_text(json.dumps(welcome), 0.0))


def test_the_client_reads_hosted_by_and_takes_anything_else_for_a_standalone_server() -> None:
    client, events = _welcomed(HOST_KEY)
    assert client.hosted_by == bytes.fromhex(HOST_KEY) and client.welcomed
    assert events[-1] == Welcomed((), bytes.fromhex(HOST_KEY))
    for value in (None, "absent"):
        client, events = _welcomed(value)
        assert client.hosted_by is None and client.welcomed and len(events) == 1
    client, events = _welcomed("not a key")
    assert client.hosted_by is None and client.stats.malformed == 1
