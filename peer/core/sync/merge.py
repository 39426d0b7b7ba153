"""The merge rules a game definition can give a region (`#! merge RULE`), as pure functions.

This module owns what each rule means; `peer.core.sync.state` keeps the stamps and contributions and
calls these. It imports nothing but the definition's types.

Per-byte rules. Every shared byte carries (value, stamp); an unwritten byte is the bottom element.
- `lww`: the higher stamp wins (the pair is ordered, see `state`).
- `max`, `min`, `bit-or`, `bit-and`: the value is the join of the two values (max, min, OR, AND)
  and the stamp the higher one. Each is commutative, associative and idempotent on values and on
  stamps, and an unwritten byte is the identity, so any replicas that received the same writes in
  any order, any number of times, hold the same bytes. A local write that loses the join (a game
  clearing a bit-or flag) is answered by writing the room's byte back into that emulator.

Counters: `add` (width 1, 2 or 4 bytes, low byte first; `bcd`: two decimal digits per byte).
A counter is a state-based PN-counter with one *slot* per writer key (protocol 6, issue 30, F3):
the slot holds (lamport, session, total), `total` being the net sum of every increment and
decrement that writer's games ever made, in all its sessions. Only the slot's owner changes it,
under a newer session or a newer Lamport stamp. Merging two states keeps, per slot, the triple
with the higher (session, lamport, total) (`state.newer`), and besides it, not summed, the newest
triple of the newest session before the slot's (*carried*): the top two of a total order by
session, hence commutative, associative and idempotent, so states converge under any delivery
order, duplicates, drops (a later total or a full state carries every earlier increment of that
writer), partitions and reconnects. The counter's value is a function of the state only: the sum
of the slots' totals (an exact integer), shown saturated into the counter's range.
Sessions are folded by their author, not kept apart: a peer that starts again (a new session)
takes as its *base* the newest total of its own from an earlier session that it knows, and
publishes base plus this session's changes, so a new session changes no value and a writer has
one summed slot however many sessions it signs (a member signing 5,320 sessions left 10,646 slots
on every peer when a slot was (writer, session); now a flood rotates the member's own two).
A peer whose disk lagged what it had published starts from an older base; when the room's newer
total of an earlier session of its own arrives, it takes that as its base and publishes again.
That total stays in every state as the carried one even after the new session's total replaced
it in the slot, so it reaches the restarted peer whichever messages were lost (when the slot
replaced it everywhere, one lost reply left the room 2 short for good). Only an *earlier*
session's total is ever a base: two processes of one key alive at once (a restart while the old
one still has links) would otherwise take each other's totals as bases and count each one's
changes again and again; the older process, seeing a newer session in its slot, publishes no
more (`Replica`). Sessions are numbered by the store, increasing (`peer.storage`).
What this leaves: a peer that crashes again, its disk lagging again, before it has heard the
room's newer total loses what its previous session made after its last save (a session's total
says nothing of the base it was built on, so a later one cannot tell a stale base from a fresh
one); one slot per (writer, session) had no such case but no bound either. A writer's part is
exact under every other schedule of drops, duplicates, reorders and single crashes.

Bounds (issue 30, F4): totals are modular. A writer publishes its total modulo M = 4(top+1)
(`modulus`, `wrap`: 400 for `add bcd`, 262,144 for `add le16`), and a total outside [0, M) is
refused (`in_range`) and counted against its sender. The room's sum is read modulo M into the
window -(top+1) .. 3top+2 (`exact`) and shown saturated into 0..top (`shown`). Why:
- honest play is exact whatever each writer's own net: one player picking up and another spending,
  for the room's whole life, makes one total climb and the other fall without end; only their sum
  matters, and it is exact while the true sum stays within the window: from a whole counter spent
  twice over (two players spending what each saw at once) to three full counters (players picking
  up together past the top). A clamp of each writer's total to the range (the previous rule) lost
  the part beyond: the demo's coins, picked up by one and spent by the other three times 40,
  showed 19 where 40 was due, then 0, and a pickup came back to the game as -40.
- one writer moves the room by at most M-1, and never for good: a batch of -(2^63-1) once showed 0
  coins for good, whatever the others picked up; now any total is a bounded offset, and later
  pickups (at most top+1 of them) carry the sum past it, so the counter moves again.
A per-write bound against the total held before is not checked: replicas hold different earlier
totals (a joiner holds none), so such a check would refuse a batch on some replicas and not others.

Ends of the range: the value shown to the game **saturates** at 0 and at the largest number the
bytes hold (99 for `add bcd`, 9999 for `add le16 bcd`, 65535 for `add le16`). Games that keep coins,
arrows or scores stop at the top (the demo's coins stop at 99, Galious's counters at 999), and a
wrap would turn one coin too many into an empty purse. The room keeps the exact sum beyond the
ends (within the window of the bounds), so spending after two players together went past the top
leaves what the sum says.

A local change is read from the emulator as a delta (new minus old bytes, as the watcher saw
them: a counter's value is linear in its bytes, so bytes that did not change cancel out); a remote
change reaches the emulator as a delta of the shown value, added inside openMSX in one Tcl command
(`peer.core.emulator.openmsx_protocol`), so an increment the game made since the last check is never
overwritten.
"""

