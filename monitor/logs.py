"""structlog setup: JSON lines when stdout is not a terminal, readable columns when it is."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO

import structlog


def redactor(secrets: Iterable[str]) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """A processor that replaces any secret value found in a log field with `[redacted]`.

    The code never logs secrets on purpose; this is the second wall, for a URL or an upstream
    error message that happens to carry one.
    """
    values = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not values:
            return event
        for key, value in event.items():
            if isinstance(value, str):
                for secret in values:
                    if secret in value:
                        value = value.replace(secret, "[redacted]")
                event[key] = value
        return event

    return redact


def configure_logging(
    stream: TextIO | None = None, json: bool | None = None, secrets: Iterable[str] = (), level: int = logging.INFO
) -> None:
    """Configure structlog for the process (the CLI calls this once, before anything logs)."""
    stream = stream or sys.stdout
    as_json = (not stream.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
