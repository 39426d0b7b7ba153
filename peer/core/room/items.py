"""Item news: turns changes of a definition's named bytes into sentences a player understands.

"player2 found the key", "player1 lost the shield", "player2: coins 12". The session feeds it
every value of a named byte it learns (`seen`: its own game's writes and adoptions, silently) and
the remote writes that changed the room's bytes (`remote`, which returns the sentences). The
first value seen of a byte is never news: joining a room says "you got the room's items", not
one line per item.

Pure: no I/O, no clock; `who` names the player who wrote an address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from games.named import NamedCounter, NamedItem
from peer.core.sync.state import Run, SharedState, byte_values


def sentences(
    items: Iterable[NamedItem],
    counters: Iterable[NamedCounter],
    before: Mapping[int, int],
    after: Mapping[int, int],
    who: Callable[[int], str],
) -> list[str]:
    """What changed between BEFORE and AFTER (address -> byte), in the definition's order.

    A byte missing from BEFORE was never seen: its change is no news. Bytes missing from AFTER
    did not change."""
    news = []
    for item in items:
        old, new = before.get(item.address), after.get(item.address)
        if old is None or new is None or item.held(old) == item.held(new):
            continue
        verb = "found" if item.held(new) else "lost"
        news.append(f"{who(item.address)} {verb} the {item.name}")
    for counter in counters:
        changed = [a for a in counter.addresses if a in after and after[a] != before.get(a)]
        if not changed or any(a not in before for a in counter.addresses):
            continue
        data = bytes(after.get(a, before[a]) for a in counter.addresses)
        news.append(f"{who(changed[0])}: {counter.name} {counter.value(data)}")
    return news


def counter_runs(state: SharedState, firsts: Iterable[int] | None = None) -> list[Run]:
    """The bytes the counters (`add` regions) starting at FIRSTS (default: all) hold now: they
    change by deltas, never in a run of changed bytes, so item news asks for them."""
    counters = state.layout.counters
    wanted = counters if firsts is None else firsts
    return [(first, state.read(first, counters[first].width)) for first in wanted]


def writer_of(state: SharedState, address: int) -> bytes:
    """The key of the player whose write the byte at ADDRESS holds."""
    return state.writers[state.layout.index(address)]


class ItemNews:
    """The last value of every named byte, and the news when another player changes one."""

    def __init__(self, items: Iterable[NamedItem], counters: Iterable[NamedCounter]) -> None:
        self.items = tuple(items)
        self.counters = tuple(counters)
        self.addresses = frozenset(
            [item.address for item in self.items] + [a for c in self.counters for a in c.addresses]
        )
        self.values: dict[int, int] = {}

    def seen(self, runs: Iterable[Run]) -> None:
        """Values this player's own game holds now (its writes, an adoption): never news."""
        self.values.update(self._named(runs))

    def seen_in(self, state: SharedState) -> None:
        """The named bytes as the room's state holds them now (on joining): never news."""
        self.seen((address, state.read(address)) for address in sorted(self.addresses))

    def remote(self, runs: Iterable[Run], who: Callable[[int], str], *, sharing: bool = True) -> list[str]:
        """Another player's writes changed these bytes: the sentences to show everyone here.
        Before our game shares (`sharing`), what arrives is the room's state: never news."""
        if not sharing:
            self.seen(runs)
            return []
        after = self._named(runs)
        if not after:
            return []
        news = sentences(self.items, self.counters, self.values, after, who)
        self.values.update(after)
        return news

    def _named(self, runs: Iterable[Run]) -> dict[int, int]:
        return {a: v for a, v in byte_values(runs).items() if a in self.addresses}
