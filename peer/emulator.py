"""The player's openMSX as the session needs it: opened or attached with the right regions watched,
the controls msxsync adds to it (F10 asks for a resync, the window names the player) and takes
away again, and what the game runs there (its `Platform`, checked against the room's).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from games.definition import GameDefinition, Region
from peer.core.emulator.openmsx_protocol import (
    label_command,
    message_command,
    request_command,
    unlabel_command,
)
from peer.core.emulator.openmsx_versions import IMGUI_INI, Features, with_window_position
from peer.core.room.room_game import Platform
from peer.openmsx import OpenMSXError, OpenMSXLink
from peer.openmsx.process import DEFAULT_MACHINE
from peer.options import PeerOptions

log = logging.getLogger(__name__)

# Emulated seconds before a game without an armed-when rule may publish: past the BIOS logo
# (C-BIOS about 5 s, real MSX BIOSes less) and the cartridge's start, which clears its RAM.
BOOT_ARM_AFTER = 10.0
RESYNC_MESSAGE = "resync: asking the other players"
RESYNC_KEY = "F10"
# In a layer of our own: it wins over the default F10 binding while active, and leaving
# deactivates it, so an attached openMSX gets its own F10 back. Its message is the one on screen
# until the resync's outcome replaces it (see `message_command`); the request reaches the
# session as `Requested("resync")`.
_BIND = (
    f"bind -layer msxsync {RESYNC_KEY} {{{message_command(RESYNC_MESSAGE)}; {request_command('resync')}}}; "
    "activate_input_layer msxsync"
)
_UNBIND = f"deactivate_input_layer msxsync; unbind -layer msxsync {RESYNC_KEY}; {unlabel_command()}"


def arm_after(given: float | None, definition: GameDefinition) -> float | None:
    """--arm-after, or for a game without an armed-when rule BOOT_ARM_AFTER: without either, a
    late joiner would arm before its cartridge boots and publish the boot's clear of its RAM."""
    if given is not None or definition.armed_when is not None:
        return given
    return BOOT_ARM_AFTER


def platform(options: PeerOptions, definition: GameDefinition, rom_path: Path) -> Platform:
    """What this player's game runs (the hello's): the ROM's SHA-1, and the machine when the
    definition names one (then a --machine that differs counts as another game)."""
    machine = (options.machine or definition.machine or "") if definition.machine else ""
    return Platform(hashlib.sha1(rom_path.read_bytes()).digest(), machine, options.force_rom)


def watched_regions(definition: GameDefinition) -> list[Region]:
    """The shared regions plus the armed-when bytes outside them (arming must see those)."""
    extra = []
    if definition.armed_when is not None:
        extra = [Region(a, a) for a in definition.armed_when.addresses if not definition.is_shared(a)]
    return [*definition.regions, *extra]


def open_emulator(
    options: PeerOptions, definition: GameDefinition, rom_path: Path, state_dir: Path
) -> contextlib.AbstractAsyncContextManager[OpenMSXLink]:
    """The player's openMSX: the one `--attach` names, or one launched with the game."""
    regions = watched_regions(definition)
    if options.attach is not None:
        return OpenMSXLink.attach(regions, pid=options.attach or None)
    home = state_dir / "openmsx-home"
    if options.window_position is not None and not options.headless:
        place_window(home, *options.window_position)
    return OpenMSXLink.launch(
        regions,
        home=home,
        machine=options.machine or definition.machine or DEFAULT_MACHINE,
        cartridge=rom_path,
        romtype=definition.romtype,
        openmsx=options.openmsx,
        scripts=[Path(script) for script in options.openmsx_scripts],
        headless=options.headless,
    )


def place_window(home: Path, x: int, y: int) -> None:
    """Open openMSX's window at X, Y: openMSX 20 and later read it from their ImGui settings in
    HOME at start (`peer.core.emulator.openmsx_versions.IMGUI_INI`). Not worth failing for."""
    path = home / IMGUI_INI
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        path.write_text(with_window_position(text, x, y), encoding="utf-8")
    except OSError as error:
        log.warning("cannot place openMSX's window (%s): it opens where openMSX chooses", error)


def window_note(options: PeerOptions, features: Features | None) -> str | None:
    """What to tell a player whose --window-position this openMSX (FEATURES) cannot honour."""
    if options.window_position is None or options.headless or options.attach is not None:
        return None
    if features is None or features.version.at_least(20):
        return None
    return (
        f"{features.version} opens its window where the desktop puts it: "
        "--window-position takes openMSX 20 or later"
    )


async def add_controls(link: OpenMSXLink, player: str) -> None:
    """F10 asks for a resync (it comes back to us as `Requested("resync")`), and
    the window says whose it is (two windows side by side). Neither is worth failing for."""
    with contextlib.suppress(OpenMSXError):
        await link.command(_BIND)
    with contextlib.suppress(OpenMSXError):
        await link.command(label_command(f"you are {player}"))


async def leave_emulator(link: OpenMSXLink) -> None:
    """Leaving the room: say so on screen, take the controls away (an attached openMSX plays on
    with its own F10 and title)."""
    with contextlib.suppress(OpenMSXError):
        await link.show_message("you left the room")
        await link.command(_UNBIND)
