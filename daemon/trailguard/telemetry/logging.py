"""structlog set-up: JSON lines for machines, readable lines on a terminal.

Every notable event has one stable event name (``replay.file_failed``, ``config.invalid`` ...);
its details go in key/value fields, never in the name, so dashboards and log queries can rely on
the names.  Nothing secret is ever logged: trailguard never handles credentials itself (botocore
does), and message bodies are logged only as their first few characters.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog for the process; safe to call again (live reload changes the level)."""
    out = stream if stream is not None else sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_console:
        processors.append(_printable_values)
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    else:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def printable(text: str) -> str:
    """``text`` with each character that is not printable (newline, escape, NUL, bidi override,
    zero-width ...) shown as its Python escape (``\\n``, ``\\x1b``, ``\\u202e``): one line,
    nothing a terminal acts on.  Values from records, keys and message bodies are the caller's."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


class _Quoted:
    """A string ConsoleRenderer shows through ``repr``: quoted, every character that is not
    printable escaped (structlog quotes only strings holding a space, quote, '=' or line end)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)


def _printable_values(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Console lines only (JSON escapes by itself): a string value holding an escape sequence,
    NUL, a bidi override ... is shown quoted and escaped, so it cannot act on the terminal or
    forge a line.  Tracebacks (``exc_info``) are rendered by ConsoleRenderer after this."""
    for key, value in event_dict.items():
        if isinstance(value, str) and key != "event" and not value.isprintable():
            event_dict[key] = _Quoted(value)
    return event_dict


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger carrying ``logger_name=name``.

    Lazy: modules create their logger at import time, before :func:`configure_logging` runs, so
    the logger must pick up the configuration when it logs, not when it is created.
    """
    logger: FilteringBoundLogger = structlog.wrap_logger(None, logger_name=name)
    return logger
