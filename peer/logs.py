"""Where log records go: the log file gets everything at --log-level, the terminal stays quiet.

A player's terminal shows msxsync's own lines (joins, leaves, chat, items: `Terminal.say`, not
logging), msxsync's warnings and errors, and the status line. Library chatter (aiohttp's access
lines, aioice's ICE states, aiortc) and openMSX's own messages go to the log file only, unless
--log-level debug asks for everything on the terminal too.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

LEVELS = ("debug", "info", "warning", "error")
OWN = ("msxsync", "peer", "rendezvous", "games")
FILE_BYTES = 5_000_000  # one rotated copy: a long session's log stays bounded


def _ours(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] in OWN


class _Quiet(logging.Filter):
    """The terminal's share: msxsync's warnings and errors, other libraries' critical ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= (logging.WARNING if _ours(record) else logging.CRITICAL)


def configure(level: str, log_file: Path | None) -> str | None:
    """Set up the root logger; returns why the log file could not be opened, if it could not."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter("msxsync: %(levelname)s: %(message)s"))
    if level.lower() != "debug":
        terminal.addFilter(_Quiet())
    root.addHandler(terminal)
    if log_file is None:
        return None
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=FILE_BYTES, backupCount=1, encoding="utf-8"
        )
    except OSError as exc:
        return f"cannot write the log file {log_file} ({exc.strerror})"
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root.addHandler(handler)
    return None
