"""The control-channel client: sends commands, matches replies to them in order.

It owns one byte stream to openMSX (a child's stdin/stdout or a UNIX socket) and the pure
`ControlStreamParser` reading it. `command()` returns the reply text or raises `CommandError`
naming the command; logs and updates go to the `on_event` callback. `run()` is the reader loop;
whoever owns the client runs it in their TaskGroup.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from peer.core.emulator.openmsx_protocol import (
    OPENING,
    ControlStreamError,
    ControlStreamParser,
    Log,
    Reply,
    Update,
    encode_command,
)

_READ_SIZE = 64 * 1024


class OpenMSXError(Exception):
    """Root of the errors the openMSX link raises."""


class CommandError(OpenMSXError):
    """openMSX answered a command with ``nok``."""

    def __init__(self, command: str, reply: str) -> None:
        shown = command if len(command) <= 120 else command[:117] + "..."
        super().__init__(f"openMSX refused `{shown}`: {reply}")
        self.command = command
        self.reply = reply


class LinkClosed(OpenMSXError):
    """The control channel is gone; no command can be answered any more."""


class ControlClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[Log | Update], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._parser = ControlStreamParser()
        self._pending: deque[tuple[str, asyncio.Future[str]]] = deque()
        self._closed: LinkClosed | None = None
        self._writer.write(OPENING)

    async def command(self, tcl: str) -> str:
        """Run TCL in openMSX and return its result; `CommandError` if openMSX says nok."""
        if self._closed is not None:
            raise self._closed
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        data = encode_command(tcl)
        self._pending.append((tcl, future))
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as error:  # openMSX went away under us (broken pipe, reset)
            self.close(f"cannot send to openMSX: {error}")
        return await future

    async def run(self) -> None:
        """Read until the stream ends. Raises `ControlStreamError` on a broken stream."""
        try:
            while chunk := await self._reader.read(_READ_SIZE):
                for event in self._parser.feed(chunk):
                    self._dispatch(event)
            self._parser.close()
        finally:
            self.close("the control connection to openMSX closed")

    def close(self, reason: str) -> None:
        """Fail every waiting command and refuse new ones; closes the writing side."""
        if self._closed is None:
            self._closed = LinkClosed(reason)
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(self._closed)
        self._writer.close()

    def _dispatch(self, event: Reply | Log | Update) -> None:
        if not isinstance(event, Reply):
            self._on_event(event)
            return
        if not self._pending:
            raise ControlStreamError(f"a reply nobody asked for: {event.text[:60]!r}")
        command, future = self._pending.popleft()
        if future.done():  # the caller gave up (cancelled); the reply keeps the order right
            return
        if event.ok:
            future.set_result(event.text)
        else:
            future.set_exception(CommandError(command, event.text))
