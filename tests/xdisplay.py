"""An X display of a test's own (Xvfb), for tests that need a player's window, and a small PNG
reader so that a test can tell a game's picture from a blank screen without extra packages.

`xvfb()` skips the test, with the reason, when Xvfb is not installed (`scripts/setup --test`
installs it). The display number comes from Xvfb itself (-displayfd): no guessing, no races.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 10.0


@contextlib.contextmanager
def xvfb(size: str = "1280x800x24") -> Iterator[str]:
    """Run Xvfb for the duration; yields its DISPLAY (":N")."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb, or scripts/setup --test)")
    read, write = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", size, "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        # Xvfb writes the number and then a newline, separately: the pipe stays open until Xvfb
        # ends, or the second write fails and Xvfb exits ("Cannot write display number").
        number = _read_line(read, process)
        yield f":{number}"
    finally:
        os.close(read)
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_line(fd: int, process: subprocess.Popen[bytes]) -> str:
    """The display number Xvfb writes on FD (a line), within START_TIMEOUT."""
    import select
    import time

    deadline, text = time.monotonic() + START_TIMEOUT, b""
    while not text.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            process.kill()
            raise AssertionError(f"Xvfb did not start within {START_TIMEOUT:g} s")
        text += chunk
    return text.decode().strip()


def windows(display: str) -> str:
    """The display's window tree (`xwininfo -root -tree`), names included."""
    if shutil.which("xwininfo") is None:
        pytest.skip("xwininfo is not installed (apt-get install x11-utils, or scripts/setup --test)")
    done = subprocess.run(
        ["xwininfo", "-root", "-tree"],
        env=dict(os.environ, DISPLAY=display),
        capture_output=True,
        text=True,
        timeout=10,
    )
    if done.returncode != 0:
        raise AssertionError(f"xwininfo on {display} failed: {done.stderr.strip()}")
    return done.stdout


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and RGB(A) pixels of an 8-bit, non-interlaced RGB or RGBA PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    channels = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            line[x] = (line[x] + _predict(kind, left, up, corner)) & 0xFF
        rows.append(line)
        previous = line
    pixels = [tuple(row[x : x + channels]) for row in rows for x in range(0, stride, channels)]
    return width, height, pixels


def _predict(kind: int, left: int, up: int, corner: int) -> int:
    match kind:
        case 0:
            return 0
        case 1:
            return left
        case 2:
            return up
        case 3:
            return (left + up) // 2
        case 4:
            estimate = left + up - corner
            best = min((abs(estimate - left), 0), (abs(estimate - up), 1), (abs(estimate - corner), 2))[1]
            return (left, up, corner)[best]
    raise ValueError(f"PNG filter {kind}")


def colours(path: Path) -> Counter[tuple[int, ...]]:
    """How many pixels of each colour the PNG has."""
    return Counter(png_pixels(path)[2])