from __future__ import annotations

from games.definition import Merge, MergeRule

JOINS = frozenset({MergeRule.MAX, MergeRule.MIN, MergeRule.BIT_OR, MergeRule.BIT_AND})


def join(rule: MergeRule, old: int, new: int) -> int:
    """The join of two written byte values under a per-byte rule other than LWW."""
    match rule:
        case MergeRule.MAX:
            return max(old, new)
        case MergeRule.MIN:
            return min(old, new)
        case MergeRule.BIT_OR:
            return old | new
        case MergeRule.BIT_AND:
            return old & new
    raise ValueError(f"{rule.value} is not a per-byte join")


def radix(merge: Merge) -> int:
    """What one byte of a counter counts: 256, or 100 for BCD."""
    return 100 if merge.bcd else 256


def top(merge: Merge) -> int:
    """The largest value a counter's bytes hold."""
    return int(radix(merge) ** merge.width - 1)


def byte_value(byte: int, bcd: bool) -> int:
    """A byte's number: itself, or its two decimal digits (a nibble above 9 counts as its value)."""
    return (byte >> 4) * 10 + (byte & 0x0F) if bcd else byte


def decode(data: bytes, merge: Merge) -> int:
    base = radix(merge)
    return sum(byte_value(byte, merge.bcd) * base**i for i, byte in enumerate(data))


def encode(value: int, merge: Merge) -> bytes:
    """The bytes showing VALUE, saturated into the counter's range."""
    value = min(max(value, 0), top(merge))
    base, out = radix(merge), bytearray()
    for _ in range(merge.width):
        value, digit = divmod(value, base)
        out.append((digit // 10) << 4 | digit % 10 if merge.bcd else digit)
    return bytes(out)


def modulus(merge: Merge) -> int:
    """M: totals and the room's sum are taken modulo this (see the bounds)."""
    return 4 * (top(merge) + 1)


def in_range(total: int, merge: Merge) -> bool:
    """Whether a writer's published total is one the counter takes: 0 <= total < M."""
    return 0 <= total < modulus(merge)


def wrap(total: int, merge: Merge) -> int:
    """A writer's own net (any integer) as the total it publishes."""
    return total % modulus(merge)


def exact(total: int, merge: Merge) -> int:
    """The room's sum for a sum of totals: the one number congruent to it modulo M in the window
    -(top+1) .. 3top+2; equal to the true sum while that lies within the window."""
    m = modulus(merge)
    r = total % m
    return r if r < 3 * m // 4 else r - m


def shown(total: int, merge: Merge) -> int:
    """The value a counter shows for a sum of totals: `exact`, saturated into 0..top."""
    return min(max(exact(total, merge), 0), top(merge))


def delta(position: int, old: int, new: int, merge: Merge) -> int:
    """How much the counter changed when its byte number POSITION went from OLD to NEW."""
    weight = radix(merge) ** position
    return int((byte_value(new, merge.bcd) - byte_value(old, merge.bcd)) * weight)
