"""`OpenMSXLink`: one running openMSX, its shared regions watched and written.

It owns the openMSX child it launched (or the control socket it attached to), the tasks reading
that child's output, and the Tcl it installs (namespace ``msxsync``, setting ``msxsync_changes``).
See the package docstring for the design and `peer.core.emulator.openmsx_protocol` for the Tcl.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path

from games.definition import Region
from peer.core.emulator.openmsx_protocol import (
    CHANGES_SETTING,
    REQUEST_SETTING,
    ControlStreamError,
    CounterDelta,
    Log,
    Probe,
    Update,
    apply_command,
    decode_hex_reply,
    message_command,
    new_run_nonce,
    parse_changes,
    parse_probe,
    parse_request,
    probe_command,
    read_command,
    watch_script,
)
from peer.core.emulator.openmsx_versions import Features, UnsupportedOpenMSX, features_for, parse_version
from peer.openmsx.control import CommandError, ControlClient, LinkClosed, OpenMSXError
from peer.openmsx.control_socket import open_control_socket
from peer.openmsx.events import Exited, LinkEvent, LocalChanges, Logged, Requested
from peer.openmsx.process import DEFAULT_MACHINE, LaunchSpec, die_with_parent, find_socket
from peer.openmsx.tether import tethered

log = logging.getLogger(__name__)

STDERR_LINES = 20
STOP_TIMEOUT = 3.0
SETUP_TIMEOUT = 20.0
_FORGET_TCL = (
    "msxsync::stop; namespace delete msxsync; "
    f"user_setting destroy {CHANGES_SETTING}; user_setting destroy {REQUEST_SETTING}"
)


class OpenMSXLink:
    """Use `OpenMSXLink.launch(...)` or `OpenMSXLink.attach(...)`, not the constructor."""

    def __init__(
        self,
        regions: Sequence[Region],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        process: asyncio.subprocess.Process | None,
        pid: int,
        *,
        headless: bool = False,
    ) -> None:
        if not regions:
            raise ValueError("an openMSX link needs at least one shared region")
        self.regions = tuple(regions)
        self.pid = pid
        self.run = new_run_nonce(secrets.token_bytes(8))
        """This link's watcher nonce: reports without it are an earlier run's (see `ChangeReport`)."""
        self._process = process
        self._client = ControlClient(reader, writer, self._on_control_event)
        self._queue: asyncio.Queue[LinkEvent | None] = asyncio.Queue()
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._stderr_done = asyncio.Event()
        self._exited: Exited | None = None
        self._gone = asyncio.Event()
        self._closing = False
        self._headless = headless
        self.features: Features | None = None
        """What this openMSX's version offers (`peer.core.emulator.openmsx_versions`), once set up."""

    # --- opening and closing ------------------------------------------------------------------

    @classmethod
    def launch(
        cls,
        regions: Sequence[Region],
        *,
        home: Path,
        machine: str = DEFAULT_MACHINE,
        cartridge: Path | None = None,
        romtype: str | None = None,
        openmsx: str = "openmsx",
        scripts: Iterable[Path] = (),
        headless: bool = True,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        kernel_tie: bool = True,
        tether: bool = True,
    ) -> AbstractAsyncContextManager[OpenMSXLink]:
        """Start openMSX as a child (own OPENMSX_HOME at HOME), power it on, watch REGIONS.

        Leaving the context stops the child: ``exit``, then SIGTERM, then SIGKILL. Should this
        process die without leaving it, openMSX quits too: on Linux the kernel signals it
        (KERNEL_TIE), everywhere the tether does (TETHER, `peer.openmsx.tether`). Tests turn
        each off to see the other alone, and both off to see that it takes one of them.
        """
        spec = LaunchSpec(
            home,
            machine,
            cartridge,
            romtype,
            openmsx,
            tuple(scripts),
            headless,
            tuple(extra_args),
            kernel_tie and sys.platform.startswith("linux"),
            tether,
        )
        return _launched(cls, regions, spec, os.environ if env is None else env)

    @classmethod
    def attach(
        cls, regions: Sequence[Region], pid: int | None = None, env: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[OpenMSXLink]:
        """Connect to a running openMSX's control socket (the only one running if PID is None).

        Leaving the context removes what the link installed and leaves openMSX running.
        """
        return _attached(cls, regions, pid, os.environ if env is None else env)

    async def _setup(self, *, launched: bool) -> None:
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                await self._install(launched=launched)
        except TimeoutError:
            raise OpenMSXError(f"openMSX did not answer within {SETUP_TIMEOUT:g} s") from None
        except LinkClosed:
            await self._wait_gone()
            exited = self._exited or Exited("openMSX stopped while starting", "")
            reason = exited.reason
            if self.features is None:  # it never even said which openMSX it is
                reason = f"it never answered as openMSX does ({reason}): is it openMSX 18.0 or newer?"
            raise OpenMSXError(f"{reason}\n{exited.stderr_tail}".rstrip()) from None

    async def _install(self, *, launched: bool) -> None:
        features = self.features = await self._learn_features()
        await self.command("openmsx_update enable setting")
        if launched:
            # Under -control openMSX starts with no renderer, on a desktop too: this one opens the
            # player's window (or, headless, keeps openMSX servicing commands often: see
            # `peer.core.emulator.openmsx_versions`). An attached openMSX is the player's own: its
            # renderer is left as they set it.
            await self._set_renderer(features)
        await self.command(watch_script(self.regions, self.run))
        await self.command("msxsync::start")
        if launched:  # with -control the machine starts powered off
            await self.command("set power on")

    async def _set_renderer(self, features: Features) -> None:
        renderer = features.renderer(self._headless)
        try:
            await self.command(f"set renderer {renderer}")
        except CommandError as error:
            if renderer != "SDLGL-PP":
                raise
            raise OpenMSXError(
                f"{features.version} could not open its window ({error.reply.strip()}): from openMSX 20 "
                "on a window needs OpenGL 2 (a graphics driver, or Mesa); --headless plays without one"
            ) from None

    async def _learn_features(self) -> Features:
        """openMSX's version decides the renderer and more; one too old is refused, saying so."""
        try:
            return features_for(parse_version(await self.command("openmsx_info version")))
        except UnsupportedOpenMSX as error:
            raise OpenMSXError(str(error)) from None

    async def _stop_child(self, process: asyncio.subprocess.Process) -> None:
        self._closing = True
        if process.returncode is None:
            # Nothing of ours in settings.xml for the next run (the nonce makes it harmless anyway).
            with suppress(OpenMSXError, TimeoutError):
                await asyncio.wait_for(self.command(_FORGET_TCL), 0.5)
            # openMSX often closes the channel before it can answer `exit`.
            with suppress(OpenMSXError, TimeoutError):
                await asyncio.wait_for(self.command("exit"), 0.5)
        for stop in (None, process.terminate, process.kill):
            if stop is not None and process.returncode is None:
                stop()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                break
            except TimeoutError:
                continue
        self._client.close("the link was closed")

    async def _detach(self) -> None:
        self._closing = True
        # If openMSX is already gone or stuck, nothing of ours is left to remove.
        with suppress(OpenMSXError, TimeoutError):
            await asyncio.wait_for(self.command(_FORGET_TCL), STOP_TIMEOUT)
        self._client.close("the link was closed")

    # --- what the peer uses -------------------------------------------------------------------

    async def events(self) -> AsyncIterator[LinkEvent]:
        """Local changes, logs, and finally `Exited` if openMSX went away on its own."""
        while (event := await self._queue.get()) is not None:
            yield event
        self._queue.put_nowait(None)  # later callers end at once too

    async def command(self, tcl: str) -> str:
        """Run a Tcl command in openMSX (low level; `CommandError` on nok)."""
        return await self._client.command(tcl)

    async def apply(
        self,
        changes: Iterable[tuple[int, bytes]],
        deltas: Iterable[CounterDelta] = (),
        seen: int | None = None,
    ) -> tuple[int, ...]:
        """Write remote bytes where the CPU sees them, and add DELTAS to counters in place, without
        reporting either back as local. With SEEN (the last watcher report merged), a byte the
        game changed since keeps the game's value (see `apply_command`).

        Every change must lie inside one shared region (ValueError otherwise). Returns the
        addresses of writes that did not read back as written (no RAM mapped there now).
        """
        reply = await self.command(apply_command(self.regions, changes, deltas, seen))
        try:
            return tuple(int(word) for word in reply.split())
        except ValueError:
            raise ControlStreamError(f"bad reply to apply: {reply[:60]!r}") from None

    async def read(self, address: int, length: int) -> bytes:
        """LENGTH bytes at a CPU address, as the CPU sees them now."""
        return decode_hex_reply(await self.command(read_command(address, length)), length)

    async def show_message(self, text: str, level: str = "info") -> None:
        """Show a short message on openMSX's screen (OSD), e.g. "player joined"."""
        await self.command(message_command(text, level))

    async def emulated_time(self) -> float:
        """openMSX's emulated time in seconds (for --arm-after)."""
        reply = await self.command("machine_info time")
        try:
            return float(reply)
        except ValueError:
            raise ControlStreamError(f"bad emulated time {reply[:40]!r}") from None

    async def probe(self, addresses: Sequence[int]) -> Probe:
        """Emulated time, the watcher's last report number and the bytes at ADDRESSES, read at
        one moment (what arming checks)."""
        return parse_probe(await self.command(probe_command(addresses)), addresses)

    async def set_watching(self, on: bool) -> None:
        """Pause or resume reporting (resuming takes a fresh snapshot: no catch-up report)."""
        await self.command("msxsync::start" if on else "msxsync::stop")

    # --- tasks --------------------------------------------------------------------------------

    def _on_control_event(self, event: Log | Update) -> None:
        if isinstance(event, Log):
            self._queue.put_nowait(Logged(event.level, event.text))
        elif event.name == REQUEST_SETTING and event.value:
            self._on_request(event.value)
        elif event.name == CHANGES_SETTING and event.value:
            try:
                report = parse_changes(event.value)
            except ControlStreamError as error:
                self._queue.put_nowait(Logged("error", f"ignored a bad change report: {error}"))
                return
            if report.run != self.run:
                # (saved by openMSX in an earlier run, or an old watcher's)
                log.info("ignored a change report of an earlier msxsync run (%s)", report.run[:8])
                return
            self._queue.put_nowait(
                LocalChanges(
                    report.changes,
                    report.emutime,
                    report.written_at,
                    report.seq,
                    report.before,
                    report.jumped,
                )
            )

    def _on_request(self, value: str) -> None:
        try:
            request = parse_request(value)
        except ControlStreamError as error:
            self._queue.put_nowait(Logged("error", f"ignored a bad request: {error}"))
            return
        if request.run == self.run:  # (not a value openMSX saved in an earlier run)
            self._queue.put_nowait(Requested(request.what))

    async def _pump(self) -> None:
        """Read openMSX's control output until it ends; report an unexpected end as `Exited`."""
        broken = None
        try:
            await self._client.run()
        except ControlStreamError as error:
            broken = f"openMSX sent a broken control stream ({error})"
            if self._process is not None and self._process.returncode is None:
                self._process.kill()  # we cannot talk to it any more: do not leave it running
        except OSError as error:
            broken = f"the control connection to openMSX failed ({error})"
        if not self._closing:
            reason = broken or await self._exit_reason()
            self._exited = Exited(reason, await self._stderr_tail())
            self._queue.put_nowait(self._exited)
        self._gone.set()
        self._queue.put_nowait(None)

    async def _exit_reason(self) -> str:
        reason = f"openMSX (pid {self.pid}) closed the control connection"
        if self._process is None:
            return reason
        try:
            code = await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            return reason
        if code < 0:
            return f"openMSX was killed by {signal.Signals(-code).name}"
        return f"openMSX exited with status {code}"

    async def _stderr_tail(self) -> str:
        if self._process is not None:
            # If something else holds stderr open, report what we have.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stderr_done.wait(), 1.0)
        return "\n".join(self._stderr)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                self._stderr.append(line.decode(errors="replace").rstrip())
        finally:
            self._stderr_done.set()

    async def _wait_gone(self) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._gone.wait(), STOP_TIMEOUT)


