"""Logging of `msxsync-rendezvous`: text lines, or one JSON object a line for log shippers,
and the sampling of lines about one source (`LogSampler`).

A log call that passes `extra={"event": {...}}` (joins, leaves, refusals: `lobby_socket.note`)
has those fields in its JSON line as they are; text lines carry the same facts in the sentence.
Lines about one source (its refusals, joins, HTTP requests) go through a `LogSampler` first: a
flood from one address, or one network of addresses, is a line of each kind and then one
summary a minute, not a line each.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rendezvous.fairness import TokenBucket, network_of


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the `event` fields a log call
    passed in `extra` (join, leave, refusal: its source, key, room and reason)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update(event)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, log_file: Path | None, log_format: str = "text") -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler()
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


OTHERS = "(other sources)"  # where lines of sources beyond `max_sources` are counted


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Lines of one kind about one source that were not written in the last window."""

    source: str
    kind: str
    count: int


@dataclass(slots=True)
class _Seen:
    lines: int = 0
    kinds: set[str] = field(default_factory=set)
    suppressed: dict[str, int] = field(default_factory=dict)


class LogSampler:
    """Which per-source log lines (refusals, joins, access lines) are worth writing.

    In each window of `window` seconds, a source gets the first line of each kind written and
    `per_window` lines in all, and its network (`fairness.network_of`: an IPv4 /24, an IPv6 /64)
    `network_share` times that; every line also takes a token from a global bucket (`global_rate`
    a second, bursts of `global_burst`), so that many networks cannot write without end either.
    The lines of what welcomed players do in rooms (`admit(..., event=True)`: welcome, join,
    leave, kick, disconnect) take theirs from a bucket of their own, so that a flood of refusals
    and HTTP requests cannot keep them out of the log. What is not written is counted;
    `flush(now)` (called once a window) returns the counts by source and kind, the sources of a
    network that had several counted together under the network, the `max_summaries` largest
    one by one and the rest added up, and starts a new window. At most `max_sources` sources are
    told apart in a window; the rest count together.
    Issue 29: one flooding address wrote 16 to 28 GB of refusal and access lines a day. Round
    three: 260 addresses of two /24s, 21 HTTP requests each, drained the one global bucket, and
    honest players' welcome, join and leave lines were not written.

    Pure: time comes in as `now`; no logging here (the caller writes the lines).
    """

    def __init__(
        self,
        *,
        window: float = 60.0,
        per_window: int = 20,
        network_share: int = 4,
        global_rate: float = 50.0,
        global_burst: int = 2000,  # a restart: every player welcomed and joined again at once
        max_sources: int = 10_000,
        max_summaries: int = 20,
        now: float = 0.0,
    ) -> None:
        if window <= 0 or per_window < 1 or max_sources < 1 or max_summaries < 1 or network_share < 1:
            raise ValueError(
                "window must be positive; per_window, network_share, max_sources, max_summaries at least 1"
            )
        self.window, self.per_window, self.network_share = window, per_window, network_share
        self.max_sources, self.max_summaries = max_sources, max_summaries
        self._global = TokenBucket(global_rate, global_burst, now)
        self._events = TokenBucket(global_rate, global_burst, now)
        self._seen: dict[str, _Seen] = {}
        self._networks: dict[str, _Seen] = {}
        self.started = now
        self.suppressed = 0  # lines not written since start

    def admit(self, source: str, kind: str, now: float, *, event: bool = False) -> bool:
        """Whether to write a line of `kind` about `source` now; if not, it is counted. `event`:
        a line about what a welcomed player did in a room (see the class docstring)."""
        seen = self._seen.get(source)
        if seen is None:
            if len(self._seen) >= self.max_sources:
                source = OTHERS
            seen = self._seen.setdefault(source, _Seen())
        network = self._networks.setdefault(network_of(source), _Seen())
        own_share = kind not in seen.kinds or seen.lines < self.per_window
        network_share = kind not in network.kinds or network.lines < self.per_window * self.network_share
        bucket = self._events if event else self._global
        if own_share and network_share and bucket.take(now):
            for counted in (seen, network):
                counted.kinds.add(kind)
                counted.lines += 1
            return True
        seen.suppressed[kind] = seen.suppressed.get(kind, 0) + 1
        self.suppressed += 1
        return False

    def due(self, now: float) -> bool:
        return now - self.started >= self.window

    def flush(self, now: float) -> list[Suppressed]:
        """What was not written since the last flush, largest first, and a new window."""
        by_network: dict[str, set[str]] = {}
        for source, seen in self._seen.items():
            if seen.suppressed:
                by_network.setdefault(network_of(source), set()).add(source)
        totals: dict[tuple[str, str], int] = {}
        for source, seen in self._seen.items():
            network = network_of(source)
            label = network if len(by_network.get(network, ())) > 1 else source
            for kind, n in seen.suppressed.items():
                totals[label, kind] = totals.get((label, kind), 0) + n
        counts = [Suppressed(label, kind, n) for (label, kind), n in totals.items()]
        counts.sort(key=lambda s: (-s.count, s.source, s.kind))
        shown, rest = counts[: self.max_summaries], counts[self.max_summaries :]
        if rest:
            sources = len({s.source for s in rest})
            shown.append(Suppressed(f"{sources} more sources", "any", sum(s.count for s in rest)))
        self._seen.clear()
        self._networks.clear()
        self.started = now
        return shown
