"""The rendezvous' counters in Prometheus' text format, from the official client library.

Owns one `CollectorRegistry` per application (never the library's global one: a peer may run
several rendezvous in one process, and tests make many), the metric objects, and the small
aiohttp application that serves them on a separate listen address (`--metrics ADDR:PORT`, off by
default, so the public port never shows them). Gauges (connections, players, rooms) are read
from `Server.statistics()` when scraped, so they cannot drift from what the status page says.

It must not import `rendezvous.state` (which imports this module); `gauges` is a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "msxsync_rendezvous"


class _ReadAtScrape(Collector):
    """Values the server already counts, read when scraped: gauges, and counters kept elsewhere
    (the STUN responder's)."""

    def __init__(self, gauges: Callable[[], dict[str, int]], counters: Callable[[], dict[str, int]]) -> None:
        self._gauges = gauges
        self._counters = counters

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for name, value in self._gauges().items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", f"Current {name.replace('_', ' ')}.", value=value)
        for name, value in self._counters().items():
            yield CounterMetricFamily(f"{PREFIX}_{name}", f"{name.replace('_', ' ')}.", value=value)


class Metrics:
    """Every counter the rendezvous exports; cheap enough to keep whether or not it is served."""

    def __init__(
        self, gauges: Callable[[], dict[str, int]], counters: Callable[[], dict[str, int]] = dict
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ReadAtScrape(gauges, counters))
        self.joins = Counter(f"{PREFIX}_joins", "Players that joined a room.", registry=self.registry)
        self.refusals = Counter(
            f"{PREFIX}_refusals",
            "Requests and connections refused, by reason (the protocol error code).",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limit_hits",
            "Messages or bytes refused by a rate limit, by limit.",
            ["limit"],
            registry=self.registry,
        )
        self.relay_bytes = Counter(
            f"{PREFIX}_relay_bytes", "Bytes of signals and chat relayed to others.", registry=self.registry
        )
        self.message_latency = Histogram(
            f"{PREFIX}_message_latency_seconds",
            "Time from queueing a message for a client to having written it.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(metrics: Metrics) -> web.Application:
    """A one-route application serving `metrics` at `/metrics` (and `/`)."""

    async def scrape(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.text())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/", scrape)
    return app
