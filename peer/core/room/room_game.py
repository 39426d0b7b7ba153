"""One ROM per room: what a player's game runs on, and whether two players may share RAM.

Sharing RAM only makes sense between copies of one program on one kind of machine: another dump,
a patch or another machine keeps other things at the same addresses. So every peer's hello on the
mesh (the binding's `Nonce`) carries its `Platform`: the SHA-1 of its ROM, the openMSX machine it
runs when the game's definition names one (empty when it does not: then any machine will do), and
whether the player passed `--force-rom`.

The room's platform is its first member's (the rendezvous's `host`, who started the room, and whose
ROM is the one the rendezvous served when they took it from there). `judge` decides, for one pair
of peers, before anything is shared:
- the same platform: admit;
- different, and the one who differs from the room forced it: admit, and the players are told once
  "player2 plays a different ROM";
- different otherwise: refuse the pair. When this peer is the one who differs from the room (the
  other one is the room's first member), its verdict is `Refuse(fatal=True)` and the session ends
  with one sentence naming the room's game and the hash found. Between two players neither of
  whom started the room, a refusal is not fatal: the one who differs from the room is refused by
  the first member too, and that refusal ends its session.

The first member's word is not the last one (issue 30, F6): a room's opener (or a member who
became host) could claim a ROM nobody has, and every real player was refused and ended. So a
guard knows the game's `known` dumps (the definition's listed SHA-1s, and the ROM the rendezvous
served us): a first member whose unforced ROM is none of them, met by a player whose ROM is one,
does not decide; the pair is refused without ending that player's session.

Pure: no I/O. Imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SHA1_SIZE = 20
MAX_MACHINE_CHARS = 64


@dataclass(frozen=True, slots=True)
class Platform:
    """What a player's game runs: its ROM's SHA-1, its machine ("" if any), and --force-rom."""

    rom: bytes
    machine: str = ""
    forced: bool = False

    def __post_init__(self) -> None:
        if len(self.rom) != SHA1_SIZE:
            raise ValueError(f"a ROM's SHA-1 is {SHA1_SIZE} bytes")
        if len(self.machine) > MAX_MACHINE_CHARS or not self.machine.isprintable():
            raise ValueError("a machine name is at most 64 printable characters")

    def differs_in(self, other: Platform) -> str | None:
        """What differs from OTHER, in a player's words ("ROM", "machine"), or None."""
        if self.rom != other.rom:
            return "ROM"
        if self.machine != other.machine:
            return "machine"
        return None


@dataclass(frozen=True, slots=True)
class GameCheck:
    """What the mesh needs for the hello: our platform, and the check of a peer's (see
    `peer.core.mesh.binding.Binding`'s `platform_check`)."""

    platform: Platform
    check: Callable[[bytes, Platform | None], str | None]


@dataclass(frozen=True, slots=True)
class Admit:
    """Share with the peer. When the two play different ROMs (or machines, `what`) because one of
    them forced it, `they_differ` or `i_differ` says who: the players are told once."""

    they_differ: bool = False
    i_differ: bool = False
    what: str = "ROM"


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not share with the peer. `fatal`: this peer is the one who differs from the room."""

    detail: str
    fatal: bool = False


Verdict = Admit | Refuse


def judge(
    mine: Platform,
    theirs: Platform,
    *,
    i_started: bool,
    they_started: bool,
    known: frozenset[bytes] = frozenset(),
) -> Verdict:
    """Whether this peer (MINE) may share with a peer whose hello said THEIRS; `i_started` and
    `they_started` say which of the two is the room's first member (at most one); `known`: the
    game's known dumps (empty: nothing to check the room's word against)."""
    what = mine.differs_in(theirs)
    if what is None:
        return Admit()
    if not they_started and theirs.forced:  # (between two joiners the first member judges each)
        return Admit(they_differ=True, what=what)
    if not i_started and mine.forced:
        return Admit(i_differ=True, what=what)
    detail = f"plays a different {what} ({describe(theirs)}; this one {describe(mine)})"
    unfounded = they_started and mine.rom in known and theirs.rom not in known
    return Refuse(detail, fatal=they_started and not unfounded)


def describe(platform: Platform) -> str:
    """ "ROM SHA-1 4d51d3c5…, machine C-BIOS_MSX1" (the machine only when the game names one)."""
    machine = f", machine {platform.machine}" if platform.machine else ""
    return f"ROM SHA-1 {platform.rom.hex()}{machine}"


def refusal_sentence(game: str, room: Platform, mine: Platform) -> str:
    """What a player refused by the room reads: the room's game, and the hash found."""
    what = mine.differs_in(room) or "ROM"
    return (
        f"this room plays {game} with {describe(room)}, but your game has {describe(mine)}; "
        f"use the room's {what}, or pass --force-rom to play a translation or patch with them anyway."
    )


class GameGuard:
    """This player's side of one ROM per room, over a whole session: judges each peer's hello,
    remembers which admitted players differ (each told once, when admitted), and the sentence the
    session ends with when the room refused our game (`refusal`)."""

    def __init__(self, mine: Platform, game: str, me: bytes, known: frozenset[bytes] = frozenset()) -> None:
        self.mine = mine
        self.game = game  # the game's title, for the refusal sentence
        self.me = me
        self.known = known  # the game's known dumps (see the module docstring)
        self.refusal: str | None = None
        self._different: dict[bytes, str] = {}  # admitted players of another ROM or machine
        self._told: set[bytes] = set()

    def check(
        self,
        peer: bytes,
        theirs: Platform | None,
        *,
        first_member: bytes | None,
        name: Callable[[bytes], str],
    ) -> str | None:
        """Judge a peer's hello (`first_member`: who started the room, whose game is the room's):
        None admits, else the detail of the refusal. After a fatal refusal `refusal` holds the
        sentence to end with."""
        if theirs is None:
            return "named no game in its hello"
        i_started, they_started = first_member == self.me, first_member == peer
        match judge(self.mine, theirs, i_started=i_started, they_started=they_started, known=self.known):
            case Refuse(detail, fatal=True):
                self.refusal = refusal_sentence(self.game, theirs, self.mine)
                return detail
            case Refuse(detail):
                return detail
            case Admit(they_differ=True, what=what):
                self._different[peer] = f"{name(peer)} plays a different {what}"
            case Admit(i_differ=True, what=what):
                self._different[self.me] = f"{name(self.me)} (you) plays a different {what}"
        return None

    def differences_to_tell(self, peer: bytes) -> list[str]:
        """What to tell now that PEER is admitted: who of the two plays a different game, once each."""
        news = []
        for who in (peer, self.me):
            if who in self._different and who not in self._told:
                self._told.add(who)
                news.append(self._different[who])
        return news
