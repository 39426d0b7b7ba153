"""`msxsync-rendezvous` as a real process: --help, start on a free port, serve, stop on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.rendezvous_support import make_games


def test_help_lists_the_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rendezvous.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for flag in ("--host", "--port", "--games", "--log-level", "--log-file", "--max-clients"):
        assert flag in result.stdout
    assert "4567" in result.stdout


def test_bad_flags_are_refused() -> None:
    refused = (
        ["--port", "70000"],
        ["--room-capacity", "1"],
        ["--max-clients", "zero"],
        ["--relay-rate", "0"],
        ["--relay-rate", "7"],  # (a burst of 28 bytes holds no frame)
    )
    for args in refused:
        result = subprocess.run(
            [sys.executable, "-m", "rendezvous.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, args
        assert "error" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_serves_then_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    games = make_games(tmp_path / "games")
    log_file = tmp_path / "server.log"
    command = [sys.executable, "-m", "rendezvous.cli", "--host", "127.0.0.1", "--port", "0"]
    command += ["--games", str(games), "--log-file", str(log_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = _wait_for_port(log_file, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/games", timeout=5) as resp:
            names = [game["name"] for game in json.load(resp)["games"]]
        assert names == ["demo", "norom"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    log = log_file.read_text(encoding="utf-8")
    assert "broken.regions:2" in log and "shutting down" in log
    assert "Traceback" not in log + process.stderr.read()  # type: ignore[union-attr]


def _wait_for_port(log_file: Path, process: subprocess.Popen[str]) -> int:
    """Follow the log until the server says where it listens (it logs before serving)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {process.stderr.read()}")  # type: ignore[union-attr]
        text = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", text)
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError("the server never said where it listens")
