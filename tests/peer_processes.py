"""Real msxsync peers as subprocesses for end-to-end tests, observed through their logs and
their durable state (SQLite, written as soon as a change is merged)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DEADLINE = 60.0

START_TCL = """
set throttle off
after time 6 {set throttle on; keymatrixdown 8 1}
after time 6.4 {keymatrixup 8 1}
"""

# Writes the item once the test creates the go file (so the write happens after the takeover).
WRITER_TCL = (
    START_TCL
    + """
proc msxsync_test_poll {} {
    if {[file exists {GO}]} { debug write memory ADDRESS VALUE } else { after realtime 0.1 msxsync_test_poll }
}
msxsync_test_poll
""".replace("ADDRESS", "0xe011").replace("VALUE", "7")
)


def writer_tcl(go: Path, address: int, value: int) -> str:
    """START_TCL, then write VALUE at ADDRESS once the file GO exists."""
    return WRITER_TCL.replace("{GO}", "{" + str(go) + "}").replace("0xe011 7", f"{address:#06x} {value}")


class Peer:
    def __init__(
        self, folder: Path, name: str, args: list[str], script: str, prefix: Sequence[str] = ()
    ) -> None:
        folder.mkdir(parents=True)
        self.folder, self.name = folder, name
        (folder / "script.tcl").write_text(script)
        self.log = folder / "peer.log"
        command = [
            *prefix, sys.executable, "-m", "peer.cli", "--game", "demo", "--headless",
            "--state-dir", str(folder / "state"), "--name", name,
            "--openmsx-script", str(folder / "script.tcl"), "--log-file", str(folder / "debug.log"), *args,
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())

    def text(self) -> str:
        """The terminal (stdout and stderr), then the log file (msxsync's info lines, libraries)."""
        debug = self.folder / "debug.log"
        return self.log.read_text(errors="replace") + (
            debug.read_text(errors="replace") if debug.exists() else ""
        )

    def stored(self, address: int) -> int | None:
        database = self.folder / "state" / "rooms.sqlite"
        if not database.exists():
            return None
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
                row = db.execute("SELECT value FROM bytes WHERE address = ?", (address,)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else int(row[0])

    def kill(self, how: int = signal.SIGKILL) -> None:
        children = _children(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(how)
        if how == signal.SIGKILL:
            for child in children:  # its openMSX would be orphaned
                with _suppress_missing():
                    os.kill(child, signal.SIGKILL)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(word) for word in task.read_text().split()]
    return found


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> bool:
        return kind is ProcessLookupError


def wait_for(condition: Callable[[], object], what: str, peers: list[Peer], within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        for peer in peers:
            if peer.process.poll() is not None and peer.process.returncode not in (0, -9):
                raise AssertionError(f"{peer.name} exited early:\n{peer.text()[-3000:]}")
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name}\n{p.text()[-2500:]}" for p in peers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def stop_all(peers: list[Peer]) -> None:
    for peer in peers:
        peer.kill(signal.SIGTERM if peer.process.poll() is None else signal.SIGKILL)
