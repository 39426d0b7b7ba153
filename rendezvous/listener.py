"""The listening socket of a public rendezvous: who may hold a connection, and what gets logged.

Owns what sits between the kernel and aiohttp (issue 16: about 1,030 idle sockets from one host
took /healthz down and logged 64 MB of accept errors in 33 s):

- `ConnectionGuard`: a cap on open HTTP connections (WebSockets included) in all and per source
  address. A connection over either cap is closed right after accept, before aiohttp sees it,
  so the file descriptors stay free for everyone else. Trusted proxies are exempt from the per
  source cap (their clients are counted per forwarded address by the WebSocket handler).
- `GuardedSite`: aiohttp's `TCPSite` with the guard in front of every connection.
- `runner()`: an `AppRunner` with short keep-alive (aiohttp arms it at connection start, so a
  connection that never finishes its headers is closed after it too), bounded header sizes,
  and an access log whose lines are short.
- `quiet_malformed_http`: one line, not a traceback, per malformed request.
- `throttle_accept_errors`: running out of file descriptors is logged once a second at most.

It must not import `rendezvous.state` or the handlers: it knows sockets, not the protocol.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("msxsync.rendezvous")
MAX_LOGGED_PATH = 200  # characters of a request's path kept in the access log
WINDOWS_OPEN_FILES = 16384  # Windows: no descriptor limit to stay under; a generous cap


class ConnectionGuard:
    """Counts open connections, in all and per source address; refuses those over a cap."""

    def __init__(self, total: int, per_source: int, exempt: frozenset[str] = frozenset()) -> None:
        self.total = total
        self.per_source = per_source
        self.exempt = exempt
        self.open: dict[str, int] = {}
        self.count = 0
        self.refused = 0
        self._logged = 0.0

    def admit(self, source: str) -> bool:
        held = self.open.get(source, 0)
        if self.count >= self.total or (held >= self.per_source and source not in self.exempt):
            self.refused += 1
            now = time.monotonic()
            if now - self._logged >= 1.0:  # once a second at most, however hard it is pushed
                self._logged = now
                log.warning(
                    "refusing HTTP connections (%d open, %d from %s; %d refused since start)",
                    self.count,
                    held,
                    source,
                    self.refused,
                )
            return False
        self.open[source] = held + 1
        self.count += 1
        return True

    def release(self, source: str) -> None:
        held = self.open.get(source, 0) - 1
        if held > 0:
            self.open[source] = held
        else:
            self.open.pop(source, None)
        self.count -= 1


class _Guarded(asyncio.Protocol):
    """Stands in front of aiohttp's protocol: creates it only for an admitted connection."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self.factory = factory
        self.inner: asyncio.Protocol | None = None
        self.source = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else "unknown"
        if not self.guard.admit(self.source):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            else:
                transport.close()
            return
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.guard.release(self.source)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """`web.TCPSite` with a `ConnectionGuard` in front of every accepted connection."""

    def __init__(
        self, runner: web.BaseRunner, host: str | None, port: int, guard: ConnectionGuard, **kw: Any
    ):
        super().__init__(runner, host, port, **kw)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        guard = self.guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(guard, server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


class ShortAccessLogger(AbstractAccessLogger):
    """One short line per request: an 8 KB URL is not worth 8 KB of log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.path_qs
        if len(path) > MAX_LOGGED_PATH:
            path = path[:MAX_LOGGED_PATH] + f"...({len(path)} chars)"
        self.logger.info('%s "%s %r" %d %.3fs', request.remote, request.method, path, response.status, time)


class _MalformedHttp(logging.Filter):
    """aiohttp logs a malformed request with its traceback: make it one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "malformed HTTP request from %s: %s", (remote, str(error)[:200])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_FILTER = _MalformedHttp()


def quiet_malformed_http() -> None:
    logger = logging.getLogger("aiohttp.server")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def runner(app: web.Application, keepalive_timeout: float, shutdown_timeout: float = 5.0) -> web.AppRunner:
    quiet_malformed_http()
    return web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=keepalive_timeout,
        access_log_class=ShortAccessLogger,
        max_line_size=8190,
        max_field_size=8190,
    )


def throttle_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Out of file descriptors, asyncio logs every failed accept with a traceback; log it once
    a second at most, in one line, and everything else as before."""
    last = 0.0
    suppressed = 0

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last, suppressed
        if "out of system resource" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - last < 1.0:
            suppressed += 1
            return
        last = now
        log.error(
            "%s: %s (%d more since the last line)", context["message"], context.get("exception"), suppressed
        )
        suppressed = 0

    loop.set_exception_handler(handler)


def http_cap(wanted: int) -> int:
    """Open HTTP connections in all: under the open-files limit (raised to its hard ceiling), with
    room to spare for the listening sockets, logs, games and the hashing threads."""
    return max(16, min(wanted, open_files_limit() - 64))


def open_files_limit() -> int:
    """How many files this process may open, after raising the soft limit to the hard one.
    Windows has no such limit for sockets (its event loop is not select-bound): WANTED rules."""
    if sys.platform == "win32":
        return WINDOWS_OPEN_FILES
    import resource  # POSIX only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
