"""Structured JSON logs with the current trace/span ids and the request id.

Prompts and responses are never logged unless content logging is switched on explicitly
(`--log-content`): code that wants to log them calls `log_content`, which is a no-op otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("grm_request_id", default="")
_content = {"enabled": False}

# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def request_id() -> str:
    return _request_id.get()


@contextlib.contextmanager
def request_scope(rid: str) -> Iterator[None]:
    """Tag every log line written inside (this task and tasks it starts) with `rid`."""
    token = _request_id.set(rid)
    try:
        yield
    finally:
        _request_id.reset(token)


def set_content_logging(enabled: bool) -> None:
    _content["enabled"] = bool(enabled)


def content_logging() -> bool:
    return _content["enabled"]


def log_content(logger: logging.Logger, what: str, text: object) -> None:
    """Log a prompt or a generation, only when content logging was switched on."""
    if _content["enabled"]:
        logger.info("%s: %s", what, text, extra={"content": True})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, ids, extras."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            out["service"] = self.service
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        rid = _request_id.get()
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value if isinstance(value, int | float | bool | str) else repr(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(fmt: str, service: str, *, content: bool = False) -> None:
    """Switch the root logger's handlers to JSON (`fmt == "json"`) and set content logging.

    `grm serve` configured the level and a handler already; only the format changes here.
    """
    set_content_logging(content)
    if fmt != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter(service))
