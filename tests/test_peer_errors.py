"""Each mistake a player can make ends `msxsync-peer` with one sentence saying what to do, exit 1.

The peer runs as a real process (`python3 -m peer.cli`) against a real rendezvous on loopback
(in this test's process, serving the bundled games); rooms that refuse are held by websocket
players from tests/rendezvous_support.py. No traceback may reach the player.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from peer import app
from peer.options import PeerOptions, PlayerError
from rendezvous.app import Config
from tests.peer_harness import ROOT
from tests.ports import refused_port
from tests.rendezvous_support import logged_in, running

pytestmark = pytest.mark.timeout(90)

RUN_TIMEOUT = 60.0


@pytest.fixture
async def rendezvous() -> AsyncIterator[str]:
    async with running(Config(room_capacity=2, heartbeat=30.0)) as url:
        yield url


async def run_peer(
    tmp_path: Path,
    *args: str,
    headless: bool = True,
    real_openmsx: bool = False,
    on_start: Callable[[asyncio.subprocess.Process], None] | None = None,
) -> tuple[int, str]:
    """Run the peer to its end. Unless REAL_OPENMSX, its --openmsx is a stand-in that fails if
    started: these mistakes are caught before openMSX runs, so they need no openMSX installed."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("MSXSYNC_RENDEZVOUS", None)
    if not headless:
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
    argv = [sys.executable, "-m", "peer.cli", "--state-dir", str(tmp_path / "state"), "--name", "zoe"]
    argv += ["--ice-address", "127.0.0.1", *(["--headless"] if headless else [])]
    argv += [] if real_openmsx else ["--openmsx", stand_in_openmsx(tmp_path)]
    argv += args
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if on_start is not None:
        on_start(process)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


def stand_in_openmsx(folder: Path) -> str:
    """An executable 'openMSX' that says it must not have been started, and fails."""
    script = folder / "bin" / "openmsx"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\necho 'stand-in openMSX: this test must not start openMSX' >&2\nexit 3\n")
    script.chmod(0o755)
    return str(script)


def demo(rendezvous: str) -> tuple[str, ...]:
    return ("--game", "demo", "--rendezvous", rendezvous)


def assert_player_error(code: int, stderr: str, sentence: str) -> None:
    """Exit code 1, no traceback, and the last line is msxsync-peer's one sentence."""
    assert code == 1, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("msxsync-peer: "), stderr
    assert sentence in last, stderr
    assert last.endswith("."), last


async def test_unknown_game(tmp_path: Path, rendezvous: str) -> None:
    code, stderr = await run_peer(tmp_path, "--game", "nosuchgame", "--rendezvous", rendezvous)
    assert_player_error(code, stderr, "has no game 'nosuchgame'")


async def test_unreachable_rendezvous(tmp_path: Path) -> None:
    with refused_port() as port:  # nothing listens there
        url = f"http://127.0.0.1:{port}"
        code, stderr = await run_peer(tmp_path, "--game", "demo", "--rendezvous", url)
    assert_player_error(code, stderr, f"cannot reach the rendezvous at {url}")
    assert "check --rendezvous" in stderr


async def test_junk_rom(tmp_path: Path, rendezvous: str) -> None:
    junk = tmp_path / "junk.rom"
    junk.write_bytes(b"not a game" * 1000)
    code, stderr = await run_peer(tmp_path, *demo(rendezvous), "--rom", str(junk))
    assert_player_error(code, stderr, "is not a known dump of")
    assert "--force-rom" in stderr


async def test_missing_rom(tmp_path: Path, rendezvous: str) -> None:
    missing = tmp_path / "nowhere.rom"
    code, stderr = await run_peer(tmp_path, *demo(rendezvous), "--rom", str(missing))
    assert_player_error(code, stderr, f"cannot read the ROM {missing}")


async def test_openmsx_not_installed(tmp_path: Path, rendezvous: str) -> None:
    code, stderr = await run_peer(tmp_path, *demo(rendezvous), "--openmsx", "no-such-openmsx")
    assert_player_error(code, stderr, "openMSX is not installed")


@pytest.mark.parametrize(
    ("given", "sentence"),
    [
        ("/nonexistent/openmsx", "--openmsx /nonexistent/openmsx: no such file"),
        ("FOLDER", "is a folder; point it at the openMSX program inside it"),
        ("NOT_EXECUTABLE", "is not a program this user may run"),
    ],
)
async def test_an_openmsx_path_that_is_no_program_says_which_way(
    tmp_path: Path, rendezvous: str, given: str, sentence: str
) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program")
    path = {"FOLDER": str(tmp_path), "NOT_EXECUTABLE": str(plain)}.get(given, given)
    code, stderr = await run_peer(tmp_path, *demo(rendezvous), "--openmsx", path)
    assert_player_error(code, stderr, sentence)


