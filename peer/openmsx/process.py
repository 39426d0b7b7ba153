"""Where openMSX comes from: the command line and environment of a child, or a running one's socket.

Pure functions of their arguments (plus, for `find_socket`, a look at the socket folder), so the
link stays small and these are easy to check.
"""

from __future__ import annotations

import ctypes
import getpass
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from peer.openmsx.control import OpenMSXError

DEFAULT_MACHINE = "C-BIOS_MSX2+"
# SDL's dummy drivers: no window and no sound. On openMSX 18 the SDL renderer still draws into
# nothing there, which keeps openMSX servicing commands every frame; from 20 on the headless
# renderer is none, which needs no video driver at all (`peer.core.emulator.openmsx_versions`).
HEADLESS_ENV = {"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything needed to start one openMSX child."""

    home: Path
    machine: str = DEFAULT_MACHINE
    cartridge: Path | None = None
    romtype: str | None = None
    openmsx: str = "openmsx"
    scripts: tuple[Path, ...] = ()
    headless: bool = True
    extra_args: tuple[str, ...] = ()
    kernel_tie: bool = False
    """Ask Linux to signal openMSX when this process dies (`die_with_parent`)."""
    tether: bool = True
    """Tie openMSX to this process over loopback (`peer.openmsx.tether`)."""

    def argv(self) -> list[str]:
        args = [self.openmsx, "-machine", self.machine, "-control", "stdio"]
        if self.cartridge is not None:
            args += ["-cart", str(self.cartridge)]
            if self.romtype:
                args += ["-romtype", self.romtype]
        for script in self.scripts:
            args += ["-script", str(script)]
        return [*args, *self.extra_args]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The user's environment, with this instance's own OPENMSX_HOME (and SDL dummies)."""
        env = dict(base)
        env["OPENMSX_HOME"] = str(self.home)
        if self.headless:
            env.update(HEADLESS_ENV)
        return env


def socket_folder(env: Mapping[str, str]) -> Path:
    """Where openMSX puts its control sockets: ``$TMPDIR/openmsx-<user>``; on Windows the
    system's temporary folder and the user ``default`` (openMSX's `CliServer`)."""
    if sys.platform == "win32":
        temp = env.get("TMP") or env.get("TEMP") or tempfile.gettempdir()
        return Path(temp) / "openmsx-default"
    return Path(env.get("TMPDIR") or "/tmp") / f"openmsx-{getpass.getuser()}"


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        return _alive_on_windows(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive_on_windows(pid: int) -> bool:
    """(os.kill(pid, 0) would send Ctrl-C there.) A process that exists and has not ended."""
    if sys.platform != "win32":
        raise NotImplementedError
    synchronize, wait_timeout = 0x00100000, 0x102
    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return False
    try:
        return bool(kernel32.WaitForSingleObject(handle, 0) == wait_timeout)
    finally:
        kernel32.CloseHandle(handle)


def _socket_pids(folder: Path) -> Iterable[int]:
    for path in folder.glob("socket.*"):
        suffix = path.name.removeprefix("socket.")
        if suffix.isdigit():
            yield int(suffix)


def find_socket(pid: int | None, env: Mapping[str, str]) -> tuple[Path, int]:
    """The control socket of openMSX PID, or of the only running openMSX when PID is None."""
    folder = socket_folder(env)
    if pid is not None:
        path = folder / f"socket.{pid}"
        if not path.exists() or not _alive(pid):
            raise OpenMSXError(f"no running openMSX with pid {pid} (no live {path})")
        return path, pid
    live = sorted(p for p in _socket_pids(folder) if _alive(p))
    if not live:
        raise OpenMSXError(f"no running openMSX found (no live socket in {folder})")
    if len(live) > 1:
        listed = ", ".join(map(str, live))
        raise OpenMSXError(f"several openMSX are running (pids {listed}); say which one to use")
    return folder / f"socket.{live[0]}", live[0]


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM openMSX when msxsync dies (even by SIGKILL),
    so a crashed peer never leaves an orphaned emulator behind. Elsewhere a no-op; the tether
    (`peer.openmsx.tether`) does the same on every system."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
