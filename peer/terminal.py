"""The player's terminal: the status line, the console, and the byte rates they show.

Formatting and parsing are pure (`peer.console`); this module owns stdin and stderr.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from peer.console import Command, Status, format_status, parse_command

STATUS_INTERVAL = 1.0


@dataclass(slots=True)
class Rates:
    """Shared bytes per second over the last few seconds, for the status line."""

    window: float = 5.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, count: int) -> None:
        self.samples.append((now, count))

    def per_second(self, now: float) -> float:
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()
        return sum(count for _, count in self.samples) / self.window


class Terminal:
    def __init__(self, status: Callable[[], Status], on_command: Callable[[Command], None]) -> None:
        self._status = status
        self._on_command = on_command
        self.bytes_out, self.bytes_in = Rates(), Rates()

    @staticmethod
    def say(text: str) -> None:
        """A line for the player, on its own line even while the status line is drawn."""
        print(f"\n{text}" if sys.stderr.isatty() else text, file=sys.stderr, flush=True)

    def show_status(self) -> None:
        print(format_status(self._status()), file=sys.stderr)

    async def status_loop(self) -> None:
        tty = sys.stderr.isatty()
        tick = 0
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            tick += 1
            line = format_status(self._status())
            if tty:
                sys.stderr.write("\r" + line[:200].ljust(200)[: os.get_terminal_size().columns - 1])
                sys.stderr.flush()
            elif tick % 5 == 0:
                print(line, file=sys.stderr, flush=True)

    async def console_loop(self) -> None:
        """Read commands from stdin until it ends (then the player quit)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("msxsync: type 'help' for commands", file=sys.stderr)
        while line := await reader.readline():
            command = parse_command(line.decode("utf-8", "replace"))
            if command is not None:
                self._on_command(command)
        self._on_command(Command("quit"))
