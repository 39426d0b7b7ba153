"""Players as real `msxsync-peer` processes, and a test's own view into each one's openMSX.

`Peer` starts `python3 -m peer.cli` with its own TMPDIR, so the folder openMSX puts its control
socket in holds exactly one socket: the test connects to it (`connect`) and speaks the control
protocol through `ControlClient` next to the peer's own connection, without touching the peer's
watcher. Through it a test reads and writes emulated RAM, presses MSX keys and collects the
messages msxsync showed on openMSX's screen (`shown`: the last ones msxsync keeps in openMSX).

Every wait has a deadline (`wait_until`); nothing sleeps and hopes. `Peers` owns every process a
test started and kills what is left (peers, then their openMSX) when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import pytest

from peer.core.emulator.openmsx_protocol import Log, Update, parse_shown, shown_command
from peer.openmsx.control import ControlClient, OpenMSXError
from peer.openmsx.process import socket_folder
from tests.openmsx_builds import Build
from tests.ports import unused_port
from tests.xdisplay import xvfb

ROOT = Path(__file__).resolve().parent.parent
TESTCART = ROOT / "tests" / "cartridge" / "testcart.rom"


def cartridge_games(folder: Path, regions: str = "e020 e021 items") -> Path:
    """A games folder with the test cartridge sharing REGIONS (one definition line), with no
    armed-when rule (so --arm-after's default applies)."""
    folder.mkdir()
    shutil.copy(TESTCART, folder / "testcart.rom")
    (folder / "testcart.regions").write_text(
        f"testcart.rom\n#! title msxsync test cartridge\n#! machine C-BIOS_MSX1\n{regions}\n",
        encoding="utf-8",
    )
    return folder


POLL = 0.05
START_TIMEOUT = 30.0
WAIT = 20.0
TITLE_TIME = 6.5  # emulated seconds: the C-BIOS logo is over, the cartridge shows its title

# Keyboard matrix row 8 of the MSX: space and the cursor keys.
ROW = 8
SPACE, LEFT, UP, DOWN, RIGHT = 0x01, 0x10, 0x20, 0x40, 0x80


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Poll CHECK until it holds; fail naming WHAT after WITHIN seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(POLL)


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _pid_of(socket_path: Path) -> int:
    suffix = socket_path.name.removeprefix("socket.")
    return int(suffix) if suffix.isdigit() else -1


def openmsx_running(pid: int) -> bool:
    """Whether PID is (still) an openMSX process, not a zombie and not a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().split(b"\0")[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return pid > 0 and state != b"Z" and command.endswith(b"openmsx")


class Peer:
    """One player's process and the test's own control connection to its openMSX."""

    def __init__(
        self,
        name: str,
        folder: Path,
        args: Sequence[str],
        *,
        tty: bool = False,
        display: str | None = None,
        openmsx: str = "openmsx",
        module: str = "peer.cli",
    ) -> None:
        self.name = name
        self.module = module  # what runs as the player: msxsync-peer, or a test's altered copy
        self.openmsx = openmsx  # the openMSX program this player runs
        self.folder = folder
        self.state_dir = folder / "state"
        self.tmp = folder / "tmp"
        self.log_path = folder / f"{name}-{int(time.monotonic() * 1000)}.log"
        self.log_file = folder / f"{name}-debug.log"  # --log-file: what the terminal leaves out
        self.args = list(args)
        self.tty = tty
        self.display = display  # an X display for a window; None: --headless
        self.process: asyncio.subprocess.Process | None = None
        self.openmsx_pid: int | None = None
        self.logged: list[str] = []  # openMSX's log lines (every control connection gets them)
        self._client: ControlClient | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pty_master: int | None = None
        self.pty_slave: int | None = None  # the player's terminal, as the peer has it (its stdin)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONUNBUFFERED="1")
        env.pop("MSXSYNC_RENDEZVOUS", None)
        if self.display is not None:
            env["DISPLAY"] = self.display
            env.pop("WAYLAND_DISPLAY", None)
        return env

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            self.module,
            *(["--headless"] if self.display is None else []),
            "--openmsx",
            self.openmsx,
            "--log-file",
            str(self.log_file),
            "--ice-address",
            "127.0.0.1",
            "--state-dir",
            str(self.state_dir),
            "--name",
            self.name,
            *self.args,
        ]

    async def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.logged = []
        self.openmsx_pid = None
        stdin: int = asyncio.subprocess.DEVNULL
        if self.tty:
            self._close_pty()
            self._pty_master, self.pty_slave = pty.openpty()
            stdin = self.pty_slave  # (kept open here: a test may look at its flags)
        with self._new_log() as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv(), cwd=ROOT, env=self.env, stdin=stdin, stdout=log, stderr=log
            )

    def _new_log(self) -> BinaryIO:
        return self.log_path.open("wb")

    def terminal(self) -> str:
        """What the player's terminal showed (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log(self) -> str:
        """The terminal, then the log file (library lines, msxsync's info lines)."""
        written = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return self.terminal() + written

    async def wait_log(self, text: str, within: float = WAIT, count: int = 1) -> None:
        async def seen() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            return self.log().count(text) >= count

        await wait_until(seen, f"{self.name} to log {text!r} ({count}x)\n{self.log()[-3000:]}", within)

    def type(self, line: str) -> None:
        """A line on the peer's console (its stdin is a terminal)."""
        if self._pty_master is None:
            raise RuntimeError(f"{self.name} was started without a terminal")
        os.write(self._pty_master, line.encode() + b"\n")

    # ---- the test's view into openMSX ----------------------------------------------------------

    async def connect(self, within: float = START_TIMEOUT) -> None:
        """Connect to this peer's openMSX once its control socket is there."""

        async def found() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            # (not `find_socket`: a killed openMSX's socket file stays, and its pid may linger)
            folder = socket_folder(self.env)
            live = [p for p in folder.glob("socket.*") if openmsx_running(_pid_of(p))]
            if len(live) != 1:
                return False
            try:
                reader, writer = await asyncio.open_unix_connection(live[0])
            except OSError:
                return False
            self.openmsx_pid = _pid_of(live[0])
            self._client = ControlClient(reader, writer, self._on_event)
            return True

        await wait_until(found, f"{self.name}'s openMSX control socket", within)
        assert self._client is not None
        self._reader_task = asyncio.create_task(self._client.run())

    def _on_event(self, event: Log | Update) -> None:
        if isinstance(event, Log):
            self.logged.append(event.text)

    async def tcl(self, command: str) -> str:
        if self._client is None:
            raise RuntimeError(f"not connected to {self.name}'s openMSX")
        return await self._client.command(command)

    async def read(self, address: int, length: int = 1) -> bytes:
        return bytes.fromhex(
            await self.tcl(f"binary encode hex [debug read_block memory {address} {length}]")
        )

    async def byte(self, address: int) -> int:
        return (await self.read(address))[0]

    async def write(self, address: int, value: int) -> None:
        await self.tcl(f"debug write memory {address} {value}")

    async def wait_byte(self, address: int, value: int, within: float = WAIT) -> None:
        async def holds() -> bool:
            return await self.byte(address) == value

        try:
            await wait_until(holds, f"{self.name}'s {address:04X} == {value:02X}", within)
        except AssertionError as exc:
            now = await self.byte(address)
            raise AssertionError(f"{exc} (it holds {now:02X})\n{self.log()[-3000:]}") from None

    async def press(self, mask: int) -> None:
        """Press and release an MSX key of row 8 for a few emulated frames."""
        await self.tcl(f"keymatrixdown {ROW} {mask}; after time 0.08 {{keymatrixup {ROW} {mask}}}")
        await self.frames(5)  # released again before anything else happens

    async def frames(self, count: int = 3) -> None:
        """Let COUNT emulated frames (at least) pass: everything written before is seen by then."""
        start = await self.emulated_time()

        async def passed() -> bool:
            return await self.emulated_time() >= start + count / 50

        await wait_until(passed, f"{count} frames of {self.name}'s emulation")

    async def emulated_time(self) -> float:
        return float(await self.tcl("machine_info time"))

    async def pass_logo(self) -> None:
        """Run the BIOS logo at full speed: the cartridge has booted when this returns."""
        now = await self.emulated_time()
        if now < TITLE_TIME:
            await self.tcl(f"after time {TITLE_TIME - now:.3f} {{set throttle on}}; set throttle off")

        async def title() -> bool:
            return await self.emulated_time() >= TITLE_TIME

        await wait_until(title, f"{self.name}'s cartridge to boot", START_TIMEOUT)

    async def fast_until(self, text: str) -> None:
        """Emulate at full speed until the peer logs TEXT."""
        await self.tcl("set throttle off")
        await self.wait_log(text)
        await self.tcl("set throttle on")

    async def start_game(self, state: int = 0xE000) -> None:
        """Pass the BIOS logo at full speed, then press space at normal speed until the game runs."""
        await self.pass_logo()

        async def playing() -> bool:
            if await self.byte(state) == 1:
                return True
            await self.press(SPACE)
            return False

        await wait_until(playing, f"{self.name}'s game to start", START_TIMEOUT)

    async def shown(self) -> list[str]:
        """The messages msxsync showed on this player's screen, oldest first (its last 50)."""
        return parse_shown(await self.tcl(shown_command()))

    async def wait_message(self, text: str, within: float = WAIT) -> None:
        seen: list[str] = []

        async def shown() -> bool:
            seen[:] = await self.shown()
            return any(text in message for message in seen)

        try:
            await wait_until(shown, f"{self.name}'s openMSX to show {text!r}", within)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (shown: {seen})") from None

    def stored(self, address: int) -> int | None:
        """The value of ADDRESS in this peer's durable room state (None if not stored)."""
        path = self.state_dir / "rooms.sqlite"
        if not path.exists():
            return None
        with contextlib.closing(sqlite3.connect(path, timeout=1.0)) as db:
            try:
                row = db.execute("SELECT value FROM bytes WHERE address = ?", (address,)).fetchone()
            except sqlite3.OperationalError:  # not created yet, or locked for a moment
                return None
        return None if row is None else int(row[0])

    def stored_counter(self, address: int) -> int | None:
        """The sum of every contribution to the counter at ADDRESS in this peer's durable state."""
        path = self.state_dir / "rooms.sqlite"
        if not path.exists():
            return None
        with contextlib.closing(sqlite3.connect(path, timeout=1.0)) as db:
            try:
                row = db.execute(
                    "SELECT SUM(total) FROM contributions WHERE address = ?", (address,)
                ).fetchone()
            except sqlite3.OperationalError:
                return None
        return None if row is None or row[0] is None else int(row[0])

    # ---- ending ----------------------------------------------------------------------------------

    async def disconnect(self) -> None:
        if self._client is not None:
            self._client.close("test done")
            self._client = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, OpenMSXError):
                await self._reader_task
            self._reader_task = None

    async def stop(self, within: float = 10.0) -> int | None:
        """SIGTERM (the peer stops its openMSX), SIGKILL if it does not end in time."""
        await self.disconnect()
        code = None
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                await self.kill9()
        await self._kill_openmsx()
        self._close_pty()
        return code

    async def kill9(self) -> None:
        """kill -9 of the peer and of its openMSX (a real crash leaves no one to stop it)."""
        await self.disconnect()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self._kill_openmsx()
        self._close_pty()

    async def _kill_openmsx(self) -> None:
        pid, self.openmsx_pid = self.openmsx_pid, None
        if pid is not None and openmsx_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

            async def gone() -> bool:
                return not openmsx_running(pid)

            await wait_until(gone, f"{self.name}'s openMSX (pid {pid}) to die", 10.0)

    def _close_pty(self) -> None:
        for fd in (self._pty_master, self.pty_slave):
            if fd is not None:
                os.close(fd)
        self._pty_master = self.pty_slave = None


