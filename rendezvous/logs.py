"""Logging of `msxsync-rendezvous`: text lines, or one JSON object a line for log shippers.

A log call that passes `extra={"event": {...}}` (joins, leaves, refusals: `lobby_socket.note`)
has those fields in its JSON line as they are; text lines carry the same facts in the sentence.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the `event` fields a log call
    passed in `extra` (join, leave, refusal: its source, key, room and reason)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update(event)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, log_file: Path | None, log_format: str = "text") -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler()
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
