"""The mesh adapter: runs one room's `MeshCore` (`peer.core.mesh.core`) on asyncio.

The rules live in the core; this module does what the core asks, the aioquic way
(`aioquic/asyncio/protocol.py`): feed it an input with the time, carry out the actions it decided
(open, answer, close and send on links; signals and relay frames through the rendezvous; events to
the application), then re-arm the one timer it asks for. Links come from an injected factory
(`LinkFactory`: aiortc's `WebRTCLinks` in the program); every task it starts (offers, answers,
closes) belongs to `run()`'s TaskGroup. Errors from applying a description the peer sent are
caught by the link, at the edge (`peer.mesh.webrtc`), and only drop that link.

Two clocks are injected: `clock`, monotonic, runs every timer; `wall` (the time of day) is handed
to the core only for Lamport stamps and skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from peer.core.mesh.core import (
    AcceptAnswer,
    Action,
    AnswerOffer,
    CloseLink,
    DialLink,
    Emit,
    Instant,
    MeshCore,
    Send,
    SendRelay,
    SendSignal,
)
from peer.core.mesh.events import LinkStatistics, PathChanged
from peer.core.mesh.paths import Path, classify
from peer.core.sync.replica import Event
from peer.core.sync.state import Delta, Run
from peer.mesh.webrtc import LinkListener, SignalSender

log = logging.getLogger(__name__)


class Link(Protocol):
    """One connection attempt with one peer (`peer.mesh.webrtc.PeerLink` in the program).

    `answer` and `accept_answer` apply a description the peer sent: whatever it makes the link
    raise is caught by the link, which then reports itself closed (the mesh sees `link_closed`)."""

    peer: bytes
    link_id: int

    async def offer(self) -> None: ...
    async def answer(self, sdp: str) -> None: ...
    async def accept_answer(self, sdp: str) -> None: ...
    def send(self, data: bytes) -> bool: ...
    @property
    def buffered_amount(self) -> int: ...
    def fingerprints(self) -> tuple[str, str]: ...
    def candidate_types(self) -> tuple[str, str] | None: ...
    async def close(self) -> None: ...


class LinkFactory(Protocol):
    def open(self, peer: bytes, link_id: int, listener: LinkListener) -> Link: ...


class RelaySender(Protocol):
    """The rendezvous's relay, as the signalling client offers it."""

    def relay_available(self) -> bool: ...
    def send_relay(self, to: bytes, frame: bytes) -> bool: ...


