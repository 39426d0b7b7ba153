"""When two player names look the same, and which names are msxsync's own words (issue 30, F8).

Names are only for display (keys identify members), but a player reads names, not keys: a second
"Bob", a "Bob" spelled with a Cyrillic o, or a member called `resync` whose chat reads like the
program's own "resync: asked the room again" would fool one. The rendezvous refuses such a join
(`name_taken`, `name_reserved` in PROTOCOL.md); the peer, which cannot trust a roster, shows such a
name with its key's fingerprint (`peer.core.room.view`). Both ask this module, about the name as
it is shown (`shown`: the first 24 characters, without what would read as a colon or hold a
fingerprint), so that the server compares what the players read.

Two names look alike when their *skeletons* are equal, in the manner of Unicode's UTS #39: NFKC
(fullwidth and mathematical letters become plain ones), every mark dropped ("Bób" is "Bob"),
letters of other scripts and Latin small capitals that look like Latin letters mapped to those
letters, and the Latin look-alikes I/l/1/| and O/0 (and rn/m, vv/w, cl/d) folded together, with
case kept ("AI" and "Al"); a second skeleton does the same after casefolding ("BOB" and "bob"). A
name is either skeleton's match. Letters no table lists can still imitate a Latin name when mixed
in with Latin ones; the peer marks such names too (`mixed`).

Why a table of our own rather than a library: UTS #39 skeletons in Python come with PyICU, which has
no wheels and builds against the system's ICU (a C++ toolchain on every player's machine, Windows
included); icu4py bundles ICU but exposes no spoof checker; confusable_homoglyphs answers another
question (is one string mixed-script) with no skeleton; decancer-py is native code with a mapping of
its own. The letters that matter for names read in a Latin-script terminal are the few dozen below.
The table errs toward calling names alike: the cost is one player picking another name.

Also what makes a name invisible in part: Default_Ignorable_Code_Point characters (zero-width,
bidi controls, fillers, variation selectors). Python's `isprintable` already refuses the format
characters among them (bidi overrides, zero-width spaces and joiners); the printable ones (Hangul
fillers, the combining grapheme joiner, variation selectors) it lets through, so they are listed.

Pure: imports only `unicodedata`; it must not import asyncio, aiohttp or anything else of ours.
"""

from __future__ import annotations

import unicodedata

# Words the program starts its own lines with (peer.core.room.session, peer.session, peer.app,
# peer.core.emulator.gating): a member may not be called by them, whatever the spelling, nor start
# a name with one ("resync asked the room"), "you" aside (only the whole name reads as ours).
RESERVED = ("msxsync", "resync", "resynced", "openmsx", "refused", "you")
_WHOLE_ONLY = ("you",)

# What no name is shown with (`shown`): the colon, which marks the program's own lines ("resync:
# ...") and chat ("says:"); the parentheses, which hold the key's fingerprint beside a marked name
# ("alice (02020202a1b2)"); brackets, braces, quotes, the backslash and $, with which a name could
# frame itself to read like another. Skeletons leave them out too, so "bob:" and "bob" look alike
# here as they do on screen. With them goes every character that reads as one of them: those whose
# NFKC form holds one (fullwidth, small and vertical forms, parenthesized letters) and the
# look-alikes NFKC keeps (modifier colons, ratio, sof pasuq, Armenian full stop, the vertical two
# dot leader, ornamental parentheses).
UNSHOWN = frozenset('{}[]$\\":()')
_UNSHOWN_ALIKE = frozenset(
    "\ua789\u02f8\u2236\u05c3\u0589\ufe30\u2768\u2769\u276a\u276b\u27ee\u27ef\ufd3e\ufd3f"
)
MAX_SHOWN = 24  # characters of a name shown, and compared (`skeletons`)

# Default_Ignorable_Code_Point (Unicode 15.1 DerivedCoreProperties.txt), and the braille blank.
_INVISIBLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

