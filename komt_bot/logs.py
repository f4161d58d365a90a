"""Logging setup: plain text by default, one JSON object per line with ``log.format = "json"``.

Job events are logged on the ``komt_bot.jobs`` logger with their fields in ``extra`` (job id, platform, timings,
outcome). Nothing here logs a token, a signing secret or a person's message text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from komt_bot.settings import LogSettings

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a structured field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a log call passed with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines with the structured fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        return line + ("".join(f" {k}={v}" for k, v in fields.items()) if fields else "")


def setup_logging(settings: LogSettings) -> None:
    """Configure the root logger once for a command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("httpx", "urllib3", "asyncio", "discord.gateway", "slack_bolt", "slack_sdk"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
