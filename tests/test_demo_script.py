"""scripts/demo without a display, as a newcomer on a server runs it: scripted players press the
keys, and the terminal shows sharing happen in a player's words, quietly; the rendezvous it hosts
listens on loopback only; when one player's session ends, the other plays on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peer import lan
from tests.peer_harness import ROOT
from tests.ports import unused_port

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(150),
]

PLAY_SECONDS = 45


def ready_virtualenv(folder: Path) -> Path:
    """MSXSYNC_VENV for the demo: this interpreter and this checkout's msxsync-peer."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    peer = bin_dir / "msxsync-peer"
    peer.write_text(f'#!/bin/sh\ncd "{ROOT}" && exec "{sys.executable}" -m peer.cli "$@"\n')
    peer.chmod(0o755)
    return folder


def reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def test_headless_demo_shows_sharing_quietly_on_loopback_only(tmp_path: Path) -> None:
    port = unused_port()
    env = dict(os.environ, MSXSYNC_VENV=str(ready_virtualenv(tmp_path / "venv")))
    env.update(MSXSYNC_DEMO_PORT=str(port), MSXSYNC_DEMO_STATE=str(tmp_path / "state"))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    output = tmp_path / "demo.txt"
    with output.open("wb") as out:
        demo = subprocess.Popen(
            [str(ROOT / "scripts" / "demo"), "--quit-after", str(PLAY_SECONDS)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while "[player1] you are player1" not in output.read_text(errors="replace"):
                assert demo.poll() is None and time.monotonic() < deadline, output.read_text()
                time.sleep(0.1)
            assert reachable("127.0.0.1", port)
            for address in lan.local_addresses():  # the demo opens no port to the network
                if ":" not in address:
                    assert not reachable(address, port), address
            assert demo.wait(PLAY_SECONDS + 60) == 0
        finally:
            if demo.poll() is None:
                demo.terminate()
                demo.wait(10)
    text = output.read_text(errors="replace")
    for line in (
        "[player2] player1 found the key",
        "[player1] player2: coins 1",
        "[player1] player2 lost the key",
        "[player1] player2 joined",
        "has left; ",
    ):
        assert line in text, text
    for chatter in ("INFO", "aiohttp", "aioice", "ALSA", "armed", "e000", "bytes from the room"):
        assert chatter not in text, text
    assert len(text.splitlines()) < 40, text
