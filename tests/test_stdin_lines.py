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
