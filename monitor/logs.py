"""Logging: one redactor for everything the process writes, structlog for every log line.

    Redactor(secrets)              the secrets the process knows; `add` those learned at run time
    configure_logging(stream, ...) structlog events, stdlib records (asyncio, hypercorn, httpx) and
                                   uncaught tracebacks, all through the redactor, JSON lines when
                                   the stream is not a terminal, readable columns when it is

The code never logs a secret on purpose; the redactor is the second wall, for a URL, an upstream
error message or a traceback that happens to carry one. It is built from the config's secrets
(`Config.secret_values()`) and told every secret learned later: bearer tokens the oauth2 probes
obtain (`TokenCache(on_secret=redactor.add)`), the secrets of a reloaded config
(`Daemon(on_secrets=redactor.update)`).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import quote

import structlog

__all__ = ["REDACTED", "Redactor", "configure_logging"]

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words and numbers
_PLAIN = (int, float, bool, type(None))
_QUIET_LOGGERS = ("httpx", "httpcore", "httpx2", "aiohttp")  # one INFO line per request: noise, not events


class Redactor:
    """The secrets the process knows, and the one place that takes them out of text.

    `scrub(text)` replaces every known secret (and its URL-encoded form) with `[redacted]`;
    `scrub_value` does it through nested dicts, lists, tuples and sets, and through the repr of
    any other object that would carry one. Called as a structlog processor it scrubs every
    field of an event, the rendered traceback included. Safe to `add` to from any thread.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.update(secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"

    def add(self, secret: str) -> None:
        """Learn one secret (e.g. a bearer token just issued); too short or known ones change nothing."""
        self.update((secret,))

    def update(self, secrets: Iterable[str]) -> None:
        """Learn several secrets at once (e.g. those of a reloaded config)."""
        forms = {form for s in secrets if len(s) >= MIN_SECRET_LENGTH for form in (s, quote(s, safe=""))}
        with self._lock:
            if forms <= self._secrets:
                return
            self._secrets = self._secrets | forms
            # Longest first: a secret that contains another is replaced whole.
            alternatives = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def scrub(self, text: str) -> str:
        """`text` with every known secret replaced by `[redacted]`."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def scrub_value(self, value: Any) -> Any:
        """`value` with secrets scrubbed from its strings, through containers; other objects whole
        unless their repr carries a secret, in which case the scrubbed repr replaces them."""
        if self._pattern is None or isinstance(value, _PLAIN):
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_value(k): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            items = [self.scrub_value(item) for item in value]
            return items if isinstance(value, list) else tuple(items)
        text = repr(value)
        scrubbed = self.scrub(text)
        return value if scrubbed == text else scrubbed

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """The structlog processor: every field of the event, scrubbed (after format_exc_info)."""
        if self._pattern is not None:
            for key, value in event.items():
                event[key] = self.scrub_value(value)
        return event


class _RootHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler that configure_logging installs (and replaces on a second call)."""


def configure_logging(
    stream: TextIO | None = None,
    json: bool | None = None,
    secrets: Iterable[str] = (),
    level: int = logging.INFO,
    *,
    redactor: Redactor | None = None,
) -> Redactor:
    """Configure logging for the process (the CLI calls this once, before anything logs).

    structlog events, records of the standard library's loggers and uncaught exceptions are all
    rendered the same way, through `redactor` (built from `secrets` when not given), which is
    returned so that secrets learned later can be added to it.
    """
    stream = stream or sys.stdout
    if redactor is None:
        redactor = Redactor()
    redactor.update(secrets)
    as_json = (not stream.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # WriteLogger writes each line and its newline in one call: lines from several threads never interleave.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(stream, level, redactor, renderer, timestamper)
    _install_excepthooks()
    return redactor


def _route_stdlib_logging(
    stream: TextIO,
    level: int,
    redactor: Redactor,
    renderer: structlog.types.Processor,
    timestamper: structlog.types.Processor,
) -> None:
    """Records of stdlib loggers (asyncio's "Task exception was never retrieved", hypercorn, ...)
    become structlog events on the same stream: redacted, JSON in production."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = _RootHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RootHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None, where: str
) -> None:
    structlog.get_logger("depmon").critical("uncaught_exception", where=where, exc_info=(exc_type, exc, traceback))


def _excepthook(exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, traceback)
        return
    _log_uncaught(exc_type, exc, traceback, "main")


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    where = f"thread {args.thread.name}" if args.thread is not None else "thread"
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, where)


def _install_excepthooks() -> None:
    """An uncaught traceback is logged as an event, redacted, not printed raw to stderr."""
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
