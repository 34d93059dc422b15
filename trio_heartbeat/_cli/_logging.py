"""The command line's log output: readable text, or JSON lines for pipelines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

__all__ = ["JsonFormatter", "setup_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
#: Fields the library puts on its records (``extra=``), copied into JSON lines
#: when present: which event, whose connection, why, and how long.
FIELDS = (
    "event", "peer", "client_id", "reason", "code", "detail", "by_peer",
    "interval", "silent", "duration", "pings", "old", "new", "network",
)  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with stable keys: ``time`` (UTC, ISO 8601),
    ``level``, ``logger``, ``pid``, ``event`` (``"log"`` for lines that are not
    one of the library's events), ``message``, the event's fields, and
    ``exception`` with its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for field in FIELDS[1:]:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