class Mesh:
    """All links of one room. Call `run()` in a task; feed it `set_roster` and `handle_signal`."""

    def __init__(
        self,
        core: MeshCore,
        *,
        links: LinkFactory,
        signals: SignalSender,
        relay: RelaySender | None = None,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`relay`: the rendezvous's relay (None: the player turned it off, `--no-relay`)."""
        self.core = core
        self.replica = core.replica
        self.key = core.key
        self.room = core.signer.room
        self._links = links
        self._signals = signals
        self._relay = relay
        self._on_event = on_event
        self._clock = clock
        self._wall = wall
        self._current: dict[bytes, Link] = {}  # each peer's current link
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._running = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._sleeping_until: float | None = None
        self._stopping = False
        self._carrying_out = False
        self._closing: list[Link] = []  # links to close once the task group has ended

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the core's timer until `stop()`; every task the mesh starts belongs to this TaskGroup."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self._running.set()
                try:
                    await self._timer_loop()
                finally:
                    # Not in the group: cancelled or failing, it would cancel the closes unstarted.
                    self._tasks = None
                    self.core.close_all("mesh stopped", self._now())
                    self._carry_out()
        finally:
            closing, self._closing = self._closing, []
            await asyncio.gather(*(link.close() for link in closing), return_exceptions=True)

    async def _timer_loop(self) -> None:
        while not self._stopping:
            self.core.relay_reachable(self._relay is not None and self._relay.relay_available())
            self.core.handle_timer(self._now())
            self._carry_out()
            self._wake.clear()
            deadline = self._sleeping_until = self.core.get_timer()
            delay = None if deadline is None else max(0.0, deadline - self._clock())
            # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that comes
            # as the wake-up does, and the loop would go on.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def wait_running(self) -> None:
        """Until `run()` has started: only then may signals be handled."""
        await self._running.wait()

    def stop(self, reason: str = "leaving") -> None:
        """Say goodbye to every synced peer, then end `run()` (which closes the links)."""
        self.core.say_goodbye(reason, self._now())
        self._carry_out()
        self._stopping = True
        self._wake.set()

    def _now(self) -> Instant:
        return Instant(self._clock(), self._wall())

    # ---- carrying out the core's actions ---------------------------------------------------

    def _carry_out(self) -> None:
        """Do what the core decided, in order; then wake the loop if the timer moved earlier.
        (An event handler may feed the core again: the actions it adds are done in this loop.)"""
        if self._carrying_out:
            return
        self._carrying_out = True
        try:
            while actions := self.core.actions():
                for action in actions:
                    self._do(action)
        finally:
            self._carrying_out = False
        timer = self.core.get_timer()
        if timer is not None and (self._sleeping_until is None or timer < self._sleeping_until):
            self._wake.set()
        self._notify()

    def _do(self, action: Action) -> None:
        match action:
            case Send(peer, link_id, data):
                self._send(peer, link_id, data)
            case SendRelay(peer, frame):
                if self._relay is None or not self._relay.send_relay(peer, frame):
                    self.core.link_unsendable(peer)
            case SendSignal(peer, data):
                self._signals.send_signal(peer, data)
            case DialLink(peer, link_id):
                self._spawn(self._open(peer, link_id).offer())
            case AnswerOffer(peer, link_id, sdp):
                self._spawn(self._open(peer, link_id).answer(sdp))
            case AcceptAnswer(peer, link_id, sdp) if (offered := self._link(peer, link_id)) is not None:
                self._spawn(offered.accept_answer(sdp))
            case CloseLink(peer, link_id) if self._link(peer, link_id) is not None:
                self._close(self._current.pop(peer))
            case Emit(event):
                self._emit(event)

    def _send(self, peer: bytes, link_id: int, data: bytes) -> None:
        link = self._link(peer, link_id)
        if link is None or not link.send(data):
            self.core.link_unsendable(peer)
        else:
            self.core.link_buffered(peer, link_id, link.buffered_amount, self._now())

    def _emit(self, event: Event) -> None:
        if isinstance(event, PathChanged) and event.path is Path.DIRECT:
            event = PathChanged(event.peer, _path_of(self._current.get(event.peer)) or Path.DIRECT)
        if self._on_event is not None:
            self._on_event(event)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        if self._tasks is None:
            raise RuntimeError("the mesh is not running")
        self._tasks.create_task(coroutine)  # type: ignore[arg-type]

    # ---- links -----------------------------------------------------------------------------

    def _open(self, peer: bytes, link_id: int) -> Link:
        old = self._current.pop(peer, None)
        if old is not None:
            self._close(old)
        link = self._current[peer] = self._links.open(peer, link_id, self)
        return link

    def _link(self, peer: bytes, link_id: int) -> Link | None:
        link = self._current.get(peer)
        return link if link is not None and link.link_id == link_id else None

    def _close(self, link: Link) -> None:
        if self._tasks is not None:
            self._spawn(link.close())
        else:
            self._closing.append(link)  # `run()` closes it on its way out

    # ---- link events (LinkListener) --------------------------------------------------------

    def _is_current(self, link: Link) -> bool:
        return self._current.get(link.peer) is link

    def link_open(self, link: Link) -> None:
        if self._is_current(link):
            self.core.link_open(link.peer, link.link_id, _fingerprints(link), self._now())
            self._carry_out()

    def link_message(self, link: Link, data: bytes) -> None:
        if self._is_current(link):
            self.core.link_message(link.peer, link.link_id, data, self._now())
            self._carry_out()

    def link_drained(self, link: Link) -> None:
        if self._is_current(link):
            self.core.link_drained(link.peer, link.link_id, self._now())
            self._carry_out()

    def link_closed(self, link: Link, reason: str) -> None:
        if self._is_current(link):
            self.core.link_closed(link.peer, link.link_id, reason, self._now())
            self._carry_out()

    # ---- roster, signalling, relay -----------------------------------------------------------

    def set_roster(self, keys: Iterable[bytes]) -> None:
        self.core.set_roster(keys, self._now())
        self._carry_out()
        self._wake.set()

    def handle_signal(self, sender: bytes, data: object) -> None:
        """A signalling message relayed from `sender` (the core drops anything malformed)."""
        if self._running_for(sender, "signal"):
            self.core.handle_signal(sender, data, self._now())
            self._carry_out()

    def handle_relay(self, sender: bytes, frame: bytes) -> None:
        """A frame the rendezvous relayed from `sender` (the core opens, checks or refuses it)."""
        if self._running_for(sender, "relay frame"):
            self.core.handle_relay(sender, frame, self._now())
            self._carry_out()

    def _running_for(self, sender: bytes, what: str) -> bool:
        if self._tasks is None:
            log.info("%s from %s while the mesh is not running; dropped", what, sender.hex()[:8])
        return self._tasks is not None

    # ---- the application's side ------------------------------------------------------------

    def local_changes(
        self, changes: Iterable[Run], written_at: float | None = None, deltas: Iterable[Delta] = ()
    ) -> None:
        """Changes from our emulator (see `MeshCore.local_changes`); raises ValueError for bytes
        outside the shared regions."""
        self.core.local_changes(changes, self._now(), written_at, deltas)
        self._carry_out()

    def send_chat(self, text: str) -> None:
        self.core.send_chat(text, self._now())
        self._carry_out()

    def request_resync(self) -> None:
        self.core.request_resync(self._now())
        self._carry_out()

    def admitted(self) -> set[bytes]:
        """Peers we sync with, directly or through the relay."""
        return self.core.admitted()

    def link(self, key: bytes) -> Link | None:
        """The current direct link with a peer (tests use it to send raw bytes or close it)."""
        return self._current.get(key)

    def statistics(self) -> dict[bytes, LinkStatistics]:
        report = self.core.statistics()
        for key, stats in report.items():
            if stats.path is None and key in self.core.admitted():
                stats.path = _path_of(self._current.get(key))
        return report

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds, re-checking whenever the mesh changes.

        Bound it with `asyncio.timeout`; the mesh changes at least at every heartbeat."""
        while not condition():
            await self._changed.wait()


def _path_of(link: Link | None) -> Path | None:
    types = link.candidate_types() if link is not None else None
    if types is None:
        return None
    try:
        return classify(*types)
    except ValueError:  # a candidate type aioice made up: say nothing rather than guess
        return None


def _fingerprints(link: Link) -> tuple[str, str] | str:
    """(ours, theirs), or why the link's descriptions do not say."""
    try:
        return link.fingerprints()
    except ValueError as exc:
        return str(exc)


def random_nonces(size: int) -> bytes:
    """Fresh random bytes for the core's binding nonces and relay secrets."""
    return os.urandom(size)
