"""A room member that tries to pin the room's counters (issue 30, F4), for
tests/test_counter_pin_e2e.py: `msxsync-peer` whose every counter change also publishes, signed by
its own key, a total of -(2^63-1) for that counter. Before issue 30 one such batch showed 0 coins
on every peer for good, whatever the others picked up later.

Run as `python -m tests.pinning_peer ARGS` with msxsync-peer's own arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from peer import cli
from peer.core.sync import codec
from peer.core.sync.replica import LocalOutcome, Replica
from peer.core.sync.state import Delta, Run

PIN = -(2**63 - 1)
_original = Replica.local_changes


def pinning_local_changes(
    self: Replica,
    changes: Iterable[Run],
    now: float,
    *,
    wall: float,
    deltas: Iterable[Delta] = (),
    **rest: Any,
) -> LocalOutcome:
    deltas = list(deltas)
    outcome = _original(self, changes, now, wall=wall, deltas=deltas, **rest)
    if deltas:
        totals = tuple((first, PIN) for first, _ in deltas)
        lamport = self.clock.tick(wall)
        pin = codec.sign_batch(
            self.signing_key, room=self.room, session=self.session, lamport=lamport, runs=(), totals=totals
        )
        self._publish(pin, now)  # (never applied here: only the others are meant to hold it)
        print(f"pinning: published {len(totals)} total(s) of {PIN}", file=sys.stderr, flush=True)
    return outcome


def main() -> int:
    Replica.local_changes = pinning_local_changes  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