# Letters of other scripts that look like Latin ones (from UTS #39's confusables.txt, the letters
# of the Latin alphabet only), both cases; written as escapes, since in print the two sides of each
# pair are the same (that is the point). Cyrillic A B E DZE I JE KA EM EN O ER ES TE U HA QA WE;
# a ie dze i je o er es u ha komi-de shha qa we palochka ka ghe em en te ve soft-sign pe izhitsa
# straight-u; Greek ALPHA BETA EPSILON ZETA ETA IOTA KAPPA MU NU OMICRON RHO TAU UPSILON CHI; alpha
# iota omicron nu rho upsilon kappa eta chi gamma omega; Armenian oh seh co ho vo za keh OH SEH
# TIWN LIWN; Cherokee GO YV TLI A GV NAH MI GU TSO TLE LU NA TLV DU I DO LA NO E SV TA V; Latin
# dotless i, alpha, script g, the dental click, and the small capitals (mapped to capitals).
_SCRIPTS = str.maketrans(
    {
        **dict(
            zip(
                "\u0410\u0412\u0415\u0405\u0406\u0408\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423\u0425\u051a\u051c",
                "ABESIJKMHOPCTYXQW",
                strict=True,
            )
        ),
        **dict(
            zip(
                "\u0430\u0435\u0455\u0456\u0458\u043e\u0440\u0441\u0443\u0445\u0501\u04bb\u051b\u051d\u04cf"
                "\u043a\u0433\u043c\u043d\u0442\u0432\u044c\u043f\u0475\u04af",
                "aesijopcyxdhqwlkrmhtbbnvy",
                strict=True,
            )
        ),
        **dict(
            zip(
                "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7",
                "ABEZHIKMNOPTYX",
                strict=True,
            )
        ),
        **dict(
            zip(
                "\u03b1\u03b9\u03bf\u03bd\u03c1\u03c5\u03ba\u03b7\u03c7\u03b3\u03c9",
                "aiovpuknxyw",
                strict=True,
            )
        ),
        **dict(
            zip(
                "\u0585\u057d\u0581\u0570\u0578\u0566\u0584\u0555\u054d\u054f\u053c",
                "oughnqpOUSL",
                strict=True,
            )
        ),
        **dict(
            zip(
                "\u13aa\u13f4\u13df\u13a0\u13ac\u13c0\u13bb\u13ab\u13e6\u13de\u13b7\u13be\u13e2\u13da\u13a2"
                "\u13d9\u13b3\u13c3\u13a1\u13d2\u13d4\u13a5",
                "ABCDEGHJKLMOPSTVWZRRWi",
                strict=True,
            )
        ),
        **dict(zip("\u0131\u0251\u0261\u01c0", "iagl", strict=True)),
        **dict(
            zip(
                "\u1d00\u0299\u1d04\u1d05\u1d07\ua730\u0262\u029c\u026a\u1d0a\u1d0b\u029f\u1d0d\u0274"
                "\u1d0f\u1d18\u0280\ua731\u1d1b\u1d1c\u1d20\u1d21\u028f\u1d22",
                "ABCDEFGHIJKLMNOPRSTUVWYZ",
                strict=True,
            )
        ),
    }
)
# Look-alikes within Latin and digits, once the scripts are mapped; then pairs of letters that read
# as one ("rn" as "m", "vv" as "w", "cl" as "d").
_LATIN = str.maketrans({"I": "l", "1": "l", "|": "l", "0": "O"})
_LATIN_FOLDED = str.maketrans({"1": "l", "|": "l", "0": "o"})
_PAIRS = (("rn", "m"), ("vv", "w"), ("VV", "W"), ("cl", "d"))


def invisible(ch: str) -> bool:
    """Whether CH shows nothing (or changes how others show) though Python may call it printable."""
    point = ord(ch)
    return any(low <= point <= high for low, high in _INVISIBLE)


def visible(name: str) -> bool:
    """Printable and without any invisible character (a name fit to be told apart)."""
    return name.isprintable() and not any(invisible(ch) for ch in name)


def printable(text: str) -> str:
    """TEXT without what a terminal would act on or not show: escape sequences and other control
    characters, bidi controls, zero-width characters and fillers."""
    return "".join(ch for ch in text if ch.isprintable() and not invisible(ch))


def unshown(ch: str) -> bool:
    """Whether CH is or reads as one of `UNSHOWN`."""
    return ch in _UNSHOWN_ALIKE or any(part in UNSHOWN for part in unicodedata.normalize("NFKC", ch))


def shown(name: str) -> str:
    """NAME as every reader sees it, on the terminal and the emulator's screen: `printable`, with
    spaces for `unshown` characters, runs of spaces collapsed, the first MAX_SHOWN characters;
    "player" if nothing of it could be told apart (`blank`: the rendezvous refuses such names; an
    older one did not)."""
    kept = _kept(name)
    return kept if _plain(kept) else "player"


