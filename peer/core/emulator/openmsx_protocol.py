"""openMSX's control protocol, without I/O: the reply stream parser and the Tcl we send.

This module owns two things and does no I/O (no asyncio, subprocess or sockets):

* `ControlStreamParser`, an incremental parser of the XML stream openMSX writes on its control
  channel (``-control stdio`` or its UNIX socket). Feed it bytes as they arrive and it returns the
  complete top-level elements as events: `Reply` (``<reply result="ok|nok">``), `Log`
  (``<log level=…>``) and `Update` (``<update type=… name=…>``). Malformed XML, a known element
  with missing or bad attributes, an element nested where text is expected, a buffered element
  larger than `MAX_PENDING_BYTES`, or a stream that ends inside an element raise `ControlStreamError`.
  Unknown top-level elements are skipped so that a newer openMSX does not break the link.
* Builders of every Tcl command the link sends. Nothing from outside (the network, a user) is
  ever spliced into Tcl as text: addresses are checked to be integers inside the shared regions
  and go out as decimal numbers, bytes and message text go out as hex and are decoded by Tcl
  (``binary decode hex``). `parse_changes` validates what our own Tcl watcher reports back.

The watcher itself (`watch_script`) is Tcl that openMSX runs at the end of every emulated frame
(``after frame``) and, where no renderer draws frames, once per frame's worth of emulated time
(``after time``, `TICK_S`); at most every `MIN_CHECK_GAP_US` of real time, plus a real-time
poll: it
reads every shared region through the CPU's view, compares it with the snapshot of the previous
check, and reports only the bytes that differ (new and old values: a counter's change is their
difference), as one ``user_setting`` update per check. `apply_command` writes remote bytes, and
adds remote deltas to counters (read, add, write in Tcl, so that a count the game made since the
last check stays), and updates that snapshot the same way in the same Tcl command, so applied
bytes never come back as local changes. The docstring of `peer.openmsx` explains why
per-frame reads rather than watchpoints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, cast
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

MAX_PENDING_BYTES = 16 * 1024 * 1024
"""An element still open after this many bytes is refused: openMSX never sends one this big."""

CHANGES_SETTING = "msxsync_changes"
"""The user_setting our Tcl watcher sets once per frame that had changes."""

REQUEST_SETTING = "msxsync_request"
"""The user_setting our Tcl sets when the player asks msxsync for something in openMSX (F10)."""

TICK_S = 1 / 60
"""Emulated seconds between two checks of the regions: one frame of a 60 Hz MSX.

Where a renderer draws, the watcher checks at every frame's end (``after frame``: right after
the game's writes of the frame). Frames end only where a renderer draws, and from openMSX 20 on
the headless renderer is ``none``, which draws nothing: there this emulated-time tick
(``after time``) is the clock; it runs with every renderer, with throttle off and in a replay,
and stands by while frames come. A game writes its variables once per frame, so one check per
60 Hz frame sees each write. openMSX drops ``after time`` timers with their machine on a
loadstate or a reverse jump, so the watcher re-arms on ``after machine_switch`` (and its
real-time poll re-arms whatever else might stop it)."""

MIN_CHECK_GAP_US = 4000
"""Real time between two checks of the regions.

At normal speed ticks are 16.7 ms apart, so every tick checks. Faster than ~4x real time
(throttle off runs hundreds of times faster) several ticks share a check: nobody plays at that
speed, and one Tcl check per frame would then cost more emulation time than it is worth.
"""

POLL_US = 50_000
"""Period of a real-time timer that checks when ticks do not: after a skipped check if no tick
followed, and while emulated time stands still (emulation paused), so a write by a tool or a
loadstate while paused is still seen."""

JUMP_DETECTION = """How the watcher tells a jump in time from the game's own writes.

