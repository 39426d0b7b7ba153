"""Game definitions: the `.regions` format, parsed into frozen values.

This module owns the meaning of a game definition file. It is pure: it parses text handed to it
and never opens files (see `games.catalogue` for that), so the rendezvous and the peer share it.

The format is the original openmsx-sync one, unchanged:

    galious.rom                 <- first line: ROM file name, relative to the games folder
    # a comment                 <- empty lines and lines starting with '#' are ignored
    e075 e099 items             <- hex start, hex inclusive end, anything after is a comment

msxsync extends it with *directive lines* that start with ``#!``. An old reader sees a comment and
skips them; a ``#!`` line that is not shaped like a directive (``#!important: ...``) is still just a
comment here, so old files parse exactly as before:

    #! title The Maze of Galious
    #! machine C-BIOS_MSX1
    #! romtype KonamiSCC                   (optional openMSX -romtype)
    #! sha1 4d51d3c5036311392b173a576bc7d91dc9fed6cb GoodMSX dump (remark after the hash)
    #! armed-when e000 == 01 and e001 & 80 != 00
    #! merge add le16 bcd                  (rule for the region lines that follow)
    #! item e010 key                       (what a shared byte means: see `games.named`)
    #! counter e018 bcd coins

`armed-when` holds when every clause holds; a clause is ``ADDR [& MASK] OP VALUE`` with OP one of
``== != < <= > >=``, all numbers hex. `merge` names the rule for the regions after it until the
next `merge`: ``lww`` (last writer wins, the default), ``max``, ``min``, ``bit-or``, ``bit-and``
(per byte), or ``add`` with options ``le16``/``le32`` (one counter per 2 or 4 bytes, low byte
first; a region's length must be a multiple) and ``bcd`` (two decimal digits per byte). What each
rule does is `peer.core.sync.merge`'s business; an unknown name or option is refused with a clear error
so that a file never means something this version cannot do.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from games.named import NamedCounter, NamedItem, NamingError, parse_counter, parse_item

MAX_ADDRESS = 0xFFFF
DIRECTIVE_PREFIX = "#!"
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # matched whole: fullmatch
_DIRECTIVE_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class DefinitionError(ValueError):
    """A definition file is wrong; the message names the file and the line."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


class MergeRule(Enum):
    """How concurrent writes to one shared byte (or counter) are merged (see `peer.core.sync.merge`)."""

    LWW = "lww"
    MAX = "max"
    MIN = "min"
    BIT_OR = "bit-or"
    BIT_AND = "bit-and"
    ADD = "add"


_WIDTHS = {"le16": 2, "le32": 4}


@dataclass(frozen=True, slots=True)
class Merge:
    """A region's merge rule with its options: `width` bytes per counter, `bcd` digits (add only)."""

    rule: MergeRule = MergeRule.LWW
    width: int = 1
    bcd: bool = False

    def __post_init__(self) -> None:
        if self.width not in (1, 2, 4):
            raise ValueError(f"a counter is 1, 2 or 4 bytes wide, not {self.width}")
        if (self.width != 1 or self.bcd) and self.rule is not MergeRule.ADD:
            raise ValueError(f"'{self.rule.value}' takes no options (widths and bcd are for 'add')")

    def __str__(self) -> str:
        words = [self.rule.value]
        words += [name for name, width in _WIDTHS.items() if width == self.width]
        return " ".join([*words, "bcd"] if self.bcd else words)

    @classmethod
    def parse(cls, text: str) -> Merge:
        """`add le16 bcd` and the like; raises ValueError naming what is wrong."""
        name, *options = text.split() or [""]
        try:
            rule = MergeRule(name)
        except ValueError:
            known = ", ".join(rule.value for rule in MergeRule)
            raise ValueError(f"unknown merge rule {name!r} (known: {known})") from None
        width, bcd = 1, False
        for option in options:
            if option in _WIDTHS and width == 1:
                width = _WIDTHS[option]
            elif option == "bcd" and not bcd:
                bcd = True
            else:
                raise ValueError(f"unknown or repeated merge option {option!r} (add takes le16|le32, bcd)")
        return cls(rule, width, bcd)


