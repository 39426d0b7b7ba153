"""Which openMSX msxsync runs on, and what each version offers it. Pure: no I/O.

openMSX answers ``openmsx_info version`` with ``openMSX 18.0`` (a development build adds a suffix,
``openMSX 21.0-42-gabcdef``). `parse_version` reads that, `features_for` turns it into the
`Features` msxsync relies on, and refuses a version older than `OLDEST` with one sentence.

What changed between the versions we support, checked with Debian's 18.0 and with 20.0 and 21.0
built from openMSX's source (the table is in docs/openmsx-versions.md):

* **Renderers.** 18 draws with ``SDL`` (software) or ``SDLGL-PP`` (OpenGL); 20 dropped ``SDL``,
  so a window needs ``SDLGL-PP`` there. ``none`` exists everywhere and draws nothing.
* **Headless.** On 18 the ``SDL`` renderer on SDL's ``dummy`` video driver draws into nothing
  and costs about 5 % of a core. ``SDLGL-PP`` needs an OpenGL context: without a display only
  SDL's EGL-backed ``offscreen`` driver gives one, at about half a core of software OpenGL per
  emulator (measured on 20.0 and 21.0 with Mesa's llvmpipe), and only where EGL is installed.
  So from 20 on headless uses ``none``: it needs nothing at all and costs 2 %, at the price of
  openMSX servicing commands about once per 20 ms instead of once per frame
  (docs/openmsx-versions.md has the latency figures). The watcher works with either: it checks
  at every frame's end where frames are drawn, and on emulated time, which every renderer
  advances, where they are not (`peer.core.emulator.openmsx_protocol.TICK_S`).
* **Messages.** 18 shows ``message`` on its OSD (stacked, one under the other); 20 sends it to
  its ImGui message system, also stacked. msxsync draws its own one-line box instead, the same
  on every version, and never calls ``message`` for the player's screen.
* **Watchpoints** (only the tests and benchmarks use them): 21 adds ``debug watchpoint create``
  and deprecates ``debug set_watchpoint``, which 18 and 20 alone know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OLDEST = (18, 0)
"""The oldest openMSX msxsync runs on (Debian 12's; older ones were never tried)."""

_VERSION_RE = re.compile(r"openMSX\s+(\d+)\.(\d+)(?:\.(\d+))?(\S*)")


class UnsupportedOpenMSX(ValueError):
    """The openMSX found cannot run msxsync; the message is one sentence for the player."""


@dataclass(frozen=True, slots=True, order=True)
class OpenMSXVersion:
    """A release number; `text` is what openMSX said (a development build's suffix included)."""

    major: int
    minor: int
    micro: int = 0
    text: str = ""

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)

    def __str__(self) -> str:
        return self.text or f"openMSX {self.major}.{self.minor}"


def parse_version(reply: str) -> OpenMSXVersion:
    """The version in ``openmsx_info version``'s reply (or ``openmsx -v``'s first line)."""
    match = _VERSION_RE.search(reply)
    if match is None:
        raise UnsupportedOpenMSX(f"cannot tell which openMSX this is (it says {reply[:60]!r})")
    major, minor, micro, _ = match.groups()
    return OpenMSXVersion(int(major), int(minor), int(micro or 0), match.group(0))


@dataclass(frozen=True, slots=True)
class Features:
    """What msxsync uses of one openMSX version."""

    version: OpenMSXVersion
    window_renderer: str
    """The renderer that opens the player's window."""
    headless_renderer: str
    """The renderer that runs with no display at all (SDL's dummy video driver)."""
    watchpoint_create: str
    """The Tcl that creates a watchpoint: ``debug set_watchpoint`` before 21."""

    def renderer(self, headless: bool) -> str:
        return self.headless_renderer if headless else self.window_renderer

    def watchpoint(self, kind: str, begin: int, end: int | None, command: str) -> str:
        """Tcl creating a KIND (``write_mem``, ``read_mem``) watchpoint on BEGIN..END (inclusive)
        that runs COMMAND (Tcl, braced here): for tests and benchmarks."""
        if kind not in ("write_mem", "read_mem", "write_io", "read_io"):
            raise ValueError(f"watchpoint kind {kind!r}")
        span = str(begin) if end is None else f"{{{begin} {end}}}"
        if self.watchpoint_create == "debug watchpoint create":
            return f"debug watchpoint create -type {kind} -address {span} -command {{{command}}}"
        return f"debug set_watchpoint {kind} {span} {{}} {{{command}}}"


def features_for(version: OpenMSXVersion) -> Features:
    """What VERSION offers; `UnsupportedOpenMSX` for one older than `OLDEST`."""
    if not version.at_least(*OLDEST):
        oldest = ".".join(map(str, OLDEST))
        raise UnsupportedOpenMSX(
            f"{version} is too old for msxsync: it needs openMSX {oldest} or newer (openmsx.org)"
        )
    has_sdl_renderer = not version.at_least(20)
    return Features(
        version=version,
        window_renderer="SDL" if has_sdl_renderer else "SDLGL-PP",
        headless_renderer="SDL" if has_sdl_renderer else "none",
        watchpoint_create="debug watchpoint create" if version.at_least(21) else "debug set_watchpoint",
    )


# --- where the window opens ------------------------------------------------------------------

IMGUI_INI = "share/imgui.ini"
"""openMSX 20 and later keep their window's position here, under OPENMSX_HOME, and open the
window there at start (18 has no such file and lets SDL and the window manager choose)."""

_MANAGER_SECTION = "[openmsx][manager]"
_POSITION_KEY = "windowPos="
MAX_WINDOW_COORDINATE = 16384


def with_window_position(ini: str, x: int, y: int) -> str:
    """IMGUI_INI's text INI with the window's position set to X, Y (screen pixels), everything
    else kept: the player's ImGui layout lives in the same file."""
    if not (abs(x) <= MAX_WINDOW_COORDINATE and abs(y) <= MAX_WINDOW_COORDINATE):
        raise ValueError(f"a window position of {x},{y} is off any screen")
    line = f"{_POSITION_KEY}[ {x} {y} ]"
    lines = ini.splitlines()
    if _MANAGER_SECTION not in lines:
        return "\n".join([*lines, "", _MANAGER_SECTION, line, ""]).lstrip("\n")
    start = lines.index(_MANAGER_SECTION) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    kept = [entry for entry in lines[start:end] if not entry.startswith(_POSITION_KEY)]
    return "\n".join([*lines[:start], line, *kept, *lines[end:]]) + "\n"


def parse_window_position(text: str) -> tuple[int, int]:
    """``X,Y`` as the player gives it (--window-position); negative on a screen left of or
    above the main one."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(part.removeprefix("-").isdigit() for part in parts):
        raise ValueError(f"{text!r} is not X,Y in screen pixels (e.g. 700,40)")
    x, y = (int(part) for part in parts)
    if abs(x) > MAX_WINDOW_COORDINATE or abs(y) > MAX_WINDOW_COORDINATE:
        raise ValueError(f"{text!r} is off any screen")
    return x, y
