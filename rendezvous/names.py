"""When two player names look the same, and which names are msxsync's own words (issue 30, F8).

Names are only for display (keys identify members), but a player reads names, not keys: a second
"Bob", a "Bob" spelled with a Cyrillic o, or a member called `resync` whose chat reads like the
program's own "resync: asked the room again" would fool one. The rendezvous refuses such a join
(`name_taken`, `name_reserved` in PROTOCOL.md); the peer, which cannot trust a roster, shows such a
name with its key's fingerprint (`peer.core.room.view`). Both ask this module.

Two names look alike when their *skeletons* are equal, in the manner of Unicode's UTS #39: NFKC
(fullwidth and mathematical letters become plain ones), combining marks dropped ("Bób" is "Bob"),
Cyrillic and Greek letters that look Latin mapped to those letters, and the Latin look-alikes
I/l/1/| and O/0 folded together, with case kept ("AI" and "Al"); a second skeleton does the same
after casefolding ("BOB" and "bob"). A name is either skeleton's match.

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

# Words the program starts its own lines with (peer.core.room.session, peer.session, peer.app):
# a member may not be called by them, whatever the spelling.
RESERVED = ("msxsync", "resync", "openmsx", "refused", "you")

# What the peer never shows in a name (`peer.console.safe_name`): what Tcl reads in openMSX's
# messages, and the colon, which marks the program's own lines ("resync: ...") and chat ("says: ").
# Skeletons leave them out too, so "bob:" and "bob" look alike here as they do on screen.
UNSHOWN = frozenset('{}[]$\\":')

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

# Cyrillic and Greek letters that look like Latin ones (from UTS #39's confusables.txt, the
# letters of the Latin alphabet only), both cases; written as escapes, since in print the two
# sides of each pair are the same (that is the point). Cyrillic A B E DZE I JE KA EM EN O ER ES TE
# U HA QA WE; a ie dze i je o er es u ha komi-de shha qa we palochka; Greek ALPHA BETA EPSILON
# ZETA ETA IOTA KAPPA MU NU OMICRON RHO TAU UPSILON CHI; alpha iota omicron nu rho upsilon; Latin
# dotless i, alpha and script g.
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
                "\u0430\u0435\u0455\u0456\u0458\u043e\u0440\u0441\u0443\u0445\u0501\u04bb\u051b\u051d\u04cf",
                "aesijopcyxdhqwl",
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
        **dict(zip("\u03b1\u03b9\u03bf\u03bd\u03c1\u03c5", "aiovpu", strict=True)),
        **dict(zip("\u0131\u0251\u0261", "iag", strict=True)),
    }
)
# Look-alikes within Latin and digits, once the scripts are mapped.
_LATIN = str.maketrans({"I": "l", "1": "l", "|": "l", "0": "O"})
_LATIN_FOLDED = str.maketrans({"1": "l", "|": "l", "0": "o"})


def invisible(ch: str) -> bool:
    """Whether CH shows nothing (or changes how others show) though Python may call it printable."""
    point = ord(ch)
    return any(low <= point <= high for low, high in _INVISIBLE)


def visible(name: str) -> bool:
    """Printable and without any invisible character (a name fit to be told apart)."""
    return name.isprintable() and not any(invisible(ch) for ch in name)


def _plain(name: str) -> str:
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", name))
    kept = "".join(
        ch for ch in decomposed if not unicodedata.combining(ch) and not invisible(ch) and ch not in UNSHOWN
    )
    return " ".join(kept.split()).translate(_SCRIPTS)


def skeletons(name: str) -> tuple[str, str]:
    """NAME's two skeletons: with case kept, and casefolded (see the module's docstring)."""
    plain = _plain(name)
    cased = plain.translate(_LATIN).replace("rn", "m")
    folded = plain.casefold().translate(_SCRIPTS).translate(_LATIN_FOLDED).replace("rn", "m")
    return cased, folded


def alike(first: str, second: str) -> bool:
    """Whether a reader could take one name for the other."""
    a, b = skeletons(first), skeletons(second)
    return a[0] == b[0] or a[1] == b[1]


def _letters(name: str) -> str:
    return "".join(ch for ch in skeletons(name)[1] if ch.isalnum())


_RESERVED_LETTERS = frozenset(_letters(word) for word in RESERVED)


def reserved(name: str) -> bool:
    """Whether NAME looks like one of the program's own words (`RESERVED`), whatever surrounds its
    letters ("Resync:", "re-sync", or spelled with a Cyrillic e)."""
    return _letters(name) in _RESERVED_LETTERS


def refusal(name: str, others: list[str]) -> tuple[str, str] | None:
    """Why NAME may not join a room whose other members are called OTHERS: (code, sentence)."""
    if reserved(name):
        return "name_reserved", f"{name!r} reads like msxsync's own words; choose another name."
    if any(alike(name, other) for other in others):
        return (
            "name_taken",
            f"A member of this room is already called {name!r} or a look-alike; choose another name.",
        )
    return None
