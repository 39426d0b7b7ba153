"""Whose signed batches a replica accepts, and what it holds aside until it knows.

A signed batch is accepted only when its author is a member of the room (see `replica`): a
member may pass on other members' writes, never invent a writer. Who is a member comes from
four places, each with its own bound, so that no single party grows this set without limit:
- this peer, and every peer it admitted (each one proved its key over a live link);
- keys the rendezvous named (rosters and their `past` lists), the most recently named
  `NAMED_KEYS` of them;
- authors a member vouched for by holding their batches (below), at most `VOUCHES_PER_MEMBER`
  per member and `MAX_VOUCHED` in all;
- and the authors of what this replica loaded from disk when it started (fixed then: at most
  one per stored batch, and a stored batch is one that backed a byte when it was saved).

Threat model (issue 30, F5). A joiner learns who left the room from the rendezvous's `past`
list. That list is bounded, so it can be flushed: 64 throw-away keys joining and leaving took a
real player off it (the rendezvous now drops the shortest stays first, `rendezvous.rooms`), and
a rendezvous restarted or lying names whom it likes. A joiner then saw that player's 250
batches in an honest member's full state, refused each as `unknown_author`, counted each
against the honest sender and cut it, and never held the player's bytes. Two parties can lie:
- a lying rendezvous names keys without end (256,000 in 3.6 s grew every peer's set by 28 MB).
  What it names is kept to the `NAMED_KEYS` most recently named: a roster (at most 256 members
  and 256 past keys, `signalling.MAX_MEMBERS`) always fits, so a current member is never
  forgotten; a key named once long ago may be, and its later batches are then judged like
  any other unknown author's. The first time the bound is reached it is logged.
- a malicious member passes on batches "by" keys it made up. What could a made-up author do
  that the member cannot do under its own key? Not write other bytes: the batch meets every
  rule a member's own batch meets (regions, clock bound, size). It could add counter slots
  (one per author) and take credit away from the member. So a member's word is taken for a
  few authors, not for any number: `VOUCHES_PER_MEMBER` (an honest member holds batches by
  the room's past players, a handful in a room of 8, and the rendezvous names most of them
  anyway), and `MAX_VOUCHED` over all members. Past that, its batches by unknown authors are
  held aside.
What is left to such a member: its inventions travel on, and a peer that gets them from an honest
member charges them to that member's word. So that they do not use up that word before the real
past players it holds (the review of F5: 64 made-up authors stamped 1 went first in an honest
member's full state, oldest first, and a real past player stayed held aside at a joiner for
good), a full state puts the batches of authors its sender knows first-hand (`first_hand`: not
only on a member's word) first. A word spent on an author whose batches back nothing any more
is given back when a member's words run out (`reclaim`). What still ends up held aside at a peer
makes its state differ from the sender's; it neither sends that sender digests nor answers its
digests meanwhile (`aside_from`), since each would only bring the same full state again (they
did, about 1.3 KB a second). That leaves made-up authors held aside, and an honest past player
only when members' words are used up (`MAX_VOUCHED` in all) and the rendezvous no longer names
it, which `rendezvous.rooms` makes hard.
What is held aside is neither merged nor counted against the sender: an honest member cannot
tell which authors we were told of. It is bounded per sender (`ASIDE_PER_SENDER` batches,
`ASIDE_BYTES_PER_SENDER`, a quarter of the room's, so one member cannot fill what the others'
past players need) and in all (`ASIDE_BATCHES`, `ASIDE_BYTES`); past those a batch is dropped,
and counted, still not as a strike. It goes when its sender's link ends (`drop_sender`) and after
`ASIDE_SECONDS` (`expire`): a member's next full state or repair brings it again, so nothing is
lost and nothing one member sent stays for good. It is merged once its author is accepted (named
by the rendezvous, or vouched for by another member), under every rule a batch meets when it
comes: its stamp was checked against the clock bound before it was set aside and is again when
it is let in (`replica`), so waiting aside lets no stamp from the far future in.

This module is pure (no I/O; times come in as `now`); `replica` feeds it and applies what it
releases.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator

from peer.core.sync.state import SignedBatch

log = logging.getLogger(__name__)

NAMED_KEYS = 1024  # keys the rendezvous named, most recently named kept (a roster is <= 512)
VOUCHES_PER_MEMBER = 64  # authors one member's word alone may add (the rendezvous's past list)
MAX_VOUCHED = 256  # authors all members' words may add
ASIDE_PER_SENDER = 256  # batches by unknown authors held aside per sender
ASIDE_BATCHES = 1024  # and in all
ASIDE_BYTES = 4 * 1024 * 1024  # in all
ASIDE_BYTES_PER_SENDER = ASIDE_BYTES // 4  # so that one member cannot fill what all members share
ASIDE_SECONDS = 120.0  # held aside at most this long (a repair or full state brings it again)


class Authors:
    """The keys whose signed batches are accepted, and the batches held aside meanwhile."""

    def __init__(self, own: bytes, stored: Iterable[bytes] = ()) -> None:
        self.own = own
        self.stored: frozenset[bytes] = frozenset(stored)
        self.admitted: set[bytes] = set()
        self.named: OrderedDict[bytes, None] = OrderedDict()
        self.vouched_by: dict[bytes, set[bytes]] = {}  # member -> the authors its word added
        self.vouched: dict[bytes, bytes] = {}  # author -> the member whose word added it
        self.forgotten = 0  # named keys dropped past NAMED_KEYS
        self._aside: OrderedDict[bytes, tuple[bytes, SignedBatch, float]] = OrderedDict()  # by id
        self._aside_by_sender: dict[bytes, tuple[int, int]] = {}  # sender -> (batches, bytes)
        self._aside_by_author: dict[bytes, list[bytes]] = {}
        self._aside_bytes = 0
        self._ready: list[tuple[bytes, SignedBatch]] = []
        self._told_full: set[bytes] = set()

    def __contains__(self, author: object) -> bool:
        return (
            author == self.own
            or author in self.admitted
            or author in self.named
            or author in self.vouched
            or author in self.stored
        )

    def __iter__(self) -> Iterator[bytes]:
        return iter({self.own, *self.admitted, *self.named, *self.vouched, *self.stored})

    def __len__(self) -> int:
        """How many keys are accepted."""
        return len({self.own, *self.admitted, *self.named, *self.vouched, *self.stored})

    @property
    def aside(self) -> int:
        return len(self._aside)

    def admit(self, peer: bytes) -> None:
        """A peer proved its key over a link: its batches are accepted from now on."""
        self.admitted.add(peer)
        self._accepted(peer)

    def name(self, keys: Iterable[bytes]) -> None:
        """Keys the rendezvous named (a roster's members and past members)."""
        for key in keys:
            self.named[key] = None
            self.named.move_to_end(key)
            self._accepted(key)
        while len(self.named) > NAMED_KEYS:
            self.named.popitem(last=False)
            if not self.forgotten:
                log.warning(
                    "the rendezvous has named more than %d keys for this room; the least recently "
                    "named are forgotten (a rendezvous that lies about rosters does this): their "
                    "writes are taken only when a member holds them",
                    NAMED_KEYS,
                )
            self.forgotten += 1

    def vouch(self, member: bytes, author: bytes) -> bool:
        """MEMBER (admitted) holds a batch by AUTHOR, whom we do not know: take its word for
        it if it has some left (see the module docstring). True when AUTHOR is accepted now."""
        if author in self:
            return True
        words = self.vouched_by.setdefault(member, set())
        if len(words) >= VOUCHES_PER_MEMBER or len(self.vouched) >= MAX_VOUCHED:
            if member not in self._told_full:
                self._told_full.add(member)
                log.warning(
                    "%s holds batches by more authors we were not told of than we take one "
                    "member's word for (%d of %d in all); the rest are held aside",
                    member.hex()[:8],
                    len(words),
                    len(self.vouched),
                )
            return False
        words.add(author)
        self.vouched[author] = member
        log.info("%s holds batches by %s, a past member: accepted", member.hex()[:8], author.hex()[:8])
        self._accepted(author)
        return True

    def first_hand(self, author: bytes) -> bool:
        """Whether AUTHOR is accepted on more than a member's word (what a full state we send
        puts first, so that our word goes to the players we know before those we were told of)."""
        return author in self and author not in self.vouched

    def reclaim(self, live: Collection[bytes]) -> int:
        """Take back the words spent on authors whose batches back nothing any more (not in
        LIVE, the authors of the state's batches) and wait aside for nothing; how many."""
        dead = [a for a in self.vouched if a not in live and a not in self._aside_by_author]
        for author in dead:
            member = self.vouched.pop(author)
            self.vouched_by[member].discard(author)
            self._told_full.discard(member)
        return len(dead)

    def aside_from(self, sender: bytes) -> bool:
        """Whether batches SENDER passed on wait aside (so our states differ, and say so)."""
        return sender in self._aside_by_sender

    def set_aside(self, sender: bytes, batch: SignedBatch, now: float) -> bool:
        """Hold a batch by an author not accepted yet, from SENDER at NOW (monotonic seconds);
        False when the bounds are reached."""
        if batch.id in self._aside:
            return True
        size = len(batch.raw)
        count, held = self._aside_by_sender.get(sender, (0, 0))
        if (
            count >= ASIDE_PER_SENDER
            or held + size > ASIDE_BYTES_PER_SENDER
            or len(self._aside) >= ASIDE_BATCHES
            or self._aside_bytes + size > ASIDE_BYTES
        ):
            return False
        self._aside[batch.id] = (sender, batch, now)
        self._aside_by_author.setdefault(batch.author, []).append(batch.id)
        self._aside_by_sender[sender] = (count + 1, held + size)
        self._aside_bytes += size
        return True

    def drop_sender(self, sender: bytes) -> None:
        """SENDER's link ended: what it set aside goes (its next full state brings it again)."""
        for batch_id in [i for i, (s, _, _) in self._aside.items() if s == sender]:
            self._unset(batch_id)

    def expire(self, now: float) -> None:
        """Drop what was set aside more than `ASIDE_SECONDS` before NOW (oldest first)."""
        while self._aside:
            batch_id, (_, _, since) = next(iter(self._aside.items()))
            if now - since <= ASIDE_SECONDS:
                return
            self._unset(batch_id)

    def _unset(self, batch_id: bytes) -> tuple[bytes, SignedBatch]:
        sender, batch, _ = self._aside.pop(batch_id)
        ids = self._aside_by_author.get(batch.author, [])
        if batch_id in ids:
            ids.remove(batch_id)
            if not ids:
                del self._aside_by_author[batch.author]
        count, held = self._aside_by_sender[sender]
        if count == 1:
            del self._aside_by_sender[sender]
        else:
            self._aside_by_sender[sender] = (count - 1, held - len(batch.raw))
        self._aside_bytes -= len(batch.raw)
        return sender, batch

    def take_ready(self) -> list[tuple[bytes, SignedBatch]]:
        """Batches held aside whose authors are accepted now, with who sent each."""
        ready, self._ready = self._ready, []
        return ready

    def _accepted(self, author: bytes) -> None:
        for batch_id in list(self._aside_by_author.get(author, [])):
            self._ready.append(self._unset(batch_id))
