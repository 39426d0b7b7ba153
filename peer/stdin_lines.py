"""The lines the player types, as an async iterator, on every system.

On POSIX asyncio watches stdin itself: a copy of the descriptor goes to `connect_read_pipe`
(closing the transport closes the copy, not the player's stdin). asyncio makes the descriptor
non-blocking, a flag the terminal shares with the player's shell, so it is put back on the way
out, or the shell reads "Resource temporarily unavailable" after msxsync ends.

Windows' event loop cannot watch a console handle (nor can a POSIX one watch stdin redirected
from a file, and macOS's kqueue refuses some terminals), so there a daemon thread reads lines and
hands them to the loop (`lines_from_thread`; a daemon, because a thread blocked in `readline`
cannot be stopped and must not hold up the exit). The same reader works on POSIX too, which is
how it is tested here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import BinaryIO


async def stdin_lines() -> AsyncIterator[bytes]:
    """Each line typed on stdin (with its newline) until stdin ends."""
    if sys.platform == "win32":
        async for line in lines_from_thread(unbuffered_stdin()):
            yield line
    else:
        async for line in _posix_lines():
            yield line


def unbuffered_stdin() -> BinaryIO:
    """A raw copy of stdin for the reading thread: `sys.stdin.buffer` has a lock that a thread
    blocked in `readline` holds, and the interpreter aborts at exit when it cannot take it."""
    return os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)


async def lines_from_thread(stream: BinaryIO) -> AsyncIterator[bytes]:
    """Lines of STREAM read by a daemon thread, until it ends (or fails to read)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):  # (closed under us: that is the end too)
            while line := stream.readline():
                loop.call_soon_threadsafe(queue.put_nowait, line)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is reading any more
            loop.call_soon_threadsafe(queue.put_nowait, b"")

    threading.Thread(target=read, name="msxsync-stdin", daemon=True).start()
    while line := await queue.get():
        yield line


if sys.platform != "win32":

    async def _posix_lines() -> AsyncIterator[bytes]:
        lines = _lines_from_pipe(sys.stdin.fileno())
        try:
            first = await anext(lines)
        except StopAsyncIteration:
            return
        except (OSError, ValueError):  # a stdin the loop cannot watch (a file; kqueue and a tty)
            async for line in lines_from_thread(unbuffered_stdin()):
                yield line
            return
        yield first
        async for line in lines:
            yield line

    async def _lines_from_pipe(descriptor: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(os.dup(descriptor), "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while line := await reader.readline():
                yield line
        finally:
            transport.close()
            os.set_blocking(descriptor, True)
