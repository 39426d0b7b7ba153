"""The player's typed lines: the thread reader Windows uses, tried here on a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from peer.stdin_lines import lines_from_thread

ROOT = Path(__file__).resolve().parent.parent


async def test_the_thread_reader_gives_every_line_then_ends() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb", buffering=0) as stream:
        os.write(write_end, "say héllo\nquit\n".encode())
        os.close(write_end)
        lines = [line async for line in lines_from_thread(stream)]
    assert lines == ["say héllo\n".encode(), b"quit\n"]


def test_a_reader_still_waiting_for_a_line_does_not_hold_up_the_exit() -> None:
    """A thread blocked in readline cannot be stopped: the program must end anyway."""
    program = (
        "import asyncio, sys\n"
        "from peer.stdin_lines import lines_from_thread, unbuffered_stdin\n"
        "async def main():\n"
        "    async for line in lines_from_thread(unbuffered_stdin()):\n"
        "        return line\n"
        "print(asyncio.run(main()))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"first\n")
        process.stdin.flush()  # and the pipe stays open: the thread waits for a second line
        assert process.stdout.readline() == b"b'first\\n'\n"
        assert process.wait(timeout=10) == 0  # ended while its stdin is still open
    finally:
        process.stdin.close()
        if process.poll() is None:
            process.kill()
        process.wait()


def test_stdin_redirected_from_a_file_still_gives_its_lines(tmp_path: Path) -> None:
    """asyncio cannot watch a regular file: the thread reader takes over."""
    typed = tmp_path / "typed.txt"
    typed.write_bytes(b"say hi\nquit\n")
    program = (
        "import asyncio\n"
        "from peer.stdin_lines import stdin_lines\n"
        "async def main():\n"
        "    return [line async for line in stdin_lines()]\n"
        "print(asyncio.run(main()))\n"
    )
    with typed.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-c", program], stdin=stdin, capture_output=True, cwd=ROOT, timeout=20
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"[b'say hi\\n', b'quit\\n']\n"
