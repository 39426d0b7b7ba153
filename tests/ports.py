"""Loopback ports for tests and benchmarks: the one place that picks a port for someone else.

Best is no picking at all: a server in the test's own process binds port 0 and the test reads
the port back from it (`web.TCPSite(runner, "127.0.0.1", 0)` then `runner.addresses`), and a
server process started with `--port 0` says where it listens. Two cases are left:

- `refused_port()`: a URL that must find nothing listening. A socket bound and held without
  listening makes every connection to it refused for as long as the block runs: no race.
- `unused_port()`: a program that must be told its port before it starts (`msxsync-peer --host
  --port N` cannot take 0, and the port is also where it hosts after a takeover). The port is
  free when picked, and comes from below the kernel's ephemeral range, so no outgoing
  connection on the machine can be handed it between the pick and the program's bind (a port
  from `bind(0)` is an ephemeral one, and busy test runs open thousands of connections). Only
  another program binding that very port explicitly can still take it: pick it right before use.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
LOWEST = 20_000  # below this live many services' well-known ports
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses now and that the kernel will not hand out by
    itself (see the module docstring); falls back to an ephemeral one if that range is all."""
    candidates = list(range(LOWEST, _ephemeral_low()))
    random.shuffle(candidates)  # concurrent test runs rarely pick the same one
    for port in candidates[:200]:
        if _bindable(port):
            return port
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 held bound and not listening: connecting to it is refused."""
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        yield int(holder.getsockname()[1])
