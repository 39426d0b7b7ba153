#!/usr/bin/env python3
"""Cost of durability, measured both ways side by side: what `peer.storage` does (SQLite WAL,
synchronous=FULL, one transaction per frame batch touching only the changed bytes) against the
alternative (rewrite the whole state file atomically: write, fsync, rename, fsync the folder).

Each save is one frame batch of 16 changed bytes in a 4 KiB shared state. Prints a human line and a
final JSON line with per-save latency p50/p99 in milliseconds.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from games.definition import Region
from peer.core.sync.state import Layout, SharedState
from peer.storage import RoomStore

ROUNDS = 300


def atomic_replace(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    rng = random.Random(3)
    layout = Layout([Region(0xE000, 0xEFFF)])
    state = SharedState(layout)
    writer = b"\x05" * 32
    with tempfile.TemporaryDirectory() as folder:
        store = RoomStore(Path(folder) / "state.sqlite", game="bench", room="r", layout=layout)
        file_path = Path(folder) / "state.bin"
        sqlite_ms: list[float] = []
        file_ms: list[float] = []
        for round_number in range(ROUNDS):
            addresses = rng.sample(layout.addresses, 16)
            for address in addresses:
                state.apply(address, bytes([rng.randrange(256)]), 1000 + round_number, writer)
            start = time.perf_counter()
            store.save(state, addresses)
            middle = time.perf_counter()
            atomic_replace(file_path, state.to_bytes())
            end = time.perf_counter()
            sqlite_ms.append((middle - start) * 1000)
            file_ms.append((end - middle) * 1000)
        store.close()
    result = {
        "sqlite_wal_p50_ms": round(statistics.median(sqlite_ms), 3),
        "sqlite_wal_p99_ms": round(percentile(sqlite_ms, 0.99), 3),
        "atomic_file_p50_ms": round(statistics.median(file_ms), 3),
        "atomic_file_p99_ms": round(percentile(file_ms, 0.99), 3),
        "saves": ROUNDS,
    }
    print(
        f"durable save of a 16-byte batch in a 4 KiB state: SQLite WAL p50 {result['sqlite_wal_p50_ms']} ms "
        f"p99 {result['sqlite_wal_p99_ms']} ms; atomic file replace p50 {result['atomic_file_p50_ms']} ms "
        f"p99 {result['atomic_file_p99_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
