"""Structured logging for every service.

Events are short sentences an operator understands, with key=value fields::

    log = get_logger("simulator")
    log.info("fleet started", taxis=500, police_units=40)

``text`` format (the default, pleasant in a terminal and in journald)::

    2026-11-22T10:04:05.123Z INFO  simulator  fleet started taxis=500 police_units=40

``json`` format puts the same event in one object per line for log shippers.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_FIELDS = "casatwin_fields"


class EventLogger:
    """A thin wrapper over :mod:`logging` whose methods take fields as keywords."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> str:
        return self._logger.name

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={_FIELDS: fields}, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the current exception's traceback (for bugs, not user mistakes)."""
        self._log(logging.ERROR, event, fields, exc_info=True)


def get_logger(component: str) -> EventLogger:
    return EventLogger(logging.getLogger(f"casatwin.{component}"))


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _component(record: logging.LogRecord) -> str:
    return record.name.removeprefix("casatwin.")


def _render_value(value: Any) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return f'"{text}"' if (" " in text or not text) else text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, {})
        parts = [
            _timestamp(record),
            f"{record.levelname:<5}",
            f"{_component(record):<10}",
            record.getMessage(),
        ]
        parts += [f"{k}={_render_value(v)}" for k, v in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "component": _component(record),
            "event": record.getMessage(),
            **getattr(record, _FIELDS, {}),
        }
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send every casatwin log event to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # third-party libraries: warnings and worse
    logging.getLogger("casatwin").setLevel(level.upper())
