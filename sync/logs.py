"""Logging: structlog configured once, JSON lines off a terminal, redaction of secrets.

* :func:`configure_logging` sets the processors: context variables merged (bind per run with
  ``structlog.contextvars.bind_contextvars``), level and ISO timestamp added, exceptions
  rendered to text, then **redaction**, then the renderer (JSON lines when stderr is not a
  terminal, the console renderer on one; ``fmt`` forces either).
* Redaction replaces every registered secret value (:func:`register_secret`; the config
  registers its credentials when loaded) with ``***`` wherever it appears in an event, nested
  values and rendered exception text included, and masks whole values under keys that look like
  credentials (Authorization, apiKey, token, secret, password).
* Standard-library logging (alembic, uvicorn, APScheduler, httpx) goes through the same
  processors, redaction and renderer (structlog's ``ProcessorFormatter``): one format. httpx's
  per-request INFO lines are demoted to DEBUG (shown with ``-v``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

MASK = "***"
_SENSITIVE_KEY = re.compile(r"(authorization|api[-_]?key|token|secret|password|passwd|credential|cookie)", re.I)
# Credentials that can be recognised without being registered: bearer/basic headers, and
# credential-looking query parameters in URLs.
_INLINE = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + MASK),
    (re.compile(r"(?i)([?&](?:api[-_]?key|access_token|token|key)=)[^&\s'\"]+"), r"\1" + MASK),
]
_MIN_SECRET = 4  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Mask ``value`` wherever it appears in log output from now on."""
    global _pattern
    if not value or len(value) < _MIN_SECRET:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # Longest first, so a secret containing another is masked whole.
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def redact_text(text: str) -> str:
    """``text`` with registered secrets and inline credentials masked."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for regex, repl in _INLINE:
        text = regex.sub(repl, text)
    return text


def redact_value(value: Any, key: str | None = None) -> Any:
    """A value with secrets masked; everything under a credential-like key is masked whole."""
    if key is not None and _SENSITIVE_KEY.search(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact_text(str(value))


def redact_processor(logger: Any, method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secrets in every key of the event."""
    return {k: (v if k in ("level", "timestamp", "logger") else redact_value(v, k)) for k, v in event.items()}


class _RedactingFilter(logging.Filter):
    """Folds a standard-library record's arguments into its message and masks secrets there
    (the exception, rendered later by the formatter's chain, is masked by :func:`redact_processor`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


#: Libraries whose INFO lines are per-request chatter: shown only at DEBUG (``-v``).
_CHATTY = {"httpx": logging.INFO, "httpcore": logging.INFO, "uvicorn.access": logging.INFO}


class _DemoteChatter(logging.Filter):
    """Moves the INFO lines of :data:`_CHATTY` libraries (httpx's "HTTP Request: GET ...", one
    per call; uvicorn's access log) down to DEBUG, so the default log is not a request trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        top = record.name.split(".")[0]
        limit = _CHATTY.get(record.name, _CHATTY.get(top))
        if limit is not None and record.levelno <= limit:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class _StderrHandler(logging.StreamHandler[TextIO]):
    """A stream handler on the *current* sys.stderr."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _StderrLoggerFactory:
    """A PrintLogger on the *current* sys.stderr (tests swap it to capture output)."""

    def __call__(self, *args: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(sys.stderr)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure structlog (and stdlib logging) for the process. ``fmt``: ``auto`` (JSON
    unless stderr is a terminal), ``json`` or ``console``. ``secrets`` are registered for
    redaction. Calling it again reconfigures (tests do).

    Every library's records (alembic, apscheduler, httpx, uvicorn) go through the same
    processors and renderer as our own events (structlog's ``ProcessorFormatter`` on the root
    handler): one format, one redaction. httpx's per-request lines are DEBUG."""
    for secret in secrets:
        register_secret(secret)
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console, not {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    console = fmt == "console" or (fmt == "auto" and _is_tty(sys.stderr))
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=_is_tty(sys.stderr), exception_formatter=structlog.dev.plain_traceback)
        if console
        else structlog.processors.JSONRenderer(default=str)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # exceptions become text, so redaction sees them
        redact_processor,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.setLevel(numeric)
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setLevel(numeric)  # a line _DemoteChatter moved to DEBUG is dropped here below DEBUG
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _library_logger, renderer],
        )
    )
    root.addHandler(handler)
    for name in _CHATTY:  # on the loggers: their filters run before any handler's level check
        chatty = logging.getLogger(name)
        if not any(isinstance(f, _DemoteChatter) for f in chatty.filters):
            chatty.addFilter(_DemoteChatter())
    logging.getLogger("httpx").setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.INFO)
    logging.getLogger("httpcore").setLevel(logging.INFO)  # its DEBUG is a socket trace


def _library_logger(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A library record's logger name under the key our own events use (``logger_name``)."""
    if "logger" in event and "logger_name" not in event:
        event["logger_name"] = event.pop("logger")
    return event


#: Pass to ``uvicorn.Config`` / ``uvicorn.run`` as ``log_config``: None keeps uvicorn from
#: installing its own handlers (which do not propagate), so its records reach the root handler
#: configured here and share the one format.
UVICORN_LOG_CONFIG: None = None


def get_logger(name: str) -> Any:
    """A structlog logger bound with ``logger_name=name``."""
    return structlog.get_logger(name, logger_name=name)  # lazy: uses the configuration in force when used
