"""The listening socket of a public rendezvous: who may hold a connection, and what gets logged.

Owns what sits between the kernel and aiohttp (issue 16: about 1,030 idle sockets from one host
took /healthz down and logged 64 MB of accept errors in 33 s):

- `ConnectionGuard`: a cap on open HTTP connections (WebSockets included) in all, per source
  address and per network (IPv4 /24, IPv6 /64). A connection over a cap is closed right after
  accept, before aiohttp sees it, so the file descriptors stay free for everyone else. Trusted
  proxies are exempt from the per source caps (their clients are counted per forwarded address
  by the WebSocket handler).
- `GuardedSite`: aiohttp's `TCPSite` with the guard in front of every connection from its TCP
  accept, and the TLS handshake run behind the guard with a deadline (`HANDSHAKE_TIMEOUT`), so
  a connection that never finishes one holds a counted slot for seconds, not a free one for a
  minute (issue 29).
- `runner()`: an `AppRunner` with short keep-alive (aiohttp arms it at connection start, so a
  connection that never finishes its headers is closed after it too), bounded header sizes,
  and an access log whose lines are short and sampled per source (`LOG_SAMPLER`), the source
  being the one the application charges (`SOURCE_OF`: the forwarded one behind a proxy).
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

from rendezvous.fairness import network_of
from rendezvous.logs import LogSampler

log = logging.getLogger("msxsync.rendezvous")
MAX_LOGGED_PATH = 200  # characters of a request's path kept in the access log
WINDOWS_OPEN_FILES = 16384  # Windows: no descriptor limit to stay under; a generous cap
HANDSHAKE_TIMEOUT = 5.0  # seconds a TLS handshake may take from the accept (asyncio's default: 60)
LOG_SAMPLER = web.AppKey("log_sampler", LogSampler)  # the application's, for its access lines
# Whom the application charges a request to (the forwarded source behind a trusted proxy): the
# access lines are sampled, and name the source, by it.
SOURCE_OF: web.AppKey[Callable[[web.BaseRequest], str]] = web.AppKey("source_of")


class ConnectionGuard:
    """Counts open connections, in all, per source address and per network (an IPv4 /24, an
    IPv6 /64: `fairness.network_of`); refuses those over a cap. A connection counts from its
    accept, before any TLS handshake."""

    def __init__(
        self,
        total: int,
        per_source: int,
        exempt: frozenset[str] = frozenset(),
        per_network: int | None = None,
    ) -> None:
        self.total = total
        self.per_source = per_source
        self.per_network = per_network if per_network is not None else 4 * per_source
        self.exempt = exempt
        self.open: dict[str, int] = {}  # by address and by network
        self.count = 0
        self.refused = 0
        self.handshakes = 0  # TLS handshakes under way (counted in `count` too)
        self.handshakes_timed_out = 0
        self._logged = 0.0

    def _keys(self, source: str) -> tuple[str, ...]:
        """What a connection from `source` is charged to: the address, and its network unless
        the address is its own network or a trusted proxy (exempt from both shares)."""
        network = network_of(source)
        return (source,) if network == source or source in self.exempt else (source, network)

    def admit(self, source: str) -> bool:
        keys = self._keys(source)
        held = self.open.get(source, 0)
        over = source not in self.exempt and (
            held >= self.per_source or (len(keys) > 1 and self.open.get(keys[1], 0) >= self.per_network)
        )
        if self.count >= self.total or over:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged >= 1.0:  # once a second at most, however hard it is pushed
                self._logged = now
                log.warning(
                    "refusing HTTP connections (%d open, %d from %s, %d from its network; "
                    "%d refused since start)",
                    self.count,
                    held,
                    source,
                    self.open.get(keys[-1], 0),
                    self.refused,
                )
            return False
        for key in keys:
            self.open[key] = self.open.get(key, 0) + 1
        self.count += 1
        return True

    def release(self, source: str) -> None:
        for key in self._keys(source):
            held = self.open.get(key, 0) - 1
            if held > 0:
                self.open[key] = held
            else:
                self.open.pop(key, None)
        self.count -= 1

    def statistics(self) -> dict[str, int]:
        return {
            "http_connections": self.count,
            "http_refused": self.refused,
            "tls_handshakes": self.handshakes,
            "tls_handshakes_timed_out": self.handshakes_timed_out,
        }


class _Guarded(asyncio.Protocol):
    """Stands in front of aiohttp's protocol from the TCP accept on: counts the connection, then
    (with `tls`) runs the TLS handshake within `handshake_timeout` seconds, and creates aiohttp's
    protocol only for an admitted connection that finished it. asyncio's own server-side TLS
    would count nothing before the handshake ends, and waits 60 s for it (issue 29: 8,400
    connections that never finished one took 2.5 GB)."""

    def __init__(
        self,
        guard: ConnectionGuard,
        factory: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.guard = guard
        self.factory = factory
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.inner: asyncio.Protocol | None = None
        self.handshake: asyncio.Task[None] | None = None
        self.admitted = False
        self.source = ""
        # asyncio hands over what came with the end of the handshake before start_tls returns.
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else "unknown"
        if not self.guard.admit(self.source):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            else:
                transport.close()
            return
        self.admitted = True
        if self.tls is None or not isinstance(transport, asyncio.Transport):
            self._start(transport)
            return
        transport.pause_reading()  # the ClientHello is for the TLS layer start_tls puts in place
        self.guard.handshakes += 1
        self.handshake = asyncio.ensure_future(self._handshake(transport, self.tls))

    async def _handshake(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        secured = None
        try:
            secured = await loop.start_tls(
                transport, self, tls, server_side=True, ssl_handshake_timeout=self.handshake_timeout
            )
        except ConnectionAbortedError:  # what asyncio raises when the handshake timed out
            self.guard.handshakes_timed_out += 1
        except (OSError, ssl.SSLError, RuntimeError):
            pass  # a failed handshake (garbage, a reset, an old client): asyncio closed it
        finally:
            self.guard.handshakes -= 1
            if secured is None:
                transport.abort()
                self._release()
        if secured is not None:
            self._start(secured)

    def _start(self, transport: asyncio.BaseTransport) -> None:
        self.inner = self.factory()
        self.inner.connection_made(transport)
        early, self.early = self.early, []
        for data in early:
            self.inner.data_received(data)

    def _release(self) -> None:
        if self.admitted:
            self.admitted = False
            self.guard.release(self.source)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake is not None and not self.handshake.done():
            self.handshake.cancel()  # lost before start_tls took the transport over
        self._release()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
        elif self.admitted:
            self.early.append(data)  # at most what the client sent with its handshake's end

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """`web.TCPSite` with a `ConnectionGuard` in front of every accepted connection, and the TLS
    handshake (with `ssl_context`) run by that guard, within `handshake_timeout` seconds."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        guard: ConnectionGuard,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        **kw: Any,
    ):
        super().__init__(runner, host, port, **kw)
        self.guard = guard
        self.handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        guard, tls, timeout = self.guard, self._ssl_context, self.handshake_timeout
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(guard, server, tls, timeout),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


