"""Logging setup: plain text by default, one JSON object per line with ``log.format = "json"``.

Job events are logged on the ``komt_bot.jobs`` logger with their fields in ``extra`` (job id, platform, timings,
outcome), so each event is one line a log system can parse: ``key=value`` pairs after the message in text, keys of
the object in JSON.

Two safety nets sit in both formatters, whatever a caller passes:

* secrets are masked in the message, the fields and tracebacks: Slack tokens (``xoxb-``, ``xapp-``, ...), Discord
  bot tokens, ``Bearer``/``Bot`` authorization values and the password of a URL such as ``redis://:pw@host``;
* below DEBUG, a field that carries what a person wrote or the model answered (``text``, ``question``,
  ``prompt``, ...) is replaced by its length.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from komt_bot.settings import LogSettings

JOB_LOGGER = "komt_bot.jobs"
MASK = "**********"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a structured field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
CONTENT_FIELDS = frozenset({"text", "question", "prompt", "answer", "conversation", "content", "request", "body"})
_SECRET_PATTERNS = (
    re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+"),  # Slack bot/user/app-level tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]+"),
    re.compile(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),  # Discord bot token
    re.compile(r"(?<=\bBearer )[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?<=\bBot )[A-Za-z0-9._~+/=-]{20,}"),
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"),  # user:password@ in a URL
)


def scrub(text: str) -> str:
    """``text`` with anything that looks like a token, secret or URL password masked."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a log call passed with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


def safe_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields with secrets masked and, below DEBUG, message contents reduced to a length."""
    fields: dict[str, Any] = {}
    for key, value in record_fields(record).items():
        if key in CONTENT_FIELDS and record.levelno > logging.DEBUG:
            fields[key] = f"<{len(str(value))} chars>"
        else:
            fields[key] = _safe_value(value)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            **safe_fields(record),
        }
        if record.exc_info:
            data["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False, default=str)


def _text_value(value: Any) -> str:
    text = str(value)
    needs_quotes = not text or any(c.isspace() or c in '="' for c in text)
    return json.dumps(text, ensure_ascii=False) if needs_quotes else text


class TextFormatter(logging.Formatter):
    """Readable lines with the structured fields appended as ``key=value`` (quoted when a value has spaces)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = scrub(super().format(record))
        fields = safe_fields(record)
        return line + "".join(f" {k}={_text_value(v)}" for k, v in fields.items())


def make_handler(settings: LogSettings, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (stderr) in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    return handler


def setup_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Configure the root logger once for a command."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(settings, stream)]
    root.setLevel(settings.level)
    # ContinuousBatchingLogger: transformers' batching manager logs its cache sizing at INFO on a handler of its own.
    for noisy in (
        "httpx",
        "urllib3",
        "asyncio",
        "discord.gateway",
        "slack_bolt",
        "slack_sdk",
        "ContinuousBatchingLogger",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # On CPU bitsandbytes warns that an optional kernel package is missing; NF4 works without it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