def _kept(name: str) -> str:
    return _spaced(printable(name))[:MAX_SHOWN]


def _spaced(text: str) -> str:
    """`unshown` characters become spaces (they part words: "msxsync:bob" is "msxsync bob"), and
    runs of spaces one."""
    return " ".join("".join(" " if unshown(ch) else ch for ch in text).split())


def blank(name: str) -> bool:
    """Whether nothing of NAME as shown could tell it apart (no skeleton is left: "{}", "$")."""
    return not _plain(_kept(name))


def _plain(name: str) -> str:
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", name))
    kept = "".join(
        ch for ch in decomposed if not unicodedata.category(ch).startswith("M") and not invisible(ch)
    )
    return _spaced(kept).translate(_SCRIPTS)


def _pairs(text: str) -> str:
    for pair, letter in _PAIRS:
        text = text.replace(pair, letter)
    return text


def skeletons(name: str) -> tuple[str, str]:
    """NAME's two skeletons, of the name as shown (`shown`): with case kept, and casefolded (see the
    module's docstring). Both are empty for a `blank` name."""
    plain = _plain(_kept(name))
    cased = _pairs(plain.translate(_LATIN))
    folded = _pairs(plain.casefold().translate(_SCRIPTS).casefold().translate(_LATIN_FOLDED))
    return cased, folded


def alike(first: str, second: str) -> bool:
    """Whether a reader could take one name for the other."""
    a, b = skeletons(first), skeletons(second)
    return a[0] == b[0] or a[1] == b[1]


def _script(ch: str) -> str:
    return unicodedata.name(ch, "").split(" ", 1)[0]


def mixed(name: str) -> bool:
    """Whether NAME as shown mixes Latin letters with letters of another script ("kate" with a Greek
    kappa, "bob" with an Armenian o): the way to imitate a Latin name with letters no table lists.
    Such a name may be honest ("Taro" and kanji), so the peer shows it with its fingerprint rather
    than the rendezvous refusing it."""
    scripts = {_script(ch) for ch in unicodedata.normalize("NFKC", shown(name)) if ch.isalpha()}
    return "LATIN" in scripts and len(scripts) > 1


def _letters(name: str) -> str:
    return "".join(ch for ch in name if ch.isalnum())


_RESERVED_LETTERS = frozenset(_letters(skeletons(word)[1]) for word in RESERVED)
_LEADING_LETTERS = frozenset(_letters(skeletons(word)[1]) for word in RESERVED if word not in _WHOLE_ONLY)


def reserved(name: str) -> bool:
    """Whether NAME looks like one of the program's own words (`RESERVED`), whatever surrounds its
    letters ("Resync:", "re-sync", or spelled with a Cyrillic e), or starts with one ("resync asked
    the room", "msxsync bob")."""
    folded = skeletons(name)[1]
    words = folded.split()
    return _letters(folded) in _RESERVED_LETTERS or (bool(words) and _letters(words[0]) in _LEADING_LETTERS)


def refusal(name: str, others: list[str]) -> tuple[str, str] | None:
    """Why NAME may not join a room whose other members are called OTHERS: (code, sentence)."""
    # (The sentences name only the joiner's own name: a member's is not told to a joiner, and
    # msxsync adds its own advice, "choose another name with --name".)
    if reserved(name):
        return "name_reserved", f"Your name {name!r} reads like msxsync's own words."
    if any(alike(name, other) for other in others):
        return "name_taken", f"Your name {name!r} looks like the name of a member of this room."
    return None


_LRM = "\u200e"  # LEFT-TO-RIGHT MARK


def isolated(name: str) -> str:
    """A shown NAME ready to stand in a line of ours: a name with right-to-left letters (Hebrew,
    Arabic) between two left-to-right marks, so that a terminal that lays out bidi text neither
    turns the whole line right-to-left nor moves the fingerprint after it ("(1a2b3c4d5e6f)") to
    its other side. Other names are left as they are. (Marks, not FSI/PDI isolates: terminals and
    fonts that know no bidi at all show a mark as nothing, and openMSX's screen as a space.)"""
    if any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in name):
        return f"{_LRM}{name}{_LRM}"
    return name


def fingerprint(key: bytes) -> str:
    """A key's short fingerprint, as a name is shown beside it: its first 12 hex digits (48 bits;
    8 digits could be matched by a key made for it in an afternoon)."""
    return key.hex()[:12]