openMSX changes memory without any watchpoint event when a savestate is loaded and when its
reverse feature (on by default) goes back. Each of these restores a snapshot into a *new machine*
and switches to it (`loadstate` is `restore_machine` + `activate_machine`; `reverse goback` and
`reverse goto` do the same inside openMSX), so the active machine's id (`machine`) changes. Each
check notes that id and the emulated time, and its report says JUMPED when the id changed or the
time went backwards since the previous check. The id is the robust signal: a state loaded one
frame after it was saved, checked at the next frame's end, shows no time going back at all (seen
on openMSX 18), and a savestate of an earlier session can lie ahead in emulated time. The time
check stays as a second guard. A `reverse goto` forward inside a replay either restores a later
snapshot (a new machine: a jump) or emulates on from the current memory with the recorded input
(the game's own writes, reported as such). The first check after a jump cannot tell the jump's
bytes from what the game wrote in that same frame: all of them are dropped.

Hooking the commands in Tcl (renaming `loadstate`, `reverse`) was not taken: it misses the same
jump made another way (`restore_machine` + `activate_machine` called directly, a
replay given on the command line) and leaves openMSX's own commands replaced should msxsync die.
Tested with real openMSX 18: `loadstate`, `reverse goback` and `reverse goto` each give exactly
one jumped report (tests/test_openmsx_link.py), and a player's savestate or rewind takes nothing
from the others (tests/test_savestates_e2e.py)."""

MAX_MESSAGE_CHARS = 200
ADDRESS_SPACE = 0x10000
_LOG_LEVELS = frozenset({"info", "warning", "error", "progress"})
_HEX_RE = re.compile(r"^(?:[0-9a-f]{2})+$")
_NONCE_RE = re.compile(r"^[0-9a-f]{16,64}\Z")
# XML 1.0 forbids most control characters; a command containing one is a bug on our side.
_XML_FORBIDDEN_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class ControlStreamError(ValueError):
    """openMSX (or whatever is on the control channel) sent something we cannot accept."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one command, in the order the commands were sent."""

    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class Log:
    """A log line from openMSX (also what Tcl's ``message TEXT LEVEL`` produces)."""

    level: str
    text: str


@dataclass(frozen=True, slots=True)
class Update:
    """A state change openMSX announces after ``openmsx_update enable KIND``."""

    kind: str
    name: str
    value: str
    machine: str | None = None


ControlEvent = Reply | Log | Update


class _Region(Protocol):
    """What this module needs of `games.definition.Region` (inclusive CPU addresses)."""

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


class ControlStreamParser:
    """Incremental parser of ``<openmsx-output>…</openmsx-output>``.

    `feed` returns the events completed by the bytes given; `close` says the stream ended and
    raises `ControlStreamError` if it ended inside an element. After a `ControlStreamError` the parser is
    unusable (XML offers no way to resynchronise) and every call raises again.
    """

    def __init__(self) -> None:
        self._parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._pending = 0
        self._failed: ControlStreamError | None = None
        self.finished = False
        """True once ``</openmsx-output>`` arrived: openMSX closed the channel cleanly."""

    def feed(self, data: bytes) -> list[ControlEvent]:
        self._check_usable()
        if self.finished and data.strip():
            return self._fail(f"data after </openmsx-output>: {data[:40]!r}")
        self._pending += len(data)
        try:
            self._parser.feed(data)
            events = self._collect()
        except ParseError as error:
            return self._fail(f"malformed control stream: {error}")
        except ControlStreamError as error:
            return self._fail(str(error))
        if self._depth > 1 and self._pending > MAX_PENDING_BYTES:
            return self._fail(f"an element is still open after {self._pending} bytes")
        return events

    def close(self) -> None:
        """The stream ended. Fine after ``</openmsx-output>`` or between elements."""
        self._check_usable()
        if self.finished:
            return
        if self._depth > 1:
            self._fail("control stream ended inside an element (truncated reply)")
        # Ending without the closing root tag is how a killed openMSX ends: not a protocol error.

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _fail(self, reason: str) -> list[ControlEvent]:
        self._failed = ControlStreamError(reason)
        raise self._failed

    def _collect(self) -> list[ControlEvent]:
        events: list[ControlEvent] = []
        # Only "start"/"end" events were asked for: each is (kind, Element).
        started_or_ended = cast("Iterator[tuple[str, Element]]", self._parser.read_events())
        for kind, element in started_or_ended:
            if kind == "start":
                self._start(element)
            else:
                self._depth -= 1
                if self._depth == 1:
                    self._pending = 0
                    event = _to_event(element)
                    if event is not None:
                        events.append(event)
                elif self._depth == 0:
                    self.finished = True
        return events

    def _start(self, element: Element) -> None:
        self._depth += 1
        if self._depth == 1 and element.tag != "openmsx-output":
            raise ControlStreamError(f"expected <openmsx-output>, got <{element.tag}>")
        if self._depth > 2:
            raise ControlStreamError(f"unexpected <{element.tag}> inside a control element")


def _to_event(element: Element) -> ControlEvent | None:
    text = element.text or ""
    if element.tag == "reply":
        result = element.get("result")
        if result not in ("ok", "nok"):
            raise ControlStreamError(f"<reply> with result={result!r}, expected ok or nok")
        return Reply(result == "ok", text)
    if element.tag == "log":
        level = element.get("level")
        if level not in _LOG_LEVELS:
            raise ControlStreamError(f"<log> with level={level!r}")
        return Log(level, text)
    if element.tag == "update":
        kind, name = element.get("type"), element.get("name")
        if not kind or name is None:
            raise ControlStreamError("<update> without type or name")
        return Update(kind, name, text, element.get("machine"))
    return None  # an element kind this version does not know: skipped on purpose


# --- what we send -------------------------------------------------------------------------


OPENING = b"<openmsx-control>\n"


def encode_command(tcl: str) -> bytes:
    """One ``<command>`` element, XML-escaped. Raises ValueError for text XML cannot carry."""
    if _XML_FORBIDDEN_RE.search(tcl):
        raise ValueError("a command cannot contain control characters")
    escaped = tcl.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<command>{escaped}</command>\n".encode()


def hex_text(text: str) -> str:
    """Tcl that evaluates to TEXT, whatever it contains: it travels as UTF-8 hex."""
    return f"[encoding convertfrom utf-8 [binary decode hex {text.encode().hex()}]]"


MESSAGE_WIDGET = "msxsync_message"
SHOWN_KEPT = 50
"""How many of the last messages msxsync keeps in openMSX (``::msxsync::shown``, `shown_command`)."""
ON_SCREEN_CHARS = 72
"""What fits on one line of the message box: longer text is cut there on screen (the player's
terminal and ``::msxsync::shown`` keep all of it)."""


def message_command(text: str, level: str = "info") -> str:
    """Show TEXT on openMSX's screen: one line in the top border, over nothing of the game's,
    replacing msxsync's previous message and fading out after a few seconds, as openMSX 18 shows
    its own messages (`openmsx_versions`: openMSX 20 stacks them instead, so msxsync draws its
    own box on every version). Control characters become spaces."""
    if level not in ("info", "warning", "error"):
        raise ValueError(f"message level {level!r}")
    clean = "".join(ch if ch.isprintable() else " " for ch in text)[:MAX_MESSAGE_CHARS]
    return f"msxsync::show {hex_text(clean)} {level}"


def shown_command() -> str:
    """Tcl answering the last `SHOWN_KEPT` messages msxsync showed, oldest first (`parse_shown`)."""
    return (
        "if {[info exists ::msxsync::shown]} "
        "{binary encode hex [encoding convertto utf-8 [join $::msxsync::shown \\n]]}"
    )


def parse_shown(reply: str) -> list[str]:
    if not reply:
        return []
    try:
        return bytes.fromhex(reply).decode().split("\n")
    except ValueError as error:
        raise ControlStreamError(f"bad list of shown messages {reply[:40]!r}: {error}") from None


@dataclass(frozen=True, slots=True)
class Request:
    """The player asked msxsync for something from inside openMSX (F10: ``resync``)."""

    run: str
    seq: int
    what: str


REQUESTS = frozenset({"resync"})


def request_command(what: str) -> str:
    """Tcl the player's key runs to ask for WHAT: it reaches the link as a `REQUEST_SETTING` update."""
    if what not in REQUESTS:
        raise ValueError(f"unknown request {what!r}")
    return f"msxsync::request {what}"


def parse_request(value: str) -> Request:
    """Decode ``RUN SEQ WHAT`` as `msxsync::request` sets it."""
    words = value.split()
    if len(words) != 3 or not _NONCE_RE.match(words[0]) or not words[1].isdigit() or words[2] not in REQUESTS:
        raise ControlStreamError(f"bad request {value[:60]!r}")
    return Request(words[0], int(words[1]), words[2])


LABEL_WIDGET = "msxsync_label"


def label_command(text: str) -> str:
    """A small lasting label in the bottom right corner of openMSX's screen (e.g. "you are
    player1"), so that two windows side by side are told apart: in the border, clear of the
    game's picture and of openMSX's LEDs (bottom left)."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)[:40]
    width = 6 + 5 * len(clean)
    return (
        f"catch {{osd destroy {LABEL_WIDGET}}}; "
        f"osd create rectangle {LABEL_WIDGET} -x {317 - width} -y 226 -w {width} -h 11 -scaled true "
        "-rgba 0x000000a0 -z 4; "
        f"osd create text {LABEL_WIDGET}.text -x 3 -y 1 -size 8 -rgba 0xffffffff -text {hex_text(clean)}"
    )


def unlabel_command() -> str:
    return f"catch {{osd destroy {LABEL_WIDGET}}}"


def read_command(address: int, length: int) -> str:
    """Read LENGTH bytes at a CPU address (the CPU's current view); the reply is hex."""
    _check_span(address, length)
    return f"binary encode hex [debug read_block memory {address} {length}]"


def decode_hex_reply(text: str, length: int) -> bytes:
    if len(text) != 2 * length or (length and not _HEX_RE.match(text)):
        raise ControlStreamError(f"expected {length} bytes as hex, got {text[:40]!r}")
    return bytes.fromhex(text)


def _check_span(address: int, length: int) -> None:
    if not isinstance(address, int) or not isinstance(length, int):
        raise TypeError("address and length must be ints")
    if length < 1 or address < 0 or address + length > ADDRESS_SPACE:
        raise ValueError(f"{length} bytes at {address:#x} are outside the 64 KB address space")


def _region_of(regions: Sequence[_Region], address: int, length: int) -> int:
    for index, region in enumerate(regions):
        if region.start <= address and address + length - 1 <= region.end:
            return index
    raise ValueError(f"{length} bytes at {address:#06x} are not inside one shared region")


@dataclass(frozen=True, slots=True)
class CounterDelta:
    """Add `delta` to the counter of `width` bytes (low first, `bcd` digits) at `address`,
    saturating at 0 and at the largest value its bytes hold."""

    address: int
    width: int
    bcd: bool
    delta: int

    def __post_init__(self) -> None:
        if self.width not in (1, 2, 4) or not isinstance(self.delta, int):
            raise ValueError(f"a counter of {self.width} bytes, delta {self.delta!r}")
        if abs(self.delta) >= 2**40:
            raise ValueError(f"a delta of {self.delta} is out of range")
        _check_span(self.address, self.width)


def apply_command(
    regions: Sequence[_Region],
    changes: Iterable[tuple[int, bytes]],
    deltas: Iterable[CounterDelta] = (),
    seen: int | None = None,
) -> str:
    """Tcl writing CHANGES (address, bytes) and adding DELTAS to counters, in memory and in the
    watcher's snapshot.

    Every change must lie inside one of REGIONS (the same list `watch_script` was built from).
    SEEN, when given, is the last of the watcher's reports msxsync has merged: a byte the game
    changed since (in a report not merged yet, or since the last check) keeps the game's value,
    for the game's write is newer (it reaches the room through its report, and if the room's
    value still wins, a correction follows). Adoptions write unconditionally (SEEN None).
    The reply lists the addresses whose byte did not read back as written (ROM mapped there).
    """
    words: list[str] = []
    for address, data in changes:
        if not isinstance(data, bytes | bytearray):
            raise TypeError("change data must be bytes")
        _check_span(address, len(data))
        index = _region_of(regions, address, len(data))
        words += [str(index), str(address - regions[index].start), bytes(data).hex()]
    adds: list[str] = []
    for counter in deltas:
        index = _region_of(regions, counter.address, counter.width)
        offset = counter.address - regions[index].start
        adds += [str(index), str(offset), str(counter.width), str(int(counter.bcd)), str(counter.delta)]
    if not words and not adds:
        raise ValueError("nothing to apply")
    if seen is not None and (not isinstance(seen, int) or seen < 0):
        raise ValueError(f"a report number must be a natural number, not {seen!r}")
    return (
        "msxsync::apply {"
        + " ".join(words)
        + "} {"
        + " ".join(adds)
        + "} "
        + str(-1 if seen is None else seen)
    )


def watch_script(regions: Sequence[_Region], run: str) -> str:
    """Tcl defining the ``msxsync`` namespace: the per-frame watcher, `apply`, the on-screen
    messages (`message_command`) and the player's requests (`REQUEST_SETTING`).

    RUN (from `new_run_nonce`) starts every report, so that only this run's reports count.
    Loading it again replaces the previous definition (regions and snapshot included).
    """
    if not regions:
        raise ValueError("no regions to watch")
    if not _NONCE_RE.match(run):
        raise ValueError("the run nonce must be 16-64 hex digits")
    spans = []
    for region in regions:
        _check_span(region.start, region.end - region.start + 1)
        spans.append(f"{region.start} {region.end - region.start + 1}")
    return (
        _WATCH_TCL.replace("@REGIONS@", " ".join(spans))
        .replace("@SETTING@", CHANGES_SETTING)
        .replace("@RUN@", run)
        .replace("@MIN_GAP_US@", str(MIN_CHECK_GAP_US))
        .replace("@POLL_S@", f"{POLL_US / 1e6:g}")
        .replace("@TICK_S@", f"{TICK_S:.6f}")
        .replace("@REQUEST@", REQUEST_SETTING)
        .replace("@KEPT_LAST@", str(SHOWN_KEPT - 1))
        .replace("@SCREEN_CHARS@", str(ON_SCREEN_CHARS))
        .replace("@SCREEN_CUT@", str(ON_SCREEN_CHARS - 4))
        .replace("@WIDGET@", MESSAGE_WIDGET)
        .replace("@POLL_US@", str(POLL_US))
    )


@dataclass(frozen=True, slots=True)
class Probe:
    """What the running emulator says now: emulated time, its watcher's last report number, and
    the bytes at the probed addresses (the armed-when rule's)."""

    emutime: float
    last_report: int
    memory: dict[int, int]


def probe_command(addresses: Sequence[int]) -> str:
    """Tcl reading, in one go, the emulated time, the watcher's report count and ADDRESSES."""
    reads = []
    for address in addresses:
        _check_span(address, 1)
        reads.append(f"[binary encode hex [debug read_block memory {address} 1]]")
    return " ".join(["list [machine_info time] $::msxsync::seq", *reads])


def parse_probe(reply: str, addresses: Sequence[int]) -> Probe:
    words = reply.split()
    if len(words) != 2 + len(addresses):
        raise ControlStreamError(f"bad probe reply {reply[:60]!r}")
    try:
        emutime, last_report = float(words[0]), int(words[1])
        values = [decode_hex_reply(word, 1)[0] for word in words[2:]]
    except ValueError as error:
        raise ControlStreamError(f"bad probe reply {reply[:60]!r}: {error}") from None
    if not (emutime >= 0 and last_report >= 0):
        raise ControlStreamError(f"bad probe reply {reply[:60]!r}")
    return Probe(emutime, last_report, dict(zip(addresses, values, strict=True)))


@dataclass(frozen=True, slots=True)
class ChangeReport:
    """One watcher report: the bytes that changed since the previous check.

    `run` is the nonce of the watcher that made it: openMSX saves user settings in its
    settings.xml and announces the saved value again when the next run creates the setting, so
    a report whose nonce is not this link's is a leftover of an earlier run, never a change.
    `emutime` is openMSX's emulated time of the check (seconds), `written_at` its wall time
    (seconds since the epoch, from Tcl's clock): when the game made these writes, at the latest.
    `before` holds the same runs with the values the previous check saw. `jumped` says the
    emulator jumped in time since that check (a loadstate, openMSX's reverse, a replay): these
    bytes are the jump's, not the game's writes (see `JUMP_DETECTION`).
    """

    run: str
    seq: int
    emutime: float
    written_at: float
    changes: tuple[tuple[int, bytes], ...]
    before: tuple[tuple[int, bytes], ...] = ()
    jumped: bool = False


def new_run_nonce(random_bytes: bytes) -> str:
    """The nonce of one watcher run (hex of RANDOM_BYTES; the caller brings the randomness)."""
    if len(random_bytes) < 8:
        raise ValueError("a run nonce needs at least 8 random bytes")
    return random_bytes.hex()


def parse_changes(value: str) -> ChangeReport:
    """Decode one watcher report: ``RUN SEQ EMUTIME WALL_US JUMPED ADDR NEW OLD ADDR NEW OLD …``
    (a jump is reported even with no changes)."""
    words = value.split()
    shape_ok = len(words) >= 5 and (len(words) - 5) % 3 == 0 and (len(words) > 5 or words[4] == "1")
    if not shape_ok or not _NONCE_RE.match(words[0]) or words[4] not in ("0", "1"):
        raise ControlStreamError(f"bad change report {value[:60]!r}")
    try:
        seq, emutime, wall_us = int(words[1]), float(words[2]), int(words[3])
        triples = list(zip(words[5::3], words[6::3], words[7::3], strict=True))
        changes = tuple((int(address), decode_hex_reply(new, len(new) // 2)) for address, new, _ in triples)
        before = tuple((int(address), decode_hex_reply(old, len(new) // 2)) for address, new, old in triples)
    except ValueError as error:
        raise ControlStreamError(f"bad change report {value[:60]!r}: {error}") from None
    if not (emutime >= 0 and wall_us >= 0):  # (also refuses nan)
        raise ControlStreamError(f"bad times in change report {value[:60]!r}")
    for address, data in changes:
        if not data or address < 0 or address + len(data) > ADDRESS_SPACE:
            raise ControlStreamError(f"change report outside the address space: {value[:60]!r}")
    return ChangeReport(words[0], seq, emutime, wall_us / 1e6, changes, before, words[4] == "1")


# Why it looks like this:
# - Two clocks: `after frame` where a renderer draws (the check then comes right after the
#   frame's writes: an emulated-time tick at another phase of the frame cost a frame of latency
#   on openMSX 18, 28 ms against 12 ms end to end), and `after time` every TICK_S of emulated
#   time, which stands by while frames come and keeps the watch where none do (renderer none,
#   headless from openMSX 20). `switched` re-arms the time tick after loadstate and reverse,
#   which drop it with the old machine. Comparing against a snapshot catches every change,
#   whatever made it.
# - `tick` checks at most once per MIN_CHECK_GAP_US of real time and otherwise leaves the
#   check pending; `poll` (after realtime, runs even when paused) checks when a check is
#   pending or no frame ended for POLL_US.
# - Regions are compared as hex strings first (one `string equal` per region per frame), then
#   in 16-byte chunks, then byte by byte, so quiet frames cost almost nothing.
# - Changed bytes are grouped into runs; one `user_setting` assignment per frame with changes
#   reaches the controller as one <update>. The sequence number makes every value distinct;
#   the run nonce tells this run's reports from a value openMSX saved in settings.xml; the wall
#   time of the check is when the game's writes were made, at the latest.
# - A check also notes the active machine and the emulated time; a report made after either
#   changed the wrong way says so (JUMPED, see `JUMP_DETECTION`).
# - `apply` writes through the CPU view and puts what reads back into the snapshot, in the same
#   Tcl command, so nothing it wrote is reported as a local change. A counter's delta is added
#   to memory and to the snapshot alike, so a count the game made since the check still shows
#   as the difference between them and is reported at the next check.
_WATCH_TCL = r"""
if {[namespace exists msxsync]} {
    # Left by a link that did not detach (a crashed peer): stop its timers before replacing it.
    catch {msxsync::stop}
}
namespace eval msxsync {
    variable regions {@REGIONS@}
    variable snapshot {}
    variable seq 0
    variable changed_in  ;# address -> the report that last changed its byte (seq starts again)
    array unset changed_in
    array set changed_in {}
    variable frame_id {}
    variable frame_time -1
    variable after_id {}
    variable poll_id {}
    variable switch_id {}
    variable shown {}
    variable requests 0
    variable last_check 0
    variable last_tick 0
    variable pending 0
    variable machine {}
    variable time 0
    if {"@SETTING@" ni [user_setting info]} {
        user_setting create string @SETTING@ "msxsync: shared RAM changes (internal)" {}
    }
    if {"@REQUEST@" ni [user_setting info]} {
        user_setting create string @REQUEST@ "msxsync: the player's requests (internal)" {}
    }
    proc request {what} {
        variable requests
        set ::@REQUEST@ "@RUN@ [incr requests] $what"
        return
    }
    proc show {text level} {
        variable shown
        lappend shown $text
        set shown [lrange $shown end-@KEPT_LAST@ end]
        if {[string length $text] > @SCREEN_CHARS@} {
            set text "[string range $text 0 @SCREEN_CUT@]..."
        }
        # The colours and place of openMSX 18's own messages (osd::display_message): one line
        # in the top border, below openMSX 20's menu bar. text_box replaces an older box of
        # the same name and fades it out after a few seconds.
        switch -- $level {
            error   { set colour {0xaa0000e8 0xdd0000e8 0xcc0000e8 0xff0000e8} }
            warning { set colour {0xaa6600e8 0xdd9900e8 0xcc8800e8 0xffaa00e8} }
            default { set colour {0x7090aae8 0xa0c0dde8 0x90b0cce8 0xc0e0ffe8} }
        }
        set failed [catch {
            osd_widgets::text_box @WIDGET@ -text $text -textrgba 0xffffffff -textsize 6 \
                -rgba $colour -x 3 -y 12 -z 5 -w 314 -bordersize 0.5 -borderrgba 0x000000ff \
                -clip true -scaled true -suppressErrors true
        }]
        if {$failed} {
            # (An openMSX without its bundled osd_widgets: a plain box that stays until the next.)
            catch {osd destroy @WIDGET@}
            osd create rectangle @WIDGET@ -x 3 -y 12 -z 5 -w 314 -h 10 -rgba 0x304060e8 -scaled true
            osd create text @WIDGET@.text -x 2 -y 2 -size 6 -rgba 0xffffffff -text $text
        }
        return
    }
    proc read_regions {} {
        variable regions
        set result {}
        foreach {start length} $regions {
            lappend result [binary encode hex [debug read_block memory $start $length]]
        }
        return $result
    }
    proc diff {start old new} {
        set runs {}
        set run_address -1
        set run_hex {}
        set run_old {}
        set total [string length $new]
        for {set chunk 0} {$chunk < $total} {incr chunk 32} {
            set last [expr {$chunk + 31}]
            if {[string range $old $chunk $last] eq [string range $new $chunk $last]} {
                continue
            }
            set stop [expr {$last < $total ? $last : $total}]
            for {set i $chunk} {$i < $stop} {incr i 2} {
                set byte [string range $new $i [expr {$i + 1}]]
                set was [string range $old $i [expr {$i + 1}]]
                if {$byte eq $was} { continue }
                if {$was eq {}} { set was 00 }
                set address [expr {$start + $i / 2}]
                if {$run_address >= 0 && $address == $run_address + [string length $run_hex] / 2} {
                    append run_hex $byte
                    append run_old $was
                } else {
                    if {$run_address >= 0} { lappend runs $run_address $run_hex $run_old }
                    set run_address $address
                    set run_hex $byte
                    set run_old $was
                }
            }
        }
        if {$run_address >= 0} { lappend runs $run_address $run_hex $run_old }
        return $runs
    }
    proc tick {} {
        # A frame ended (a renderer draws): the game's writes of the frame are all in.
        variable frame_id [after frame msxsync::tick]
        variable frame_time [machine_info time]
        due
    }
    proc tick_time {} {
        variable after_id [after time @TICK_S@ msxsync::tick_time]
        variable frame_time
        set now [machine_info time]
        # Frames came within the last two ticks: they are the clock; this one stands by.
        if {$now >= $frame_time && $now - $frame_time < 2 * @TICK_S@} { return }
        due
    }
    proc due {} {
        variable last_check
        variable last_tick [clock microseconds]
        if {$last_tick - $last_check >= @MIN_GAP_US@} {
            check $last_tick
        } else {
            variable pending 1
        }
    }
    proc poll {} {
        variable poll_id [after realtime @POLL_S@ msxsync::poll]
        variable pending
        variable last_tick
        variable after_id
        # (`after info` lists every timer, whatever its arguments: look for ours in the list.)
        if {$after_id eq {} || [lsearch -glob [split [after info] \n] "$after_id: *"] < 0} {
            # The emulated-time tick is gone (a machine switch that the hook below missed).
            set after_id [after time @TICK_S@ msxsync::tick_time]
        }
        set now [clock microseconds]
        if {$pending || $now - $last_tick >= @POLL_US@} { check $now }
    }
    proc check {now} {
        variable last_check $now
        variable pending 0
        variable regions
        variable snapshot
        variable seq
        variable changed_in
        variable machine
        variable time
        set current [read_regions]
        set now_machine [machine]
        set now_time [machine_info time]
        set jumped [expr {$now_machine ne $machine || $now_time < $time}]
        set machine $now_machine
        set time $now_time
        # A jump is reported even when it changed none of the regions (a jump inside a replay
        # may land on the very bytes of the last check): the peer then re-takes the room's bytes.
        if {$current eq $snapshot && !$jumped} { return }
        set changes {}
        foreach {start length} $regions old $snapshot new $current {
            if {$old ne $new} { lappend changes {*}[diff $start $old $new] }
        }
        set snapshot $current
        incr seq
        foreach {address hex old} $changes {
            for {set i 0} {$i < [string length $hex] / 2} {incr i} {
                set changed_in([expr {$address + $i}]) $seq
            }
        }
        set ::@SETTING@ "@RUN@ $seq $now_time $now $jumped $changes"
    }
    proc start {} {
        variable snapshot [read_regions]
        variable machine [machine]
        variable time [machine_info time]
        stop
        variable frame_time -1
        variable frame_id [after frame msxsync::tick]
        variable after_id [after time @TICK_S@ msxsync::tick_time]
        variable poll_id [after realtime @POLL_S@ msxsync::poll]
        variable switch_id [after machine_switch msxsync::switched]
        return
    }
    proc switched {} {
        # openMSX drops `after time` timers with the machine they ran on (loadstate, reverse).
        variable switch_id [after machine_switch msxsync::switched]
        variable after_id
        after cancel $after_id
        set after_id [after time @TICK_S@ msxsync::tick_time]
    }
    proc stop {} {
        variable frame_id
        variable after_id
        variable poll_id
        variable switch_id
        foreach id [list $frame_id $after_id $poll_id $switch_id] { after cancel $id }
        set frame_id {}
        set after_id {}
        set poll_id {}
        set switch_id {}
        return
    }
    proc add_to {hex width bcd delta} {
        set radix [expr {$bcd ? 100 : 256}]
        set value 0
        set weight 1
        for {set i 0} {$i < $width} {incr i} {
            scan [string range $hex [expr {2 * $i}] [expr {2 * $i + 1}]] %x byte
            if {$bcd} { set byte [expr {($byte >> 4) * 10 + ($byte & 15)}] }
            incr value [expr {$byte * $weight}]
            set weight [expr {$weight * $radix}]
        }
        set value [expr {$value + $delta}]
        if {$value < 0} { set value 0 }
        if {$value > $weight - 1} { set value [expr {$weight - 1}] }
        set out {}
        for {set i 0} {$i < $width} {incr i} {
            set digit [expr {$value % $radix}]
            set value [expr {$value / $radix}]
            if {$bcd} { set digit [expr {($digit / 10) << 4 | $digit % 10}] }
            append out [format %02x $digit]
        }
        return $out
    }
    proc keep_games {address hex game known seen} {
        # -> {what to write} {per byte: "" (written), or the snapshot byte to keep}
        variable changed_in
        set out {}
        set marks {}
        for {set i 0} {$i < [string length $hex]} {incr i 2} {
            set j [expr {$i + 1}]
            set a [expr {$address + $i / 2}]
            set mine [string range $game $i $j]
            if {[info exists changed_in($a)] && $changed_in($a) > $seen} {
                append out $mine
                lappend marks [string range $known $i $j]
            } elseif {$mine ne [string range $known $i $j]} {
                append out $mine
                lappend marks [string range $hex $i $j]
            } else {
                append out [string range $hex $i $j]
                lappend marks {}
            }
        }
        return [list $out $marks]
    }
    proc merge_snapshot {back marks} {
        set out {}
        set i 0
        foreach mark $marks {
            if {$mark eq {}} { append out [string range $back $i [expr {$i + 1}]] } else { append out $mark }
            incr i 2
        }
        return $out
    }
    proc apply {writes {adds {}} {seen -1}} {
        variable regions
        variable snapshot
        variable seq
        variable changed_in
        set failed {}
        foreach {index offset width bcd delta} $adds {
            set address [expr {[lindex $regions [expr {2 * $index}]] + $offset}]
            set now [binary encode hex [debug read_block memory $address $width]]
            set hex [add_to $now $width $bcd $delta]
            debug write_block memory $address [binary decode hex $hex]
            set first [expr {2 * $offset}]
            set last [expr {$first + 2 * $width - 1}]
            set old [string range [lindex $snapshot $index] $first $last]
            lset snapshot $index [string replace [lindex $snapshot $index] $first $last \
                [add_to $old $width $bcd $delta]]
            if {[binary encode hex [debug read_block memory $address $width]] ne $hex} {
                lappend failed $address
            }
        }
        foreach {index offset hex} $writes {
            set address [expr {[lindex $regions [expr {2 * $index}]] + $offset}]
            set length [expr {[string length $hex] / 2}]
            set first [expr {2 * $offset}]
            set last [expr {$first + 2 * $length - 1}]
            set known [string range [lindex $snapshot $index] $first $last]
            set keep {}
            if {$seen < 0} {
                # (an adoption: the room's bytes everywhere; older reports no longer stand for them)
                for {set i 0} {$i < $length} {incr i} { unset -nocomplain changed_in([expr {$address + $i}]) }
            } else {
                # A byte the game changed since the check msxsync last merged keeps the game's
                # value: its report (or the next check) brings that newer write to the room.
                # (Usually none: every report merged, nothing changed since the last check.)
                set game [binary encode hex [debug read_block memory $address $length]]
                if {$seen < $seq || $game ne $known} {
                    set keep [keep_games $address $hex $game $known $seen]
                    set hex [lindex $keep 0]
                }
            }
            debug write_block memory $address [binary decode hex $hex]
            set back [binary encode hex [debug read_block memory $address $length]]
            if {$back ne $hex} { lappend failed $address }
            if {$keep ne {}} {
                # The snapshot: what the last check saw where a report is on its way; the room's
                # value where the game changed the byte since (so the next check reports the
                # game's byte, whatever it is by then, unless it is the room's); else what took.
                set back [merge_snapshot $back [lindex $keep 1]]
            }
            lset snapshot $index [string replace [lindex $snapshot $index] $first $last $back]
        }
        return $failed
    }
}
"""