@asynccontextmanager
async def _launched(
    cls: type[OpenMSXLink], regions: Sequence[Region], spec: LaunchSpec, env: Mapping[str, str]
) -> AsyncIterator[OpenMSXLink]:
    spec.home.mkdir(parents=True, exist_ok=True)
    try:
        process = await asyncio.create_subprocess_exec(
            *spec.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=spec.env(env),
            preexec_fn=die_with_parent if spec.kernel_tie else None,
        )
    except OSError as error:
        raise OpenMSXError(f"cannot start openMSX ({spec.openmsx}): {error}") from error
    assert process.stdin and process.stdout and process.stderr  # all three were PIPE
    try:
        link = cls(regions, process.stdout, process.stdin, process, process.pid, headless=spec.headless)
        async with _owning_tasks() as tasks, AsyncExitStack() as ties:
            tasks.create_task(link._read_stderr(process.stderr))
            tasks.create_task(link._pump())
            try:
                await link._setup(launched=True)
                if spec.tether:
                    await _tie(ties, link)
                yield link
            finally:
                await link._stop_child(process)
    finally:
        if process.returncode is None:  # only if something above failed half-way
            process.kill()
            await process.wait()


async def _tie(stack: AsyncExitStack, link: OpenMSXLink) -> None:
    """Tether the launched openMSX to this process (`peer.openmsx.tether`); without it a crash of
    msxsync may leave openMSX running, which is no reason not to play."""
    try:
        await stack.enter_async_context(tethered(link.command))
    except (OpenMSXError, OSError, TimeoutError) as error:
        log.warning("openMSX is not tethered to msxsync (%s): it may outlive a crash", error)


@asynccontextmanager
async def _attached(
    cls: type[OpenMSXLink], regions: Sequence[Region], pid: int | None, env: Mapping[str, str]
) -> AsyncIterator[OpenMSXLink]:
    path, pid = find_socket(pid, env)
    reader, writer = await open_control_socket(path)
    link = cls(regions, reader, writer, None, pid)
    async with _owning_tasks() as tasks:
        tasks.create_task(link._pump())
        try:
            await link._setup(launched=False)
            yield link
        finally:
            await link._detach()


@asynccontextmanager
async def _owning_tasks() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup whose body's own exception comes out as itself, not in an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as grouped:
        if len(grouped.exceptions) == 1:
            raise grouped.exceptions[0] from None
        raise
