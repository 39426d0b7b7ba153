#!/usr/bin/env python3
"""Benchmark of the pure core: what one peer spends per frame batch and per state merge.

Measures, in one run and side by side with the floor (bare Ed25519 sign / verify of the same
number of bytes, which no signed protocol can beat):
- encode + sign of a realistic frame batch (16 runs of 1-8 bytes);
- decode + verify + merge of that batch into a replica;
- merge of a full 4 KiB state snapshot (as on a join or resync);
- the merge cost of each rule beside lww, in the same run: one 4 KiB region under each rule,
  a stream of one-byte writes from two writers (per-byte rules) or of counter totals (`add`);
- the cost of signed authorship (protocol 3) for the demo's and Galious's regions: after a
  session of play (3 writers, 5,000 frame batches of a few runs each, counters counted), the bytes
  of one full state (the signed batches that still back a byte) beside the bytes of the unsigned
  per-byte entries it replaced, how many batches, and the time a joiner spends to verify and
  merge it all.
Prints a human line per figure, then one JSON line.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacl.signing import SigningKey

from games.definition import Merge, MergeRule, Region, parse_definition
from peer.core.sync import codec
from peer.core.sync.replica import Replica
from peer.core.sync.state import Contribution, Layout, SharedState

ROOM = "bench"
NOW = 1_800_000_000.0


def rate(operation: Callable[[int], object], seconds: float = 1.0) -> float:
    """Operations per second, running `operation(i)` for about `seconds`."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            operation(count)
            count += 1
    return count / elapsed


def frame_batch(rng: random.Random, lamport: int, key: SigningKey) -> codec.WriteBatch:
    addresses = sorted(rng.sample(range(0xE000, 0xE800, 16), 16))
    runs = tuple((address, rng.randbytes(rng.randint(1, 8))) for address in addresses)
    batch = codec.sign_batch(key, room=ROOM, session=1, lamport=lamport, runs=runs, totals=())
    return codec.WriteBatch.of(batch)


def signed_state_cost(game: str) -> dict[str, float | int]:
    """Bytes per full state and a joiner's verify+merge time after a simulated session."""
    root = Path(__file__).resolve().parent.parent / "games"
    definition = parse_definition((root / f"{game}.regions").read_text(), game)
    rng = random.Random(2)
    keys = [SigningKey(bytes([n]) * 32) for n in (1, 2, 3)]
    writers = [
        Replica(signing_key=k, room=ROOM, regions=definition.regions, session=n + 1)
        for n, k in enumerate(keys)
    ]
    state = SharedState(Layout(definition.regions))
    layout = state.layout
    plain = [a for a in layout.addresses if layout.counter_of(a) is None]
    counters = list(layout.counters)
    for frame in range(5000):
        writer = writers[frame % 3]
        wall = NOW + frame / 60
        runs = [
            (a, bytes([rng.randrange(256)])) for a in rng.sample(plain, min(len(plain), rng.randint(1, 6)))
        ]
        deltas = [(rng.choice(counters), rng.choice([-1, 1, 5]))] if counters and frame % 7 == 0 else []
        writer.local_changes(runs, wall, wall=wall, deltas=deltas)
        for batch in writer.state.signed_batches(newer_than=writer.state.max_lamport - 1):
            state.apply_batch(batch)
    raws = [b.raw for b in state.signed_batches()]
    receiver = Replica(signing_key=SigningKey(b"\x09" * 32), room=ROOM, regions=definition.regions, session=9)
    receiver.add_members(bytes(k.verify_key) for k in keys)
    started = time.perf_counter()
    for raw in raws:
        batch = codec.open_batch(raw, room=ROOM, authors=receiver.authors, max_runs=layout.size)
        receiver.state.apply_batch(batch)
    elapsed = time.perf_counter() - started
    assert receiver.state.digest() == state.digest()
    unsigned = sum(14 + len(e.data) for e in state.entries()) + 33 * 3 + 61 * len(state.contributions())
    return {
        f"{game}_shared_bytes": layout.size,
        f"{game}_full_state_batches": len(raws),
        f"{game}_full_state_bytes": sum(len(raw) + 4 for raw in raws),
        f"{game}_unsigned_state_bytes": unsigned,
        f"{game}_verify_merge_ms": round(elapsed * 1000, 2),
    }


