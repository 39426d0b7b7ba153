"""A rendezvous that tampers with the mesh frames it relays (tests only; never shipped).

    python3 -m tests.tampering_rendezvous [msxsync-rendezvous options]

It is the real server, with its relay step wrapped: of every sender's sealed frames, once play
runs, it flips a bit in one, replays an earlier one, invents one, and swaps two (reorders), in
turn, every `EVERY` frames, and passes the rest on untouched. Each attack is printed as a JSON line
(`{"tamper": KIND}`) so a test knows it happened. The players must refuse each one and play on.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Callable

from rendezvous import cli
from rendezvous.lobby_socket import ClientReader

EVERY = 40
KINDS = ("flip", "replay", "inject", "reorder")
SEALED = 1
_original: Callable[[ClientReader, bytes], bool] = ClientReader.on_binary
_count: defaultdict[str, int] = defaultdict(int)
_earlier: dict[str, bytes] = {}
_held: dict[str, bytes] = {}


def _say(kind: str) -> None:
    sys.stdout.write(json.dumps({"tamper": kind}) + "\n")
    sys.stdout.flush()


def tampering_on_binary(self: ClientReader, data: bytes) -> bool:
    sender = self.client.key or "?"
    if len(data) <= 33 or data[32] != SEALED:
        return _original(self, data)  # the binding's handshake goes through untouched
    held = _held.pop(sender, None)
    if held is not None:  # the second half of a reordering: the later frame first
        _original(self, data)
        _original(self, held)
        _say("reorder")
        return True
    _count[sender] += 1
    turn, phase = divmod(_count[sender], EVERY)
    kind = KINDS[turn % len(KINDS)] if phase == 0 and turn > 0 else None
    match kind:
        case "flip":
            flipped = bytearray(data)
            flipped[-5] ^= 0x10
            _original(self, bytes(flipped))
            _say("flip")
        case "replay" if sender in _earlier:
            _original(self, data)
            _original(self, _earlier[sender])
            _say("replay")
        case "inject":
            _original(self, data)
            _original(self, data[:33] + os.urandom(len(data) - 33))
            _say("inject")
        case "reorder":
            _held[sender] = data
        case _:
            _original(self, data)
    _earlier[sender] = data
    return True  # (what was tampered with went on, or was held for a reordering)


def main() -> int:
    ClientReader.on_binary = tampering_on_binary  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
