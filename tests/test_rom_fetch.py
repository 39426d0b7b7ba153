"""Getting a game from a real rendezvous over a real socket: definition, ROM download, cache."""

import aiohttp
import pytest

from peer.rom import GameError, cache_path, download_rom, fetch_game
from tests.rendezvous_support import ROM_BYTES, ROM_SHA1, config_for, make_games, running


async def test_definition_and_rom_come_from_the_rendezvous_and_are_cached(tmp_path):
    async with running(config_for(make_games(tmp_path / "games"))) as url, aiohttp.ClientSession() as http:
        game = await fetch_game(http, url, "demo")
        assert game.definition.title == "Demo Game"
        assert [(r.start, r.end) for r in game.definition.regions] == [(0xE000, 0xE00F)]
        assert game.rom_available and game.rom_size == len(ROM_BYTES)
        seen = []
        path = await download_rom(
            http, url, game, tmp_path / "state", force=False, progress=lambda r, t: seen.append(r)
        )
        assert path == cache_path(tmp_path / "state", ROM_SHA1)
        assert path.read_bytes() == ROM_BYTES
        assert seen[-1] == len(ROM_BYTES)
    # The rendezvous is gone now: the cached ROM is still found.
    assert await download_rom(None, url, game, tmp_path / "state", force=False) == path  # type: ignore[arg-type]


async def test_unknown_game_and_missing_rom_are_clear(tmp_path):
    async with running(config_for(make_games(tmp_path / "games"))) as url, aiohttp.ClientSession() as http:
        with pytest.raises(GameError, match="has no game 'nothing'"):
            await fetch_game(http, url, "nothing")
        with pytest.raises(GameError, match="not a game name"):
            await fetch_game(http, url, "../etc")
        norom = await fetch_game(http, url, "norom")
        assert not norom.rom_available
        with pytest.raises(GameError, match="use --rom PATH"):
            await download_rom(http, url, norom, tmp_path / "state", force=False)


async def test_a_corrupt_download_is_refused(tmp_path):
    async with running(config_for(make_games(tmp_path / "games"))) as url, aiohttp.ClientSession() as http:
        game = await fetch_game(http, url, "demo")
        from dataclasses import replace

        lying = replace(game, rom_sha256="0" * 64)
        with pytest.raises(GameError, match="corrupt"):
            await download_rom(http, url, lying, tmp_path / "state", force=False)
        assert not cache_path(tmp_path / "state", ROM_SHA1).exists()


async def test_unreachable_rendezvous_says_so(tmp_path):
    async with aiohttp.ClientSession() as http:
        with pytest.raises(GameError, match="cannot reach the rendezvous"):
            await fetch_game(http, "http://127.0.0.1:9", "demo")
