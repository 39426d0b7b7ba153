"""LAN hosting without a server: the hosting peer dies, the earliest remaining joiner takes over.

Real peers (`python -m peer.cli`) with real headless openMSX running the bundled demo, on
loopback. What each peer's replica holds is read from its durable state (SQLite), which is written
as soon as a change is merged.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.openmsx

ITEM = 0xE011
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
    if {[file exists {GO}]} { debug write memory 0xe011 7 } else { after realtime 0.1 msxsync_test_poll }
}
msxsync_test_poll
"""
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Peer:
    def __init__(self, folder: Path, name: str, args: list[str], script: str) -> None:
        folder.mkdir(parents=True)
        self.folder, self.name = folder, name
        (folder / "script.tcl").write_text(script)
        self.log = folder / "peer.log"
        command = [
            sys.executable, "-m", "peer.cli", "--game", "demo", "--room", "lanroom", "--headless",
            "--ice-address", "127.0.0.1", "--state-dir", str(folder / "state"), "--name", name,
            "--openmsx-script", str(folder / "script.tcl"), *args,
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())

    def text(self) -> str:
        return self.log.read_text(errors="replace")

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


def wait_for(condition: Callable[[], object], what: str, peers: list[Peer]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if condition():
            return
        for peer in peers:
            if peer.process.poll() is not None and peer.process.returncode not in (0, -9):
                raise AssertionError(f"{peer.name} exited early:\n{peer.text()[-3000:]}")
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name}\n{p.text()[-2500:]}" for p in peers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.kill(signal.SIGTERM if peer.process.poll() is None else signal.SIGKILL)


def test_host_killed_earliest_joiner_takes_over_and_newcomers_still_join(tmp_path, peers):
    go = tmp_path / "go"
    ports = [free_port() for _ in range(4)]
    alice = Peer(tmp_path / "alice", "alice", ["--host", "--port", str(ports[0])], START_TCL)
    peers.append(alice)
    wait_for(lambda: "joined room" in alice.text(), "alice to host", peers)
    url = f"http://127.0.0.1:{ports[0]}"
    bob = Peer(
        tmp_path / "bob",
        "bob",
        ["--rendezvous", url, "--port", str(ports[1])],
        WRITER_TCL.replace("GO", str(go)),
    )
    peers.append(bob)
    wait_for(lambda: "joined room" in bob.text(), "bob to join", peers)
    carol = Peer(tmp_path / "carol", "carol", ["--rendezvous", url, "--port", str(ports[2])], START_TCL)
    peers.append(carol)
    wait_for(lambda: all("msxsync: sharing" in p.text() for p in peers), "all three to arm", peers)

    alice.kill()
    wait_for(lambda: "bob now hosts the room" in carol.text(), "carol to follow bob", peers)
    assert "bob now hosts the room" in bob.text()
    go.touch()
    wait_for(lambda: carol.stored(ITEM) == 7, "bob's write to reach carol", peers)

    dave = Peer(
        tmp_path / "dave",
        "dave",
        ["--rendezvous", f"http://127.0.0.1:{ports[1]}", "--port", str(ports[3])],
        START_TCL,
    )
    peers.append(dave)
    wait_for(lambda: dave.stored(ITEM) == 7, "newcomer dave to get the room's bytes through bob", peers)
