"""The crash test's processes: a standalone rendezvous and players that are killed and restarted.

`Player` is one player across restarts: each start is a fresh tests.peer_harness `Peer` in the
same folder (same state folder and TMPDIR), so the test keeps its own control connection to the
current openMSX. A kill is kill -9 of the peer and its openMSX at once (a crash) or SIGTERM (a
quit); either way the openMSX is gone before `kill` returns. `Events` is the run's event log.
Owns processes and files; the arithmetic on what they did is in crash_figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
from crash_figures import Kill, Ledger, Write, value_for

from peer.openmsx import OpenMSXError
from tests.peer_harness import ROOT, Peer, openmsx_running, port_open
from tests.ports import unused_port

CARTRIDGE = ROOT / "tests" / "cartridge" / "testcart.rom"
REGIONS = (
    "testcart.rom\n#! title msxsync crash test\n#! machine C-BIOS_MSX1\ne010 e01f burst\ne020 e021 items\n"
)
FIRST, COUNT = 0xE010, 0x12  # E010-E021: both regions, contiguous
SHARED = range(FIRST, FIRST + COUNT)
ROOM = "crash"
NAMES = ("alice", "bob", "carol")
SHARING = "sharing with the room"
ARM_AFTER = 10.0  # the peer's default --arm-after for a game without an armed-when rule
KILL_BOTH, KILL_PEER, TERM = "kill -9", "kill -9 peer", "SIGTERM"
KILLS = (KILL_BOTH, KILL_PEER, TERM)  # KILL_PEER leaves openMSX to end on its own
OPENMSX_EXIT = 15.0  # seconds a stopped player has to end before it is killed -9
START_WITHIN = 40.0  # seconds for a started peer's openMSX to open its control socket


class CrashTestError(Exception):
    """The run itself failed (a process died, something did not happen in time)."""


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, within: float) -> float:
    """Poll CHECK until it holds; return how long it took; CrashTestError after WITHIN."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            raise CrashTestError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_bytes().rsplit(b")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class Events:
    """The run's event log (events.jsonl in the run's folder), times relative to the start."""

    def __init__(self, path: Path) -> None:
        self.t0 = time.time()
        self._file = path.open("a", encoding="utf-8")

    def rel(self, at: float) -> float:
        return round(at - self.t0, 3)

    def log(self, kind: str, **fields: Any) -> None:
        self._file.write(json.dumps({"kind": kind, "t": self.rel(time.time()), **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Player:
    """One player across its restarts: the current peer process, and when it armed."""

    def __init__(self, index: int, folder: Path, args: list[str], events: Events) -> None:
        self.index = index
        self.name = NAMES[index]
        self.folder = folder
        self.args = args
        self.events = events
        self.peer: Peer | None = None
        self.incarnation = 0
        self.started_at = 0.0
        self.armed_at: float | None = None
        self.lock = asyncio.Lock()  # a write, a kill and a restart never overlap
        self.counters: dict[int, int] = {}
        self.starts: list[dict[str, Any]] = []

    @property
    def running(self) -> bool:
        return self.peer is not None

    @property
    def armed(self) -> bool:
        return self.peer is not None and self.armed_at is not None

    async def start(self, lone: bool = False) -> None:
        peer = Peer(self.name, self.folder, self.args)
        self.incarnation += 1
        self.armed_at = None
        self.started_at = time.time()
        await peer.start()
        self.peer = peer
        record = {"player": self.name, "incarnation": self.incarnation, "lone": lone}
        record["at"] = self.events.rel(self.started_at)
        self.starts.append(record)
        self.events.log("start", **record)
        try:
            await peer.connect(within=START_WITHIN)
        except AssertionError as exc:
            raise CrashTestError(f"{self.name} did not start: {exc}") from None

    async def check_armed(self) -> None:
        """Note when the current peer logged that it armed (and its emulated time then)."""
        peer = self.peer
        if peer is None or self.armed_at is not None or SHARING not in peer.log():
            return
        self.armed_at = time.time()
        emulated = None
        with contextlib.suppress(OpenMSXError, OSError, RuntimeError, ValueError):
            emulated = float(await peer.tcl("machine_info time"))
        record = self.starts[-1]
        record["armed_after_s"] = round(self.armed_at - self.started_at, 3)
        record["armed_emulated_s"] = None if emulated is None else round(emulated, 3)
        record["armed_early"] = emulated is not None and emulated < ARM_AFTER
        self.events.log("armed", **record)

    async def write(self, ledger: Ledger, address: int) -> Write | None:
        """One traced write of a shared byte through this player's openMSX (if it is armed)."""
        peer = self.peer
        if peer is None or not self.armed:
            return None
        counter = self.counters.get(address, 0)
        self.counters[address] = counter + 1
        value = value_for(self.index, counter)
        sent = time.time()
        try:
            await peer.write(address, value)
        except (OpenMSXError, OSError, RuntimeError) as exc:
            self.events.log("write-failed", player=self.name, address=address, error=str(exc))
            return None
        write = Write(self.name, address, value, sent, time.time(), self.incarnation)
        ledger.add_write(write)
        self.events.log("write", **asdict(write))
        return write

    async def kill(self, how: str, ledger: Ledger) -> None:
        """Stop the current peer HOW (one of KILLS); its openMSX is gone when this returns."""
        peer, self.peer, self.armed_at = self.peer, None, None
        if peer is None or peer.process is None:
            return
        process = peer.process
        at = time.time()
        ledger.add_kill(Kill(self.name, how, at, self.incarnation))
        self.events.log("kill", player=self.name, how=how, incarnation=self.incarnation)
        openmsx = [pid for pid in children(process.pid) if openmsx_running(pid)]
        await peer.disconnect()
        if how == TERM:
            process.send_signal(signal.SIGTERM)  # the peer stops its openMSX itself
        else:  # a crash of the peer, or of the whole player (peer and openMSX at once)
            for pid in [process.pid, *(openmsx if how == KILL_BOTH else [])]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

        async def gone() -> bool:
            return process.returncode is not None and not any(map(openmsx_running, openmsx))

        try:
            took = await wait_for(gone, f"{self.name} to end", OPENMSX_EXIT)
        except CrashTestError:
            took = None
            for pid in [process.pid, *openmsx]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await wait_for(gone, f"{self.name} to end after kill -9", 10.0)
        self.events.log("ended", player=self.name, how=how, code=process.returncode, took_s=took)

    def signal_peer(self, number: int) -> bool:
        """Send the current peer process (not its openMSX) signal NUMBER: SIGSTOP stalls it as a
        closed lid or a debugger would, while its emulator plays on; SIGCONT resumes it."""
        peer = self.peer
        if peer is None or peer.process is None or peer.process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(peer.process.pid, number)
            return True
        return False

    async def shared(self) -> bytes | None:
        peer = self.peer
        if peer is None:
            return None
        try:
            data = await peer.read(FIRST, COUNT)
        except (OpenMSXError, OSError, RuntimeError, ValueError):
            return None
        return data if len(data) == COUNT and peer is self.peer else None

    def stored(self) -> dict[int, int]:
        """The player's disk: the room's stamped bytes (address -> value)."""
        path = self.folder / "state" / "rooms.sqlite"
        if not path.exists():
            return {}
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)) as db:
            try:
                rows = db.execute("SELECT address, value FROM bytes").fetchall()
            except sqlite3.OperationalError:
                return {}
        return {int(a): int(v) for a, v in rows}

    def database_bytes(self) -> dict[str, int]:
        state = self.folder / "state"
        return {
            name: (state / name).stat().st_size if (state / name).exists() else 0
            for name in ("rooms.sqlite", "rooms.sqlite-wal")
        }

    async def stop(self) -> None:
        if self.peer is not None:
            with contextlib.suppress(Exception):
                await self.peer.stop(within=5.0)
            self.peer = None


class Rendezvous:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        games = self.folder / "games"
        games.mkdir()
        shutil.copy(CARTRIDGE, games / "testcart.rom")
        (games / "testcart.regions").write_text(REGIONS, encoding="utf-8")
        argv = [sys.executable, "-m", "rendezvous.cli", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--games", str(games)]
        argv += ["--log-file", str(self.folder / "rendezvous.log")]
        self.process = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
        )

        async def up() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise CrashTestError(f"the rendezvous exited ({self.process.returncode})")
            return await port_open(self.port)

        await wait_for(up, "the rendezvous to listen", 20.0)

    async def players(self) -> int:
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{self.url}/healthz") as response,
        ):
            return int((await response.json())["players"])

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