class ShortAccessLogger(AbstractAccessLogger):
    """One short line per request (an 8 KB URL is not worth 8 KB of log), sampled per source by
    `sampler` when it has one (`runner()` gives it the application's `LOG_SAMPLER`): a flood is
    one line of each status, then a summary."""

    sampler: LogSampler | None = None
    source_of: Callable[[web.BaseRequest], str] | None = None

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sampler, now = self.sampler, asyncio.get_running_loop().time()
        kind = f"http {response.status}"
        source = (request.remote or "unknown") if self.source_of is None else self.source_of(request)
        if sampler is not None and not sampler.admit(source, kind, now):
            return
        path = request.path_qs
        if len(path) > MAX_LOGGED_PATH:
            path = path[:MAX_LOGGED_PATH] + f"...({len(path)} chars)"
        self.logger.info('%s "%s %r" %d %.3fs', source, request.method, path, response.status, time)


class _MalformedHttp(logging.Filter):
    """aiohttp logs a malformed request with its traceback: make it one warning line, sampled per
    source by `sampler` (the last `runner()`'s application's: one process serves one)."""

    sampler: LogSampler | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            now = time.monotonic()
            if self.sampler is not None and not self.sampler.admit(str(remote), "malformed http", now):
                return False
            record.msg, record.args = "malformed HTTP request from %s: %s", (remote, str(error)[:200])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_FILTER = _MalformedHttp()


def quiet_malformed_http() -> None:
    logger = logging.getLogger("aiohttp.server")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def runner(
    app: web.Application, keepalive_timeout: float, shutdown_timeout: float = 5.0, access_log: bool = True
) -> web.AppRunner:
    quiet_malformed_http()
    sampler = app.get(LOG_SAMPLER)
    if sampler is not None:
        _FILTER.sampler = sampler
    source_of = app.get(SOURCE_OF)
    attributes = {"sampler": sampler, "source_of": None if source_of is None else staticmethod(source_of)}
    sampled = type("SampledAccessLogger", (ShortAccessLogger,), attributes)
    return web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=keepalive_timeout,
        access_log_class=sampled,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
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
