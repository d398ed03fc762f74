"""`depmon silence`: no page for a dependency for a while (SPEC 10.2).

    depmon silence DEPENDENCY --for DURATION --reason TEXT   add one (at most 90 days); prints its id and end
    depmon silence --list [--json]                            the silences in force
    depmon silence --expire ID                                end one now

Silences live in the state store, so the running daemon sees a new one within a second, without
a reload: its pager reads them once a second, pages nobody for a silenced dependency, and pages
a dependency still down when its silence ends. A silence that starts or ends during an open
incident goes into that incident's timeline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from monitor.config import Config, format_duration
from monitor.store import SqlStore, StoreError, connect, redacted_url
from monitor.text import duration_argument, iso_utc, utc

__all__ = ["run_silence"]

EXIT_OK, EXIT_USAGE = 0, 2
LARGEST_ID = 2**63 - 1  # the store's ids are 64-bit signed integers (SQLite INTEGER, PostgreSQL BIGINT)


def run_silence(
    config: Config,
    state_path: str | None,
    dependency: str | None,
    duration: str | None,
    reason: str | None,
    list_them: bool,
    expire: int | None,
    out: TextIO,
    err: TextIO,
    clock: Callable[[], float] = time.time,
    as_json: bool = False,
) -> int:
    """Carry out one `depmon silence` call; returns the exit status (2 for bad input).

    `as_json` (with `list_them` only): `{"silences": [{"id", "dependency", "created_at",
    "ends_at", "reason"}]}`, times in ISO 8601 UTC.

    Silences live where the daemon's state lives: `--state` (a SQLite file), else the config's
    `monitor.state_url` (the replicas' PostgreSQL), else its `monitor.state_path`.
    """
    url = config.monitor.state_url
    path = _State(
        state_path or config.monitor.state_path,
        None if state_path or url is None else url.get_secret_value(),
        config.monitor.environment,
    )
    now = clock()
    if as_json and not list_them:
        print("depmon silence: --json: only with --list", file=err)
        return EXIT_USAGE
    try:
        if list_them:
            return _list(path, now, out, as_json)
        if expire is not None and not 1 <= expire <= LARGEST_ID:
            print(f"depmon silence: --expire: must be a silence id, 1 to {LARGEST_ID} (got {expire})", file=err)
            return EXIT_USAGE
        if expire is not None:
            return _expire(path, expire, now, out, err)
        return _add(config, path, dependency, duration, reason, now, out, err)
    except StoreError as exc:
        print(f"depmon silence: {exc}", file=err)
        return EXIT_USAGE


@dataclass(frozen=True, slots=True)
class _State:
    """Where the silences are: a SQLite file, or the replicas' database when `url` is set."""

    path: str
    url: str | None
    environment: str  # only its silences: environments may share a database (SPEC 11.4)

    def exists(self) -> bool:
        return self.url is not None or Path(self.path).exists()

    def open(self) -> SqlStore:
        if self.url is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return connect(self.url, self.path, self.environment)

    def __str__(self) -> str:
        return self.path if self.url is None else redacted_url(self.url)


def _add(
    config: Config,
    path: _State,
    dependency: str | None,
    duration: str | None,
    reason: str | None,
    now: float,
    out: TextIO,
    err: TextIO,
) -> int:
    if dependency is None or duration is None or not reason:
        print("depmon silence: give DEPENDENCY --for DURATION --reason TEXT, or --list, or --expire ID", file=err)
        return EXIT_USAGE
    if dependency not in config.dependencies:
        known = ", ".join(sorted(config.dependencies))
        print(f"depmon silence: unknown dependency {dependency!r} (known: {known})", file=err)
        return EXIT_USAGE
    try:
        seconds = duration_argument("--for", duration)
    except ValueError as exc:
        print(f"depmon silence: {exc}", file=err)
        return EXIT_USAGE
    with path.open() as store:
        silence_id = store.add_silence(dependency, now, now + seconds, reason)
    name = config.dependencies[dependency].name
    print(
        f"silence {silence_id}: no page for {name} for {format_duration(seconds)}, until {utc(now + seconds)} "
        f"(reason: {reason}); end it with `depmon silence --expire {silence_id}`",
        file=out,
    )
    return EXIT_OK


def _list(path: _State, now: float, out: TextIO, as_json: bool) -> int:
    active = []
    if path.exists():
        with path.open() as store:
            active = store.silences(active_at=now)
    if as_json:
        silences = [
            {
                "id": s.id,
                "dependency": s.dependency,
                "created_at": iso_utc(s.created_at),
                "ends_at": iso_utc(s.ends_at),
                "reason": s.reason,
            }
            for s in active
        ]
        json.dump({"silences": silences}, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return EXIT_OK
    if not active:
        print("no silence in force", file=out)
    for s in active:
        print(f"{s.id}\t{s.dependency}\tuntil {utc(s.ends_at)}\t{s.reason}", file=out)
    return EXIT_OK


def _expire(path: _State, silence_id: int, now: float, out: TextIO, err: TextIO) -> int:
    if not path.exists():
        print(f"depmon silence: {path}: no state file, so no silence {silence_id}", file=err)
        return EXIT_USAGE
    with path.open() as store:
        try:
            store.expire_silence(silence_id, now)
        except KeyError:
            print(f"depmon silence: no silence with id {silence_id}", file=err)
            return EXIT_USAGE
    print(f"silence {silence_id} ended", file=out)
    return EXIT_OK
