"""The bundled demo cartridge, played in real headless openMSX and driven by Tcl key presses.

One scripted session per machine: a Tcl script (written here) presses keys at fixed emulated times,
reads RAM and VRAM, writes what it saw to a file and exits. The tests assert on that file. The
script also writes bytes into the shared RAM block from outside, as msxsync does for another
player's pickup, and checks that the screen follows.

Positions below come from games/demo.asm: start (16, 11), item 0 at (18, 11), the first coin at
(16, 13), spikes at (14, 11), item 3 at (3, 19); the status line is screen row 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

GAMES = Path(__file__).resolve().parent.parent / "games"
ROM = GAMES / "demo.rom"
ASM = GAMES / "demo.asm"

STATE = 0xE000
INVENTORY = 0xE010
COINS = 0xE018
PLAYER_X = 0xE020
PLAYER_Y = 0xE021
NAMES = 0x1800  # screen 1 name table in VRAM
STATUS_ITEMS = NAMES + 32 + 8
STATUS_COINS = NAMES + 32 + 27
TILE_ITEM0 = 0x90
TILE_PLAYER = 0xA8
TILE_EMPTY_SLOT = ord("-")

# Keyboard matrix row 8: space and the cursor keys.
ROW = 8
SPACE, LEFT, UP, DOWN, RIGHT = 0x01, 0x10, 0x20, 0x40, 0x80

OPENMSX = shutil.which("openmsx")
pytestmark = pytest.mark.openmsx


@dataclass
class Script:
    """Builds a Tcl script of actions at increasing emulated times."""

    result_path: Path
    now: float = 0.0

    def __post_init__(self) -> None:
        self.lines = [
            "set renderer SDL",
            "set throttle off",
            f"set ::out [open {{{self.result_path}}} w]",
            "proc mem {label name addr} "
            '{ puts $::out "$label $name [debug read memory $addr]"; flush $::out }',
            "proc vram {label name addr} "
            '{ puts $::out "$label $name [debug read VRAM $addr]"; flush $::out }',
            "proc psg {label name reg} "
            '{ puts $::out "$label $name [debug read {PSG regs} $reg]"; flush $::out }',
            'proc value {label name value} { puts $::out "$label $name $value"; flush $::out }',
        ]

    def at(self, time: float, command: str) -> None:
        self.now = max(self.now, time)
        self.lines.append(f"after time {time:.3f} {{{command}}}")

    def then(self, delay: float, command: str) -> None:
        self.at(self.now + delay, command)

    def press(self, mask: int, times: int = 1) -> None:
        """Press and release a key `times` times; each press lasts a few frames."""
        for _ in range(times):
            self.then(0.1, f"keymatrixdown {ROW} {mask:#04x}")
            self.then(0.1, f"keymatrixup {ROW} {mask:#04x}")

    def probe(
        self,
        label: str,
        memory: dict[str, int],
        vram: dict[str, int] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """Record RAM bytes, VRAM bytes and any `extra` Tcl reads under `label`."""
        reads = [f"mem {label} {name} {addr:#06x}" for name, addr in memory.items()]
        reads += [f"vram {label} {name} {addr:#06x}" for name, addr in (vram or {}).items()]
        reads += [command.replace("LABEL", label) for command in extra]
        self.then(0.1, "; ".join(reads))

    def text(self) -> str:
        return "\n".join([*self.lines, f"after time {self.now + 0.2:.3f} {{close $::out; exit}}"])


# PSG registers 0-1 keep the pitch of the last beep; register 8 (volume) is 0 once it is over.
BEEP = ("psg LABEL tone_lo 0", "psg LABEL tone_hi 1", "psg LABEL volume 8")


def game_bytes() -> dict[str, int]:
    probes = {"state": STATE, "coins": COINS, "x": PLAYER_X, "y": PLAYER_Y}
    probes.update({f"item{i}": INVENTORY + i for i in range(8)})
    return probes


def session_script(result: Path, shots: Path) -> str:
    s = Script(result)
    # During the C-BIOS logo, before the cartridge runs: fill the work area with junk, which the
    # game must clear at boot.
    s.at(2.0, "debug write_block memory 0xe000 [string repeat U 64]")
    s.probe("junk", {"state": STATE, "item0": INVENTORY, "coins": COINS})
    # Title screen (the logo takes about 5 emulated seconds). Render for real for the screenshot.
    s.at(7.0, "set throttle on")
    s.then(0.3, f"screenshot {{{shots / 'title.png'}}}")
    s.then(0.05, "set throttle off")
    s.probe("title", game_bytes(), {"press": NAMES + 18 * 32 + 6})
    s.press(RIGHT)  # not a start key
    s.probe("title_keys", {"state": STATE})
    s.press(SPACE)
    s.probe("started", game_bytes(), {"player": NAMES + 11 * 32 + 16})
    s.press(RIGHT, 2)  # onto item 0
    s.probe("item", game_bytes(), {"slot0": STATUS_ITEMS, "room0": NAMES + 11 * 32 + 18}, BEEP)
    s.press(LEFT, 2)
    s.press(DOWN, 2)  # onto the first coin
    s.probe("coin", game_bytes(), {"coins_hi": STATUS_COINS, "coins_lo": STATUS_COINS + 1}, BEEP)
    s.press(UP, 2)
    s.press(LEFT, 2)  # into the spikes: item 0 is lost, back to the start
    s.probe("spikes", game_bytes(), {"slot0": STATUS_ITEMS, "room0": NAMES + 11 * 32 + 18}, BEEP)
    # Another player's pickup arrives as bytes written into RAM from outside.
    s.then(0.1, "debug write memory 0xe013 1; debug write memory 0xe018 0x42")
    s.probe(
        "remote",
        game_bytes(),
        {
            "slot3": STATUS_ITEMS + 3,
            "room3": NAMES + 19 * 32 + 3,
            "coins_hi": STATUS_COINS,
            "coins_lo": STATUS_COINS + 1,
        },
    )
    # The game writes shared bytes only when they change: none while idle, one per pickup.
    s.then(0.1, "set ::writes 0; debug set_watchpoint write_mem {0xe010 0xe018} {} {incr ::writes}")
    s.then(1.0, "value idle writes $::writes")
    s.press(RIGHT, 5)  # over item 0, which the spikes dropped back into the room
    s.press(DOWN)  # onto the second coin, at (21, 12)
    s.probe(
        "walk",
        game_bytes(),
        {"message": NAMES + 2 * 32 + 2},
        extra=("value LABEL writes $::writes",),
    )
    s.then(0.1, "debug write_block memory 0xe010 [string repeat \\x01 8]")
    s.probe("full", game_bytes(), {"message": NAMES + 2 * 32 + 2})
    s.then(0.1, "set throttle on")
    s.then(0.3, f"screenshot {{{shots / 'game.png'}}}")
    return s.text()


Results = dict[str, dict[str, int]]


def run_session(machine: str, folder: Path) -> Results:
    result = folder / "result.txt"
    script = folder / "session.tcl"
    script.write_text(session_script(result, folder))
    home = folder / "openmsx-home"
    home.mkdir()
    env = {
        **os.environ,
        "OPENMSX_HOME": str(home),
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
    }
    command = [str(OPENMSX), "-machine", machine, "-cart", str(ROM), "-script", str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    if not result.exists():
        pytest.fail(f"openMSX wrote no results (exit {done.returncode}):\n{done.stderr}")
    results: Results = {}
    for line in result.read_text().splitlines():
        label, name, value = line.split()
        results.setdefault(label, {})[name] = int(value)
    return results


@pytest.fixture(scope="module", params=["C-BIOS_MSX1", "C-BIOS_MSX2", "C-BIOS_MSX2+"])
def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Results:
    folder = tmp_path_factory.mktemp(request.param.replace("+", "plus"))
    results = run_session(request.param, folder)
    results["files"] = {
        name: (folder / name).stat().st_size if (folder / name).exists() else 0
        for name in ("title.png", "game.png")
    }
    return results


def test_boot_clears_the_work_area(session: Results) -> None:
    assert session["junk"] == {"state": 0x55, "item0": 0x55, "coins": 0x55}
    title = session["title"]
    assert title["coins"] == 0
    assert [title[f"item{i}"] for i in range(8)] == [0] * 8


def test_title_screen_is_not_in_game(session: Results) -> None:
    assert session["title"]["state"] == 0
    assert session["title"]["press"] == ord("P")  # "PRESS SPACE TO START"
    assert session["title_keys"]["state"] == 0


def test_space_starts_a_game(session: Results) -> None:
    started = session["started"]
    assert started["state"] == 1
    assert (started["x"], started["y"]) == (16, 11)
    assert started["player"] == TILE_PLAYER


def test_walking_onto_an_item_puts_it_in_the_inventory(session: Results) -> None:
    item = session["item"]
    assert (item["x"], item["y"]) == (18, 11)
    assert item["item0"] == 1
    assert [item[f"item{i}"] for i in range(1, 8)] == [0] * 7
    assert item["slot0"] == TILE_ITEM0
    assert item["room0"] == TILE_PLAYER  # the item is gone from the room; the player stands there
    assert (item["tone_hi"], item["tone_lo"], item["volume"]) == (0, 127, 0)  # an 880 Hz beep


def test_a_coin_increments_the_counter(session: Results) -> None:
    coin = session["coin"]
    assert (coin["x"], coin["y"]) == (16, 13)
    assert coin["coins"] == 0x01
    assert (coin["coins_hi"], coin["coins_lo"]) == (ord("0"), ord("1"))
    assert (coin["tone_hi"], coin["tone_lo"], coin["volume"]) == (0, 63, 0)  # 1760 Hz


def test_spikes_take_an_item_and_send_the_player_back(session: Results) -> None:
    spikes = session["spikes"]
    assert spikes["item0"] == 0
    assert (spikes["x"], spikes["y"]) == (16, 11)
    assert spikes["coins"] == 0x01
    assert spikes["slot0"] == TILE_EMPTY_SLOT
    assert spikes["room0"] == TILE_ITEM0  # the lost item lies in the room again
    assert (spikes["tone_hi"], spikes["tone_lo"], spikes["volume"]) == (1, 0xFC, 0)  # 220 Hz


def test_bytes_written_from_outside_show_on_screen(session: Results) -> None:
    remote = session["remote"]
    assert remote["item3"] == 1 and remote["coins"] == 0x42  # the game left them alone
    assert remote["state"] == 1
    assert remote["slot3"] == TILE_ITEM0 + 3
    assert remote["room3"] == ord(" ")  # held by someone: no longer in the room
    assert (remote["coins_hi"], remote["coins_lo"]) == (ord("4"), ord("2"))


def test_a_full_bag_is_cheered(session: Results) -> None:
    assert session["walk"]["message"] == ord(" ")
    full = session["full"]
    assert [full[f"item{i}"] for i in range(8)] == [1] * 8
    assert full["message"] == ord("A")  # "ALL ITEMS FOUND"


def test_shared_bytes_are_written_only_when_they_change(session: Results) -> None:
    assert session["idle"]["writes"] == 0
    walk = session["walk"]
    assert (walk["x"], walk["y"]) == (21, 12)
    assert walk["item0"] == 1 and walk["coins"] == 0x43
    assert walk["writes"] == 2  # item 0 picked up again, one coin


def test_screenshots_were_taken(session: Results) -> None:
    assert session["files"]["title.png"] > 1000
    assert session["files"]["game.png"] > 1000


def test_committed_rom_matches_its_source(tmp_path: Path) -> None:
    pasmo = shutil.which("pasmo")
    if pasmo is None:
        pytest.skip("pasmo is not installed: cannot check games/demo.rom against games/demo.asm")
    built = tmp_path / "demo.rom"
    subprocess.run([pasmo, "--bin", str(ASM), str(built)], check=True, timeout=60)
    assert ROM.stat().st_size == 16384
    assert built.read_bytes() == ROM.read_bytes(), "games/demo.rom is stale: run scripts/build-demo"
