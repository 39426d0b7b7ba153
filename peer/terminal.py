"""The player's terminal: msxsync's own lines, one status line, and the console.

On a terminal the status line lives on the bottom row, outside the scrolling region (the way
tmux and screen keep their status bar): messages and whatever the player types scroll above it,
and redrawing it in place (cursor saved and restored) never mixes with typed text. On a pipe or a
file the status line is printed only when its words change (no round trips, which change every
second), so a log of a long session stays short.

Formatting and parsing are pure (`peer.console`); this module owns stdin and stderr.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from typing import TextIO

from peer.console import HELP, Command, Status, format_status, parse_command, rows
from peer.stdin_lines import stdin_lines

STATUS_INTERVAL = 1.0


class Terminal:
    def __init__(
        self,
        status: Callable[[], Status],
        on_command: Callable[[Command], None],
        stream: TextIO | None = None,
    ) -> None:
        self._status = status
        self._on_command = on_command
        self._stream = stream
        self._rows = 0  # terminal rows while the bottom row is reserved for the status line
        self._last = ""

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    @property
    def tty(self) -> bool:
        return self.stream.isatty() and os.environ.get("TERM", "") not in ("", "dumb")

    def say(self, text: str) -> None:
        """A line for the player (scrolls above the status line on a terminal). A terminal would
        wrap a wide line itself, starting the next row with whatever comes there: a chat line
        padded to put "resync: ..." there would read as ours. So it is wrapped here, with indented
        rows (`peer.console.rows`); on a pipe or a file, one line stays one line."""
        lines = rows(text, max(shutil.get_terminal_size().columns - 1, 20)) if self.tty else [text]
        print("\n".join(lines), file=self.stream, flush=True)

    def lines(self, lines: list[str]) -> None:
        for line in lines:
            self.say(line)

    async def status_loop(self) -> None:
        try:
            while True:
                self.draw(self._status())
                await asyncio.sleep(STATUS_INTERVAL)
        finally:
            self._release()

    def draw(self, status: Status) -> None:
        """Show STATUS: redrawn in place on a terminal, printed on a pipe if its words changed."""
        line = format_status(status, live=self.tty)
        if not self.tty:
            if line != self._last:
                self.say(line)
            self._last = line
            return
        columns, rows = shutil.get_terminal_size()
        out = self.stream
        if rows != self._rows:  # first draw, or the window was resized: (re)reserve the bottom row
            # Make room first (a cursor on the last row would end up outside the region), then
            # restrict scrolling to rows 1..rows-1; setting a region homes the cursor: restore it.
            out.write(f"\n\x1b[A\x1b7\x1b[1;{rows - 1}r\x1b8")
            self._rows = rows
        out.write(f"\x1b7\x1b[{rows};1H\x1b[2K{line[: columns - 1]}\x1b8")
        out.flush()

    def _release(self) -> None:
        """Give the bottom row back (whole screen scrolls again), leaving the last status there."""
        if self._rows:
            self.stream.write("\x1b7\x1b[r\x1b8\n")
            self.stream.flush()
            self._rows = 0

    async def console_loop(self) -> None:
        """Read commands from stdin until it ends (then the player quit)."""
        self.say(f"msxsync: type here to talk to msxsync ({HELP})")
        async for line in stdin_lines():
            command = parse_command(line.decode("utf-8", "replace"))
            if command is not None:
                self._on_command(command)
        self._on_command(Command("quit"))