LWW = Merge()


@dataclass(frozen=True, slots=True)
class Region:
    """An inclusive range of CPU addresses shared between players."""

    start: int
    end: int
    merge: Merge = LWW
    comment: str = ""

    def __post_init__(self) -> None:
        if not (0 <= self.start <= MAX_ADDRESS and 0 <= self.end <= MAX_ADDRESS):
            raise ValueError(f"region {self.start:#06x}-{self.end:#06x} is outside 0000-ffff")
        if self.end < self.start:
            raise ValueError(f"region {self.start:04x}-{self.end:04x} is reversed")
        if self.size % self.merge.width:
            raise ValueError(
                f"region {self.start:04x}-{self.end:04x} ({self.size} bytes) is not a whole number "
                f"of {self.merge.width}-byte counters"
            )

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def contains(self, address: int) -> bool:
        return self.start <= address <= self.end


class Comparison(Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    def holds(self, left: int, right: int) -> bool:
        match self:
            case Comparison.EQ:
                return left == right
            case Comparison.NE:
                return left != right
            case Comparison.LT:
                return left < right
            case Comparison.LE:
                return left <= right
            case Comparison.GT:
                return left > right
            case Comparison.GE:
                return left >= right


@dataclass(frozen=True, slots=True)
class ArmedClause:
    """One test on one RAM byte: ``(byte & mask) OP value``."""

    address: int
    comparison: Comparison
    value: int
    mask: int = 0xFF

    def __post_init__(self) -> None:
        if not 0 <= self.address <= MAX_ADDRESS:
            raise ValueError(f"address {self.address:#x} is outside 0000-ffff")
        if not (0 <= self.value <= 0xFF and 0 <= self.mask <= 0xFF):
            raise ValueError("value and mask must be bytes (00-ff)")

    def holds(self, byte: int) -> bool:
        return self.comparison.holds(byte & self.mask, self.value)

    def __str__(self) -> str:
        mask = f" & {self.mask:02x}" if self.mask != 0xFF else ""
        return f"{self.address:04x}{mask} {self.comparison.value} {self.value:02x}"


@dataclass(frozen=True, slots=True)
class ArmedWhen:
    """All clauses must hold for a peer to publish (e.g. "a game is in progress")."""

    clauses: tuple[ArmedClause, ...]

    @property
    def addresses(self) -> tuple[int, ...]:
        return tuple(sorted({clause.address for clause in self.clauses}))

    def holds(self, memory: dict[int, int]) -> bool:
        """`memory` maps each address in `addresses` to its current byte."""
        return all(clause.holds(memory[clause.address]) for clause in self.clauses)

    def __str__(self) -> str:
        return " and ".join(str(clause) for clause in self.clauses)


@dataclass(frozen=True, slots=True)
class KnownRom:
    sha1: str
    remark: str = ""


@dataclass(frozen=True, slots=True)
class GameDefinition:
    """Everything msxsync knows about one game; `name` is the file name without `.regions`."""

    name: str
    rom_file: str
    regions: tuple[Region, ...]
    title: str = ""
    machine: str | None = None
    romtype: str | None = None
    known_roms: tuple[KnownRom, ...] = ()
    armed_when: ArmedWhen | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())
    items: tuple[NamedItem, ...] = ()
    counters: tuple[NamedCounter, ...] = ()

    def __post_init__(self) -> None:
        check_no_overlap(self.regions)
        claimed: set[tuple[int, int | None]] = set()
        named: list[NamedItem | NamedCounter] = [*self.items, *self.counters]
        for each in named:
            check_named(self.regions, each, claimed)

    @property
    def shared_size(self) -> int:
        return sum(region.size for region in self.regions)

    def is_shared(self, address: int) -> bool:
        return any(region.contains(address) for region in self.regions)

    def accepts_sha1(self, sha1: str) -> bool:
        return any(rom.sha1 == sha1.lower() for rom in self.known_roms)

    def to_json(self) -> dict[str, object]:
        """The definition as plain JSON-ready data (served by the rendezvous)."""
        return {
            "name": self.name,
            "title": self.title or self.name,
            "rom_file": self.rom_file,
            "machine": self.machine,
            "romtype": self.romtype,
            "regions": [
                {"start": r.start, "end": r.end, "merge": str(r.merge), "comment": r.comment}
                for r in self.regions
            ],
            "armed_when": str(self.armed_when) if self.armed_when else None,
            "known_roms": [{"sha1": rom.sha1, "remark": rom.remark} for rom in self.known_roms],
            "items": [{"at": item.spec(), "name": item.name} for item in self.items],
            "counters": [{"at": counter.spec(), "name": counter.name} for counter in self.counters],
        }


