"""How the link starts openMSX and finds a running one (no openMSX needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from peer.openmsx import OpenMSXError
from peer.openmsx.process import LaunchSpec, find_socket, socket_folder
from tests.openmsx_builds import ROOT, Build


def test_launch_command_line_and_environment(tmp_path: Path) -> None:
    spec = LaunchSpec(
        home=tmp_path / "home",
        machine="C-BIOS_MSX1",
        cartridge=Path("game.rom"),
        romtype="KonamiSCC",
        scripts=(Path("a.tcl"), Path("b.tcl")),
        extra_args=("-ext", "debugdevice"),
    )
    assert spec.argv() == [
        "openmsx", "-machine", "C-BIOS_MSX1", "-control", "stdio", "-cart", "game.rom",
        "-romtype", "KonamiSCC", "-script", "a.tcl", "-script", "b.tcl", "-ext", "debugdevice",
    ]  # fmt: skip
    env = spec.env({"PATH": "/bin", "OPENMSX_HOME": "/elsewhere"})
    assert env == {
        "PATH": "/bin",
        "OPENMSX_HOME": str(tmp_path / "home"),
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
    }
    windowed = LaunchSpec(home=tmp_path, headless=False).env({"PATH": "/bin"})
    assert "SDL_VIDEODRIVER" not in windowed


def test_find_socket_picks_the_only_live_openmsx(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    folder = socket_folder(env)
    folder.mkdir()
    (folder / f"socket.{os.getpid()}").touch()  # a live pid: this test process
    (folder / "socket.999999999").touch()  # a stale socket left by a crashed openMSX
    assert find_socket(None, env) == (folder / f"socket.{os.getpid()}", os.getpid())
    assert find_socket(os.getpid(), env)[1] == os.getpid()
    with pytest.raises(OpenMSXError, match="no running openMSX with pid 999999999"):
        find_socket(999999999, env)


def test_find_socket_refuses_to_guess(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    folder = socket_folder(env)
    with pytest.raises(OpenMSXError, match="no running openMSX found"):
        find_socket(None, env)
    folder.mkdir()
    (folder / f"socket.{os.getpid()}").touch()
    (folder / f"socket.{os.getppid()}").touch()
    with pytest.raises(OpenMSXError, match="several openMSX are running"):
        find_socket(None, env)


@pytest.mark.openmsx
@pytest.mark.parametrize(
    ("kernel_tie", "tether"),
    [(True, True), (False, True), (False, False)],
    ids=["kernel-and-tether", "tether-alone", "neither"],
)
def test_openmsx_dies_with_a_killed_peer(
    tmp_path: Path, openmsx: Build, kernel_tie: bool, tether: bool
) -> None:
    """kill -9 of the program that launched openMSX must not leave an orphaned emulator: Linux's
    parent-death signal does it here, and the tether alone does it everywhere (macOS, Windows).
    With neither, openMSX plays on (so it is one of them that ends it, not its broken pipes)."""
    program = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from games.definition import Region
        from peer.openmsx import OpenMSXLink

        async def main():
            async with OpenMSXLink.launch(
                [Region(0xE000, 0xE00F)], home=Path({str(tmp_path)!r}), openmsx={openmsx.program!r},
                kernel_tie={kernel_tie!r}, tether={tether!r},
            ) as link:
                print(link.pid, flush=True)
                await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert parent.stdout is not None
    emulator = int(parent.stdout.readline())
    assert alive(emulator)
    parent.kill()
    parent.wait(timeout=10)
    started = time.monotonic()
    while time.monotonic() < started + (10 if tether or kernel_tie else 3) and alive(emulator):
        time.sleep(0.05)
    if not (tether or kernel_tie):
        assert alive(emulator), "openMSX ended with its peer with no tie at all"
        os.kill(emulator, signal.SIGKILL)
        return
    assert not alive(emulator), f"openMSX (pid {emulator}) outlived the killed peer by 10 s"
    took = time.monotonic() - started
    print(f"openMSX ended {took:.2f} s after its peer's kill -9 (kernel tie: {kernel_tie})")


def alive(pid: int) -> bool:
    """PID runs (an unreaped zombie has ended: it is its parent's, the killed peer's, to reap)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
