"""Getting the game: its definition from the rendezvous, and a ROM that is a known dump.

A ROM comes from `--rom PATH` or is downloaded from the rendezvous when that host offers it. Either
way it is identified by hash: it must be one of the definition's known SHA-1s unless the player
forces it (translations, patches). Downloads are size-limited while streaming, checked against
the SHA-256 the server announced, and cached as `roms/<sha1>.rom` in the state folder, so the next
start needs no download. Nothing from the server becomes a path: the cache name is our own hash.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from games.catalogue import MAX_ROM_SIZE
from games.definition import DefinitionError, GameDefinition, definition_from_json, is_valid_game_name

CHUNK = 64 * 1024


class GameError(RuntimeError):
    """A problem the player can fix; the message is one sentence saying how."""


@dataclass(frozen=True, slots=True)
class RemoteGame:
    definition: GameDefinition
    rom_available: bool
    rom_sha256: str | None
    rom_size: int | None


def check_rom(data: bytes, definition: GameDefinition, *, force: bool, origin: str) -> str:
    """The ROM's SHA-1 if it is acceptable for this game; otherwise a GameError that says why."""
    if not data:
        raise GameError(f"{origin} is empty; point --rom at the game's ROM file.")
    if len(data) > MAX_ROM_SIZE:
        raise GameError(f"{origin} is {len(data)} bytes, too large for an MSX ROM.")
    sha1 = hashlib.sha1(data).hexdigest()
    if definition.known_roms and not definition.accepts_sha1(sha1) and not force:
        known = ", ".join(rom.sha1[:12] for rom in definition.known_roms)
        raise GameError(
            f"{origin} (SHA-1 {sha1}) is not a known dump of {definition.title or definition.name} "
            f"(known: {known}); use --force-rom if it is a translation or patch you trust."
        )
    return sha1


def cache_path(state_dir: Path, sha1: str) -> Path:
    return state_dir / "roms" / f"{sha1}.rom"


def store_in_cache(state_dir: Path, data: bytes, sha1: str) -> Path:
    path = cache_path(state_dir, sha1)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".part")
    temporary.write_bytes(data)
    temporary.replace(path)
    return path


def local_rom(path: Path, definition: GameDefinition, *, force: bool) -> Path:
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or "unreadable"
        raise GameError(f"cannot read the ROM {path} ({reason}); check the path given to --rom.") from None
    check_rom(data, definition, force=force, origin=str(path))
    return path


async def fetch_game(session: aiohttp.ClientSession, base_url: str, name: str) -> RemoteGame:
    if not is_valid_game_name(name):
        raise GameError(f"{name!r} is not a game name (letters, digits, '-', '_' and '.').")
    url = f"{base_url.rstrip('/')}/api/games/{name}"
    try:
        async with session.get(url) as response:
            if response.status == 404:
                raise GameError(f"the rendezvous at {base_url} has no game {name!r}; see its /api/games.")
            response.raise_for_status()
            data = await response.json()
    except aiohttp.ClientError as exc:
        raise GameError(f"cannot reach the rendezvous at {base_url} ({exc}); check --rendezvous.") from None
    try:
        definition = definition_from_json(data.get("definition"), name, source=url)
    except (DefinitionError, AttributeError) as exc:
        raise GameError(f"the rendezvous sent a broken definition for {name!r}: {exc}.") from None
    rom = data.get("rom") if isinstance(data.get("rom"), dict) else None
    sha256 = rom.get("sha256") if rom else None
    size = rom.get("size") if rom else None
    return RemoteGame(
        definition=definition,
        rom_available=bool(data.get("rom_available")),
        rom_sha256=sha256 if isinstance(sha256, str) else None,
        rom_size=size if isinstance(size, int) else None,
    )


async def download_rom(
    session: aiohttp.ClientSession,
    base_url: str,
    game: RemoteGame,
    state_dir: Path,
    *,
    force: bool,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download (or reuse the cached) ROM of `game`; every byte is checked before it is used."""
    definition = game.definition
    for known in definition.known_roms:
        if cache_path(state_dir, known.sha1).is_file():
            return cache_path(state_dir, known.sha1)
    url = f"{base_url.rstrip('/')}/api/games/{definition.name}/rom"
    data = await _download(session, url, game.rom_size, progress)
    if game.rom_sha256 and hashlib.sha256(data).hexdigest() != game.rom_sha256:
        raise GameError(f"the ROM downloaded from {url} is corrupt (SHA-256 mismatch); try again.")
    sha1 = check_rom(data, definition, force=force, origin=url)
    return store_in_cache(state_dir, data, sha1)


async def _download(
    session: aiohttp.ClientSession,
    url: str,
    expected: int | None,
    progress: Callable[[int, int | None], None] | None,
) -> bytes:
    chunks: list[bytes] = []
    received = 0
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise GameError(
                    f"the rendezvous does not offer this ROM ({response.status}); use --rom PATH."
                )
            async for chunk in response.content.iter_chunked(CHUNK):
                received += len(chunk)
                if received > MAX_ROM_SIZE:
                    raise GameError(f"{url} sends more than {MAX_ROM_SIZE} bytes; that is no MSX ROM.")
                chunks.append(chunk)
                if progress is not None:
                    progress(received, expected)
    except aiohttp.ClientError as exc:
        raise GameError(f"downloading {url} failed ({exc}); try again or use --rom PATH.") from None
    return b"".join(chunks)


def terminal_progress(received: int, total: int | None) -> None:
    """A one-line progress bar on a terminal; silent when stderr is not one."""
    if not sys.stderr.isatty():
        return
    if total:
        filled = min(30, received * 30 // total)
        sys.stderr.write(f"\rdownloading ROM [{'#' * filled}{'.' * (30 - filled)}] {received // 1024} KiB")
        if received >= total:
            sys.stderr.write("\n")
    else:
        sys.stderr.write(f"\rdownloading ROM {received // 1024} KiB")
    sys.stderr.flush()