def main() -> None:
    rng = random.Random(1)
    sender, receiver = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)
    regions = [Region(0xE000, 0xEFFF)]
    batches = [frame_batch(rng, int(NOW * 1000) + n, sender) for n in range(1000)]

    def encode(i: int) -> bytes:
        return codec.encode(batches[i % 1000], signing_key=sender, room=ROOM, session=1, seq=i + 1)

    messages = [encode(i) for i in range(20_000)]
    replica = Replica(signing_key=receiver, room=ROOM, regions=regions, session=2)
    replica.add_peer(bytes(sender.verify_key), NOW)
    peer = bytes(sender.verify_key)
    clock = [NOW]

    def receive(i: int) -> None:
        clock[0] += 0.01  # keep within the rate budget, as a real 60-100 Hz stream would
        replica.receive(peer, messages[i % 20_000], clock[0], wall=clock[0])

    full = SharedState(Layout(regions))
    for n, address in enumerate(range(0xE000, 0xF000, 4)):
        full.apply(address, rng.randbytes(4), int(NOW * 1000) + n, bytes(sender.verify_key))
    costs = {**signed_state_cost("demo"), **signed_state_cost("galious")}
    entries = full.entries()

    layout = Layout(regions)

    def fresh_merge() -> None:
        SharedState(layout).merge(entries)

    payload = messages[0][: -codec.SIGNATURE_SIZE]
    signed = sender.sign(payload)
    verify_key = sender.verify_key

    operations_by_rule = rule_operations(rng)

    # Interleaved short rounds, median per figure: the machine is shared and noisy, and this way
    # each figure and its floor see the same conditions.
    operations: dict[str, Callable[[int], object]] = {
        "encode_sign_per_s": encode,
        "floor_sign_per_s": lambda _: sender.sign(payload),
        "decode_verify_merge_per_s": receive,
        "floor_verify_per_s": lambda _: verify_key.verify(signed),
        "merge_4k_state_per_s": lambda _: fresh_merge(),
        **operations_by_rule,
    }
    samples: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(7):
        for name, operation in operations.items():
            samples[name].append(rate(operation, 0.15))
    results: dict[str, float | int] = {name: statistics.median(v) for name, v in samples.items()}
    results["batch_bytes"] = len(messages[0])
    results["state_entries"] = len(entries)
    results.update(costs)
    print(
        f"frame batch ({results['batch_bytes']} B, 16 runs): encode+sign "
        f"{results['encode_sign_per_s']:,.0f}/s (bare sign {results['floor_sign_per_s']:,.0f}/s); "
        f"decode+verify+merge {results['decode_verify_merge_per_s']:,.0f}/s "
        f"(bare verify {results['floor_verify_per_s']:,.0f}/s); "
        f"4 KiB state merge {results['merge_4k_state_per_s']:,.0f}/s"
    )
    print(
        "merges per second by rule (one write of one byte, or one counter total): "
        + ", ".join(
            f"{name.removeprefix('merge_').removesuffix('_per_s')} {results[name]:,.0f}"
            for name in operations_by_rule
        )
    )
    for game in ("demo", "galious"):
        figure = {
            name.removeprefix(f"{game}_"): value for name, value in costs.items() if name.startswith(game)
        }
        print(
            f"{game}: {figure['shared_bytes']} shared bytes; a full state after 5,000 batches is "
            f"{figure['full_state_batches']} signed batches, {figure['full_state_bytes']:,} B "
            f"(unsigned entries were {figure['unsigned_state_bytes']:,} B); "
            f"verify+merge {figure['verify_merge_ms']} ms"
        )
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}))


RULES = {
    "lww": Merge(),
    "max": Merge(MergeRule.MAX),
    "min": Merge(MergeRule.MIN),
    "bit_or": Merge(MergeRule.BIT_OR),
    "bit_and": Merge(MergeRule.BIT_AND),
    "add": Merge(MergeRule.ADD),
    "add_le16_bcd": Merge(MergeRule.ADD, 2, True),
}


def rule_operations(rng: random.Random) -> dict[str, Callable[[int], object]]:
    """One merge per call for each rule, into a 4 KiB region under that rule: a one-byte write
    under a fresh stamp (per-byte rules) or a new total of one of 8 writers (counters)."""
    writers = [bytes([n]) * 32 for n in range(1, 9)]
    values = rng.randbytes(4096)
    operations: dict[str, Callable[[int], object]] = {}
    for name, merge in RULES.items():
        state = SharedState(Layout([Region(0xE000, 0xEFFF, merge)]))
        if merge.rule is MergeRule.ADD:
            firsts = list(state.layout.counters)

            def count(i: int, state: SharedState = state, firsts: list[int] = firsts) -> int:
                first = firsts[i % len(firsts)]
                return state.contribute(Contribution(first, i + 1, writers[i % 8], 1, i // 8))

            operations[f"merge_{name}_per_s"] = count
        else:

            def write(i: int, state: SharedState = state) -> object:
                return state.apply(0xE000 + i % 4096, values[i % 4096 : i % 4096 + 1], i + 1, writers[i % 2])

            operations[f"merge_{name}_per_s"] = write
    return operations


if __name__ == "__main__":
    main()
