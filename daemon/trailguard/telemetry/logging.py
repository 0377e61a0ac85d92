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
from structlog.typing import FilteringBoundLogger

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


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger carrying ``logger_name=name``.

    Lazy: modules create their logger at import time, before :func:`configure_logging` runs, so
    the logger must pick up the configuration when it logs, not when it is created.
    """
    logger: FilteringBoundLogger = structlog.wrap_logger(None, logger_name=name)
    return logger
