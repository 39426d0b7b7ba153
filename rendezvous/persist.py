"""The reserved room names across a restart: one JSON file in the server's state folder.

Owns reading and writing `reservations.json` (the pure rules and the checks of every field are
`rendezvous.reservations`). The server writes it when it stops (after SIGTERM has told every client
to reconnect, so every room is empty or about to be) and reads it at start: the members who come
back within the hold find their room's name, password and bans waiting, and a stranger who was
quicker is refused `room_reserved` (issue 29, F4).

The file holds password hashes (argon2id, as the lobby keeps them), so it is written 0600, and
atomically: a temporary file in the same folder, flushed to disk, then renamed over the old one,
so a crash mid-write leaves the previous file or the new one, never half of one. A file that is
too large, not JSON or wrong in any field is refused whole with one log line, and the server starts
with no reserved names rather than not at all; so does one that is not a regular file (a FIFO,
a device, a symbolic link), which is never opened in a way that could wait.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
import time
from pathlib import Path

from rendezvous.reservations import Reservations
from rendezvous.state import log

FILE_NAME = "reservations.json"
MAX_FILE = 32 * 1024 * 1024  # 4,096 reservations of 64 past members and 256 bans fit with room


def reservations_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def save_reservations(reservations: Reservations, state_dir: Path, now: float) -> Path:
    """Write RESERVATIONS (monotonic NOW) to the state folder, atomically; OSError if it cannot."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = reservations_path(state_dir)
    data = {**reservations.dump(now), "written_at": time.time()}
    descriptor, temporary = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=state_dir)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(data, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def load_reservations(reservations: Reservations, state_dir: Path, now: float) -> int:
    """Hold what the state folder's file says; how many names. A missing file holds nothing; a
    bad one is refused with a log line (and nothing from it held)."""
    path = reservations_path(state_dir)
    try:
        raw = _read_regular(path, MAX_FILE + 1)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.error("cannot read %s (%s): starting with no reserved room names", path, exc.strerror or exc)
        return 0
    try:
        if len(raw) > MAX_FILE:
            raise ValueError(f"larger than {MAX_FILE} bytes")
        data = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
        written_at = data.get("written_at") if isinstance(data, dict) else None
        if not isinstance(written_at, int | float) or isinstance(written_at, bool):
            raise ValueError("'written_at' is not a time")
        staged = Reservations(reservations.limits)
        staged.load(data, now, elapsed=time.time() - written_at)
    except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        log.error("refused %s (%s): starting with no reserved room names", path, str(exc)[:200])
        return 0
    for name in staged.names():
        reserved = staged.get(name)
        if reserved is not None:
            reservations.hold(reserved)
    return len(staged)


def _read_regular(path: Path, limit: int) -> bytes:
    """At most LIMIT bytes of PATH, only if it is a regular file and not a symbolic link:
    opening a FIFO put there blocked the server's start for ever (issue 29 round three, item 7),
    and a link could make it read what the state folder does not own. OSError otherwise."""
    flags = os.O_RDONLY
    for name in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC"):  # (POSIX: not all exist on Windows)
        flags |= getattr(os, name, 0)
    descriptor = os.open(path, flags)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return file.read(limit)


def _not_json(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