async def test_a_program_that_is_not_openmsx_is_named_so(tmp_path: Path, rendezvous: str) -> None:
    code, stderr = await run_peer(tmp_path, *demo(rendezvous), "--openmsx", "/bin/true")
    assert code == 1 and "Traceback" not in stderr, stderr
    assert "it never answered as openMSX does (openMSX exited with status 0)" in stderr
    assert "is it openMSX 18.0 or newer?" in stderr


async def test_no_display_without_headless(tmp_path: Path, rendezvous: str) -> None:
    code, stderr = await run_peer(tmp_path, *demo(rendezvous), headless=False)
    assert_player_error(code, stderr, "no display found")
    assert "--headless" in stderr


@pytest.mark.openmsx
async def test_wrong_password(tmp_path: Path, rendezvous: str) -> None:
    async with aiohttp.ClientSession() as session, logged_in(session, rendezvous, "keeper") as keeper:
        await keeper.join("vault", password="open sesame")
        await keeper.expect("joined")
        code, stderr = await run_peer(
            tmp_path, *demo(rendezvous), "--room", "vault", "--password", "guess", real_openmsx=True
        )
    assert_player_error(code, stderr, "could not join the room")
    assert "wrong password for room 'vault'; check the password" in stderr, stderr


@pytest.mark.openmsx
async def test_full_room(tmp_path: Path, rendezvous: str) -> None:
    async with aiohttp.ClientSession() as session, AsyncExitStack() as stack:
        for name in ("ann", "ben"):  # the room holds two
            player = await stack.enter_async_context(logged_in(session, rendezvous, name))
            await player.join("busy")
            await player.expect("joined")
        code, stderr = await run_peer(tmp_path, *demo(rendezvous), "--room", "busy", real_openmsx=True)
    assert_player_error(code, stderr, "could not join the room")
    assert "room 'busy' is full (2 players); pick another room with --room." in stderr, stderr


async def test_ctrl_c_while_starting(tmp_path: Path) -> None:
    """Interrupted while the rendezvous keeps it waiting: a sentence, not a traceback."""
    held: list[asyncio.StreamWriter] = []
    started: list[asyncio.subprocess.Process] = []
    accepted = asyncio.Event()

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept and never answer
        accepted.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with asyncio.TaskGroup() as tasks:
        run = tasks.create_task(
            run_peer(tmp_path, *demo(f"http://127.0.0.1:{port}"), on_start=started.append)
        )
        try:
            await asyncio.wait_for(accepted.wait(), 30)
            started[0].send_signal(signal.SIGINT)
        finally:
            for writer in held:
                writer.close()
            server.close()
    code, stderr = run.result()
    assert code == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "msxsync-peer: interrupted while starting."


async def test_state_folder_unusable(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the folder should be")
    with refused_port() as port:
        code, stderr = await run_peer(tmp_path, *demo(f"http://127.0.0.1:{port}"))
    assert_player_error(code, stderr, f"cannot use the state folder {tmp_path / 'state'}")
    assert "--state-dir" in stderr


async def test_damaged_identity(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "identity.key").write_bytes(b"garbage")
    with refused_port() as port:
        code, stderr = await run_peer(tmp_path, *demo(f"http://127.0.0.1:{port}"))
    assert_player_error(code, stderr, "is not an msxsync identity key; move it away")


async def test_state_folder_in_use(tmp_path: Path) -> None:
    """Two players on one machine need two state folders: the second start is refused."""
    folder = tmp_path / "state"
    folder.mkdir()
    with (folder / "lock").open("w") as held, refused_port() as port:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running peer holds it
        code, stderr = await run_peer(tmp_path, *demo(f"http://127.0.0.1:{port}"))
    assert_player_error(code, stderr, f"another msxsync-peer is using the state folder {folder}")
    assert "--state-dir" in stderr


@pytest.mark.parametrize(
    ("limits", "sentence"),
    [
        (aiohttp.ClientTimeout(total=30, sock_read=0.3), "(Timeout on reading data from socket); check"),
        (aiohttp.ClientTimeout(total=0.3), "did not send the game in time; check --rendezvous"),
    ],
)
async def test_silent_rendezvous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limits: aiohttp.ClientTimeout, sentence: str
) -> None:
    """A rendezvous that accepts and never answers is a player error too (in-process: the real
    limits take seconds)."""
    monkeypatch.setattr(app, "HTTP_TIMEOUT", limits)
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    options = PeerOptions(game="demo", rendezvous=url)
    try:
        with pytest.raises(PlayerError) as raised:
            await app._get_game(options, url, tmp_path)
    finally:
        for writer in held:
            writer.close()
        server.close()
    assert sentence in str(raised.value)