def check_no_overlap(regions: Sequence[Region]) -> None:
    ordered = sorted(regions, key=lambda region: region.start)
    for before, after in itertools.pairwise(ordered):
        if after.start <= before.end:
            raise ValueError(
                f"regions {before.start:04x}-{before.end:04x} and {after.start:04x}-{after.end:04x} overlap"
            )


def check_named(
    regions: Sequence[Region], named: NamedItem | NamedCounter, claimed: set[tuple[int, int | None]]
) -> None:
    """NAMED lies inside one shared region and names nothing named before (CLAIMED, updated):
    a whole byte conflicts with any of its bits, a bit with the whole byte or the same bit."""
    if isinstance(named, NamedItem):
        span, bits = (named.address, named.address), [named.bit]
    else:
        span, bits = (named.start, named.end), [None]
    if not any(region.start <= span[0] and span[1] <= region.end for region in regions):
        raise NamingError(f"{named.spec().split()[0]} ({named.name}) is not inside one shared region")
    for address in range(span[0], span[1] + 1):
        for bit in bits:
            taken = (address, None) in claimed or (bit is None and any(a == address for a, _ in claimed))
            if taken or (address, bit) in claimed:
                raise NamingError(f"{address:04x} is named twice ({named.name})")
            claimed.add((address, bit))


def is_valid_game_name(name: str) -> bool:
    """Game names travel in URLs and protocol messages: keep them to a safe alphabet."""
    return _NAME_RE.fullmatch(name) is not None and ".." not in name