class Peers:
    """Every peer a test started; `close` kills what is left."""

    def __init__(self, root: Path, openmsx: Build) -> None:
        self.root = root
        self.openmsx = openmsx
        self.all: list[Peer] = []
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def new(
        self,
        name: str,
        *args: str,
        host: bool = False,
        tty: bool = False,
        display: str | None = None,
        openmsx: Build | None = None,
        module: str = "peer.cli",
    ) -> Peer:
        """A player (not started yet); OPENMSX: another build than the test's (a mixed room);
        MODULE: what runs instead of `peer.cli` (a member that misbehaves)."""
        extra = ["--host", "--port", str(self.port)] if host else ["--rendezvous", self.url]
        program = (openmsx or self.openmsx).program
        folder = self.root / name
        peer = Peer(name, folder, [*extra, *args], tty=tty, display=display, openmsx=program, module=module)
        self.all.append(peer)
        return peer

    async def host_ready(self, host: Peer) -> None:
        async def ready() -> bool:
            if host.process is not None and host.process.returncode is not None:
                raise AssertionError(f"{host.name} exited early:\n{host.log()[-3000:]}")
            return await port_open(self.port)

        await wait_until(ready, f"{host.name} to host on port {self.port}", START_TIMEOUT)

    async def close(self) -> None:
        await asyncio.gather(*(peer.stop(within=5.0) for peer in self.all), return_exceptions=True)


def players_own_openmsx_env(openmsx: Build) -> dict[str, str]:
    """The SDL drivers for an openMSX started as a player starts it (no -control: it draws at
    once), with no display: SDL's dummy video driver on 18; from 20 on, whose only drawing
    renderer is OpenGL, the offscreen one (EGL), as on 20 the dummy driver crashes it."""
    assert openmsx.features is not None
    video = "offscreen" if openmsx.features.window_renderer == "SDLGL-PP" else "dummy"
    return {"SDL_VIDEODRIVER": video, "SDL_AUDIODRIVER": "dummy"}


@pytest.fixture
def display() -> Iterator[str]:
    """An X display of the test's own (Xvfb), for players with a window."""
    with xvfb() as name:
        yield name


@pytest.fixture
async def peers(tmp_path: Path, openmsx: Build) -> AsyncIterator[Peers]:
    """The test's players; whatever is still running at the end is stopped (a module may define
    its own `peers`, which wins)."""
    group = Peers(tmp_path, openmsx)
    try:
        yield group
    finally:
        await group.close()
