"""`msxsync-peer` after argument parsing: check the machine, get the game, play a `Session`.

Everything a player can get wrong before or while joining ends here as one `PlayerError`
sentence (see `run_peer`); the session itself lives in `peer.session`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

import aiohttp

from games.definition import GameDefinition
from peer import identity, rom
from peer.console import player_name
from peer.host_role import HostRole
from peer.hosting import find_lan_host, lan_options
from peer.mesh.signalling import SignallingRefused
from peer.openmsx import OpenMSXError
from peer.options import PeerOptions, PlayerError
from peer.session import Session
from peer.storage import StorageError, folder_lock

log = logging.getLogger("msxsync.peer")

# Getting the game: a rendezvous silent for sock_read seconds is as good as unreachable.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=120, connect=10, sock_read=15)


async def run_peer(options: PeerOptions) -> str:
    """Play until the player quits or openMSX goes away; returns why the session ended."""
    state_dir = Path(options.state_dir) if options.state_dir else identity.default_state_dir()
    _check_environment(options)
    try:
        key = identity.load_or_create(state_dir)
    except identity.IdentityError as exc:
        raise PlayerError(f"{exc}.") from None
    except OSError as exc:  # e.g. the folder is a file, or not writable
        raise PlayerError(
            f"cannot use the state folder {state_dir} ({exc.strerror}); pick another with --state-dir."
        ) from None
    async with contextlib.AsyncExitStack() as stack:
        try:
            stack.enter_context(folder_lock(state_dir))
        except StorageError as exc:
            raise PlayerError(str(exc)) from None
        url = options.rendezvous
        if options.lan and not options.host:
            found = await find_lan_host(options)
            url, options = found.url, lan_options(options, found)
        login = os.environ.get("USER") or os.environ.get("USERNAME")  # (USERNAME on Windows)
        player = player_name(options.name, login, bytes(key.verify_key))
        host_role = await stack.enter_async_context(HostRole(options, player, bytes(key.verify_key)))
        if options.host:
            url = await host_role.host()
        definition, rom_path = await _get_game(options, url, state_dir)
        session = Session(options, key, definition, rom_path, url, state_dir, host_role)
        try:
            return await session.run()
        except BaseExceptionGroup as group:
            raise _player_error(group) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _player_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a player should hear about out of a task group's group."""
    refused = group.subgroup(SignallingRefused)
    if refused is not None:
        return PlayerError(_refusal_sentence(_first(refused)))
    mine = group.subgroup(PlayerError)
    if mine is not None:
        return _first(mine)
    emulator = group.subgroup(OpenMSXError)
    if emulator is not None:
        return PlayerError(f"openMSX went away: {_first(emulator)}")
    return group


# What to do about each refusal the rendezvous may give (codes from rendezvous/PROTOCOL.md).
_REFUSAL_ADVICE = {
    "wrong_password": "check the password with the room's players (--password)",
    "password_required": "ask the room's players for it and pass --password",
    "room_full": "pick another room with --room",
    "banned": "pick another room with --room",
    "kicked": "pick another room with --room",
    "wrong_game": "pick another room with --room",
    "name_taken": "choose another name with --name",
    "name_reserved": "choose another name with --name",
    "version_mismatch": "this msxsync and the rendezvous are different releases; update the older "
    "one (the rendezvous's status page shows its protocol version)",
    "replaced": "another msxsync-peer uses this player's identity; give each player their own --state-dir",
}


def _refusal_sentence(refusal: BaseException) -> str:
    """The server's reason (printable text only: it came over the network) and what to do."""
    code = refusal.code if isinstance(refusal, SignallingRefused) else ""
    reason = "".join(ch for ch in str(refusal).removeprefix(f"{code}: ") if ch.isprintable())[:200]
    reason = reason.rstrip(". ")
    advice = _REFUSAL_ADVICE.get(code)
    return f"could not join the room: {reason[:1].lower()}{reason[1:]}" + (f"; {advice}." if advice else ".")


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _check_environment(options: PeerOptions) -> None:
    if options.attach is None:
        _check_program(options.openmsx)
    # (Windows and macOS desktops set no DISPLAY: there a window can always be tried.)
    x11_like = sys.platform not in ("win32", "darwin")
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not options.headless and options.attach is None and x11_like and not has_display:
        raise PlayerError("no display found for openMSX's window; run with --headless, or from a desktop.")


def _check_program(program: str) -> None:
    """--openmsx names a program that exists and runs: a path is checked as a path."""
    if os.sep not in program and not (os.altsep and os.altsep in program):
        if shutil.which(program) is None:
            raise PlayerError(
                f"openMSX is not installed (no {program!r} on PATH); install it "
                "(apt-get install openmsx cbios, or from openmsx.org) or point --openmsx at it."
            )
        return
    path = Path(program)
    if not path.exists():
        raise PlayerError(f"--openmsx {program}: no such file; point it at the openMSX program.")
    if path.is_dir():
        raise PlayerError(
            f"--openmsx {program} is a folder; point it at the openMSX program inside it "
            "(openmsx, or openmsx.exe on Windows)."
        )
    if shutil.which(program) is None:
        raise PlayerError(f"--openmsx {program} is not a program this user may run.")


async def _get_game(options: PeerOptions, url: str, state_dir: Path) -> tuple[GameDefinition, Path]:
    connector = aiohttp.TCPConnector(ssl=options.tls() or True)  # True: verify with the system's CAs
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=connector) as http:
        try:
            game = await rom.fetch_game(http, url, options.game)
            if options.rom:
                return game.definition, rom.local_rom(
                    Path(options.rom), game.definition, force=options.force_rom
                )
            if not game.rom_available:
                raise PlayerError(
                    f"the rendezvous does not offer the ROM of {options.game!r}; "
                    "bring your own copy with --rom PATH."
                )
            path = await rom.download_rom(
                http, url, game, state_dir, force=options.force_rom, progress=rom.terminal_progress
            )
        except rom.GameError as exc:
            raise PlayerError(str(exc)) from None
        except TimeoutError:  # aiohttp's total timeout is no ClientError
            raise PlayerError(
                f"the rendezvous at {url} did not send the game in time; check --rendezvous or try again."
            ) from None
    return game.definition, path