def parse_definition(text: str, name: str, source: str | None = None) -> GameDefinition:
    """Parse the text of `NAME.regions`; `source` (default the file name) labels errors."""
    return _Parser(source or f"{name}.regions").parse(text, name)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.merge = LWW
        self.regions: list[tuple[int, Region]] = []
        self.fields: dict[str, str] = {}
        self.known_roms: list[KnownRom] = []
        self.armed_when: ArmedWhen | None = None
        self.extra: list[tuple[str, str]] = []
        self.named: list[tuple[int, NamedItem | NamedCounter]] = []

    def error(self, line: int, reason: str) -> DefinitionError:
        return DefinitionError(self.source, line, reason)

    def parse(self, text: str, name: str) -> GameDefinition:
        lines = text.removeprefix("\ufeff").splitlines()  # editors on Windows add a BOM
        rom_file = self.rom_line(lines)
        for number, raw in enumerate(lines[1:], start=2):
            self.parse_line(number, raw.strip())
        if not self.regions:
            raise self.error(len(lines), "no regions defined")
        self.check_overlaps()
        self.check_named()
        return GameDefinition(
            name=name,
            rom_file=rom_file,
            regions=tuple(sorted((region for _, region in self.regions), key=lambda r: r.start)),
            title=self.fields.get("title", ""),
            machine=self.fields.get("machine"),
            romtype=self.fields.get("romtype"),
            known_roms=tuple(self.known_roms),
            armed_when=self.armed_when,
            extra=tuple(self.extra),
            items=tuple(named for _, named in self.named if isinstance(named, NamedItem)),
            counters=tuple(named for _, named in self.named if isinstance(named, NamedCounter)),
        )

    def rom_line(self, lines: Sequence[str]) -> str:
        if not lines or not lines[0].strip():
            raise self.error(1, "the first line must name the ROM file")
        rom_file = lines[0].strip()
        if rom_file.startswith("#"):
            raise self.error(1, "the first line must name the ROM file, not be a comment")
        if "/" in rom_file or "\\" in rom_file or rom_file.startswith(".") or len(rom_file) > 128:
            raise self.error(1, f"ROM file name {rom_file!r} must be a plain file name")
        return rom_file

    def parse_line(self, number: int, line: str) -> None:
        if line.startswith(DIRECTIVE_PREFIX):
            self.directive(number, line[len(DIRECTIVE_PREFIX) :].strip())
        elif line and not line.startswith("#"):
            self.region(number, line)

    def region(self, number: int, line: str) -> None:
        words = line.split(maxsplit=2)
        if len(words) < 2:
            raise self.error(number, f"a region needs a hex start and end, got {line!r}")
        start = self.hex_word(number, words[0], "start")
        end = self.hex_word(number, words[1], "end")
        comment = words[2] if len(words) > 2 else ""
        try:
            self.regions.append((number, Region(start, end, self.merge, comment)))
        except ValueError as exc:
            raise self.error(number, str(exc)) from None

    def hex_word(self, number: int, word: str, what: str, limit: int = MAX_ADDRESS) -> int:
        text = word[2:] if word.lower().startswith("0x") else word
        if not text or any(ch not in "0123456789abcdefABCDEF" for ch in text):
            raise self.error(number, f"{what} {word!r} is not a hex number")
        value = int(text, 16)
        if value > limit:
            raise self.error(number, f"{what} {word!r} is above {limit:x}")
        return value

    def check_overlaps(self) -> None:
        ordered = sorted(self.regions, key=lambda item: item[1].start)
        for (first_line, before), (second_line, after) in itertools.pairwise(ordered):
            if after.start <= before.end:
                raise self.error(
                    max(first_line, second_line),
                    f"region {after.start:04x}-{after.end:04x} overlaps {before.start:04x}-{before.end:04x}",
                )

    def check_named(self) -> None:
        regions = [region for _, region in self.regions]
        claimed: set[tuple[int, int | None]] = set()
        for number, named in self.named:
            try:
                check_named(regions, named, claimed)
            except NamingError as exc:
                raise self.error(number, str(exc)) from None

    def name(self, number: int, key: str, value: str) -> None:
        try:
            self.named.append((number, parse_item(value) if key == "item" else parse_counter(value)))
        except NamingError as exc:
            raise self.error(number, str(exc)) from None

    def directive(self, number: int, body: str) -> None:
        key, *rest = body.split(maxsplit=1) or [""]
        value = rest[0].strip() if rest else ""
        match key:
            case "title" | "machine" | "romtype":
                self.single_field(number, key, value)
            case "sha1":
                self.sha1(number, value)
            case "armed-when":
                self.armed(number, value)
            case "merge":
                self.merge_rule(number, value)
            case "item" | "counter":
                self.name(number, key, value)
            case "msxsync":
                if value != "1":
                    raise self.error(number, f"format version {value!r} is newer than this msxsync")
            case _ if not _DIRECTIVE_RE.match(key):
                # Not shaped like a directive: an old file's comment that happens to start "#!".
                return
            case _:
                # Unknown directives are kept, not refused: a newer file stays loadable here.
                self.extra.append((key, value))

    def single_field(self, number: int, key: str, value: str) -> None:
        if not value:
            raise self.error(number, f"'{key}' needs a value")
        if key in self.fields:
            raise self.error(number, f"'{key}' is given twice")
        if key != "title" and not _NAME_RE.fullmatch(value.replace(" ", "_")):
            raise self.error(number, f"{key} {value!r} has unexpected characters")
        self.fields[key] = value

    def sha1(self, number: int, value: str) -> None:
        digest, *remark_words = value.split(maxsplit=1) or [""]
        remark = remark_words[0] if remark_words else ""
        digest = digest.lower()
        if not _SHA1_RE.match(digest):
            raise self.error(number, f"{digest!r} is not a SHA-1 (40 hex digits)")
        self.known_roms.append(KnownRom(digest, remark.strip()))

    def merge_rule(self, number: int, value: str) -> None:
        try:
            self.merge = Merge.parse(value)
        except ValueError as exc:
            raise self.error(number, str(exc)) from None

    def armed(self, number: int, value: str) -> None:
        if self.armed_when is not None:
            raise self.error(number, "'armed-when' is given twice (join clauses with 'and')")
        clauses = [self.clause(number, part.split()) for part in value.split(" and ")]
        self.armed_when = ArmedWhen(tuple(clauses))

    def clause(self, number: int, words: list[str]) -> ArmedClause:
        mask = 0xFF
        if len(words) == 5 and words[1] == "&":
            mask = self.hex_word(number, words[2], "mask", 0xFF)
            words = [words[0], *words[3:]]
        if len(words) != 3:
            raise self.error(number, "armed-when clause must be 'ADDR [& MASK] OP VALUE'")
        try:
            comparison = Comparison(words[1])
        except ValueError:
            raise self.error(number, f"unknown comparison {words[1]!r}") from None
        address = self.hex_word(number, words[0], "address")
        return ArmedClause(address, comparison, self.hex_word(number, words[2], "value", 0xFF), mask)


