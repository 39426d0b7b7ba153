"""The definitions shipped in games/: they parse, and they say what their comments promise."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from games.catalogue import bundled_games_dir, load_catalogue
from games.definition import GameDefinition, Region, parse_definition

GAMES = Path(__file__).resolve().parent.parent / "games"

GALIOUS_GOODMSX = "4d51d3c5036311392b173a576bc7d91dc9fed6cb"
GALIOUS_MSX2_ENHANCED_V104 = "daa6a451561616891bc077a14fa974aee68ca78f"


def load(name: str) -> GameDefinition:
    path = GAMES / f"{name}.regions"
    return parse_definition(path.read_text(encoding="utf-8"), name, source=str(path))


def spans(definition: GameDefinition) -> list[tuple[int, int]]:
    return [(region.start, region.end) for region in definition.regions]


def asm_constant(name: str) -> int:
    """A constant from the demo's source (`NAME: equ 0E010h` or `NAME: equ 8`)."""
    source = (GAMES / "demo.asm").read_text(encoding="utf-8")
    match = re.search(rf"^{name}:\s+equ\s+(?:([0-9A-Fa-f]+)h|(\d+))\b", source, re.MULTILINE)
    assert match, f"{name} not found in demo.asm"
    hex_digits, decimal = match.groups()
    return int(hex_digits, 16) if hex_digits else int(decimal)


def test_demo_shares_inventory_and_coins_only() -> None:
    demo = load("demo")
    assert demo.rom_file == "demo.rom"
    assert demo.machine == "C-BIOS_MSX1"
    assert spans(demo) == [(0xE010, 0xE017), (0xE018, 0xE018)]
    assert not demo.is_shared(0xE000)  # the in-game flag
    assert not demo.is_shared(0xE020) and not demo.is_shared(0xE021)  # the player's position


def test_demo_regions_match_the_ram_map_in_its_source() -> None:
    demo = load("demo")
    inventory = asm_constant("INVENTORY")
    items = asm_constant("ITEM_COUNT")
    assert demo.regions[0] == Region(inventory, inventory + items - 1, comment="inventory")
    assert demo.regions[1].start == demo.regions[1].end == asm_constant("COINS")
    assert str(demo.regions[1].merge) == "add bcd"  # every player's coins add up (BCD 00-99)
    assert demo.armed_when is not None
    assert demo.armed_when.addresses == (asm_constant("STATE"),)
    for private in ("PLAYER_X", "PLAYER_Y", "COIN_INDEX", "KEYS_PREV", "FRAMES"):
        assert not demo.is_shared(asm_constant(private)), private


def test_demo_is_armed_only_while_a_game_is_in_progress() -> None:
    armed = load("demo").armed_when
    assert armed is not None
    assert str(armed) == "e000 == 01"
    assert not armed.holds({0xE000: 0x00})  # booting, title screen
    assert armed.holds({0xE000: 0x01})


def test_demo_sha1_is_the_committed_rom() -> None:
    demo = load("demo")
    rom_sha1 = hashlib.sha1((GAMES / "demo.rom").read_bytes()).hexdigest()
    assert [rom.sha1 for rom in demo.known_roms] == [rom_sha1]
    assert demo.accepts_sha1(rom_sha1)
    readme = (GAMES / "README.md").read_text(encoding="utf-8")
    assert f"#! sha1 {rom_sha1} " in readme, "the worked example in games/README.md is stale"


def test_galious_shares_the_inventory() -> None:
    galious = load("galious")
    assert galious.rom_file == "galious.rom"
    assert galious.machine == "C-BIOS_MSX1"
    assert galious.romtype is None  # openMSX knows every accepted dump's mapper by its hash
    assert spans(galious) == [
        (0xE046, 0xE04B),  # arrows, coins, keys
        (0xE063, 0xE06C),  # world items
        (0xE070, 0xE074),  # weapons
        (0xE075, 0xE099),  # items
    ]
    assert [str(region.merge) for region in galious.regions] == ["add le16 bcd", "bit-or", "lww", "lww"]
    for personal in (0xE051, 0xE052, 0xE053, 0xE055, 0xE056, 0xE057, 0xE510):
        assert not galious.is_shared(personal), hex(personal)  # experience, vitality, weapon


def test_galious_accepts_the_known_msx1_dumps() -> None:
    galious = load("galious")
    assert len(galious.known_roms) == 16
    assert len({rom.sha1 for rom in galious.known_roms}) == 16
    assert galious.accepts_sha1(GALIOUS_GOODMSX)
    assert galious.accepts_sha1(GALIOUS_GOODMSX.upper())
    assert not galious.accepts_sha1(GALIOUS_MSX2_ENHANCED_V104)  # needs an MSX2
    assert all("[RC-749]" in rom.remark for rom in galious.known_roms)


def test_galious_hashes_are_in_openmsx_software_database() -> None:
    database = Path("/usr/share/openmsx/softwaredb.xml")
    if not database.exists():
        pytest.skip("openMSX's softwaredb.xml is not installed")
    text = database.read_text(encoding="utf-8", errors="replace")
    start = text.index("<title>The Maze of Galious - Knightmare II</title>")
    entry = text[start : text.index("</software>", start)]
    for rom in load("galious").known_roms:
        assert f"<hash>{rom.sha1}</hash>" in entry, rom


def test_bundled_catalogue_serves_both_games() -> None:
    catalogue = load_catalogue([bundled_games_dir()])
    assert catalogue.problems == []
    assert {"demo", "galious"} <= set(catalogue.entries)
    demo = catalogue.entries["demo"]
    assert demo.rom is not None and demo.definition.accepts_sha1(demo.rom.sha1)
    assert catalogue.entries["galious"].rom is None  # never shipped
