"""Named bytes: what a shared byte means to a player ("the key", "coins"), parsed from directives.

A definition may name its shared bytes so that players read "player2 found the key" rather than
"e010 changed". Two directives, both skipped by old readers (they are `#!` lines):

    #! item e010 key                 a byte that is held while it is not 00
    #! item e063.7 silver key        one bit of a byte: held while that bit (0-7) is set
    #! counter e018 bcd coins        a number: `bcd` or `binary`, 1-4 bytes, low byte first
    #! counter e046-e047 bcd arrows  (a range for a number of several bytes)

The name is the rest of the line (words allowed, printable, at most 32 characters). Every named
byte must be shared (inside one region), and no byte or bit may be named twice; the definition
parser checks that once all lines are read, and reports the naming line.

Pure: parses text handed to it; `NamingError` carries the reason, the parser adds the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_NAME = 32
MAX_COUNTER_BYTES = 4
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 '&.,+/()-]*$")
_ADDRESS_RE = re.compile(r"^(?:0x)?([0-9a-fA-F]{1,4})(?:\.([0-7]))?$")
_SPAN_RE = re.compile(r"^(?:0x)?([0-9a-fA-F]{1,4})(?:-(?:0x)?([0-9a-fA-F]{1,4}))?$")
ENCODINGS = ("bcd", "binary")


class NamingError(ValueError):
    """An `item` or `counter` directive is malformed (the parser adds the line number)."""


@dataclass(frozen=True, slots=True)
class NamedItem:
    """Something a player holds: the whole byte (held while not 00), or one bit of it."""

    address: int
    name: str
    bit: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF:
            raise NamingError(f"address {self.address:#x} is outside 0000-ffff")
        if self.bit is not None and not 0 <= self.bit <= 7:
            raise NamingError(f"bit {self.bit} is not 0-7")
        _check_name(self.name)

    def held(self, value: int) -> bool:
        return bool(value) if self.bit is None else bool(value >> self.bit & 1)

    def spec(self) -> str:
        """As written in a directive (`e010`, `e063.7`)."""
        return f"{self.address:04x}" + (f".{self.bit}" if self.bit is not None else "")


@dataclass(frozen=True, slots=True)
class NamedCounter:
    """A number of 1-4 bytes at START..END (low byte first), BCD or binary."""

    start: int
    end: int
    name: str
    bcd: bool

    def __post_init__(self) -> None:
        if not (0 <= self.start <= self.end <= 0xFFFF):
            raise NamingError(f"counter {self.start:04x}-{self.end:04x} is not a range in 0000-ffff")
        if self.end - self.start + 1 > MAX_COUNTER_BYTES:
            raise NamingError(f"a counter has at most {MAX_COUNTER_BYTES} bytes")
        _check_name(self.name)

    @property
    def addresses(self) -> range:
        return range(self.start, self.end + 1)

    def value(self, data: bytes) -> str:
        """The number DATA (this counter's bytes, low first) holds, as a player reads it."""
        number = int.from_bytes(data, "little")
        if not self.bcd:
            return str(number)
        digits = f"{number:0{2 * len(data)}x}"
        return str(int(digits)) if digits.isdigit() else digits  # a non-BCD nibble: shown as is

    def spec(self) -> str:
        span = f"{self.start:04x}" + (f"-{self.end:04x}" if self.end != self.start else "")
        return f"{span} {'bcd' if self.bcd else 'binary'}"


def parse_item(value: str) -> NamedItem:
    """The text after `#! item`: ADDR[.BIT] NAME."""
    where, name = _split(value, "item", "ADDR[.BIT] NAME")
    match = _ADDRESS_RE.match(where)
    if match is None:
        raise NamingError(f"{where!r} is not a hex address, or ADDR.BIT with a bit 0-7")
    bit = int(match.group(2)) if match.group(2) is not None else None
    return NamedItem(int(match.group(1), 16), name, bit)


def parse_counter(value: str) -> NamedCounter:
    """The text after `#! counter`: ADDR[-END] bcd|binary NAME."""
    where, rest = _split(value, "counter", "ADDR[-END] bcd|binary NAME")
    encoding, name = _split(rest, "counter", "ADDR[-END] bcd|binary NAME")
    match = _SPAN_RE.match(where)
    if match is None:
        raise NamingError(f"{where!r} is not a hex address or START-END range")
    if encoding not in ENCODINGS:
        raise NamingError(f"counter encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    start = int(match.group(1), 16)
    end = int(match.group(2), 16) if match.group(2) is not None else start
    return NamedCounter(start, end, name, encoding == "bcd")


def _split(value: str, what: str, usage: str) -> tuple[str, str]:
    words = value.split(maxsplit=1)
    if len(words) < 2:
        raise NamingError(f"'{what}' needs {usage}")
    return words[0], words[1].strip()


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME or not _NAME_RE.match(name):
        raise NamingError(f"name {name!r} must be 1-{MAX_NAME} letters, digits, spaces or ' & . , + / ( ) -")