def definition_from_json(data: object, name: str, source: str = "rendezvous") -> GameDefinition:
    """Rebuild a definition received as JSON (`GameDefinition.to_json`), validated like a file.

    The JSON is turned back into `.regions` text and parsed, so remote data passes exactly the
    checks a local file does; any field that could smuggle in an extra line is refused first.
    """
    if not isinstance(data, dict):
        raise DefinitionError(source, 0, "a definition must be a JSON object")
    try:
        lines = [_json_field(data, "rom_file", str)]
        for key in ("title", "machine", "romtype"):
            if data.get(key):
                lines.append(f"#! {key} {_json_field(data, key, str)}")
        for rom in _json_field(data, "known_roms", list):
            remark = _one_line(str(rom.get("remark", "")))
            lines.append(f"#! sha1 {_one_line(str(rom['sha1']))} {remark}".rstrip())
        if data.get("armed_when"):
            lines.append(f"#! armed-when {_json_field(data, 'armed_when', str)}")
        for region in _json_field(data, "regions", list):
            lines.append(f"#! merge {_one_line(str(region.get('merge', 'lww')))}")
            start, end = region["start"], region["end"]
            if not (isinstance(start, int) and isinstance(end, int)):
                raise ValueError("region bounds must be integers")
            lines.append(f"{start:x} {end:x} {_one_line(str(region.get('comment', '')))}".rstrip())
        for key, plural in (("item", "items"), ("counter", "counters")):
            for named in data.get(plural) or []:  # absent from an older rendezvous: no names
                lines.append(f"#! {key} {_one_line(str(named['at']))} {_one_line(str(named['name']))}")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise DefinitionError(source, 0, f"malformed definition: {exc}") from None
    return parse_definition("\n".join(lines) + "\n", name, source)


def _json_field(data: dict[str, object], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key!r} must be a {kind.__name__}")
    return _one_line(value) if isinstance(value, str) else value


def _one_line(text: str) -> str:
    # Every line break `str.splitlines` knows (the parser splits on those), not only \r and \n.
    if len(text.splitlines()) > 1 or "\x00" in text or text.endswith(("\r", "\n")) or len(text) > 200:
        raise ValueError("text fields must be one short line")
    return text
