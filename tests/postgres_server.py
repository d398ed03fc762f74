"""A throwaway PostgreSQL server for tests: its own data directory, socket directory and port.

`PostgresServer().start()` runs initdb into a fresh temporary directory and starts `postgres` on a
free loopback port; `stop()` shuts it down and removes the directory. Nothing is left behind:

* `stop()` is idempotent and is also registered with atexit (a KeyboardInterrupt or an error that
  skips the fixture's teardown);
* a small watchdog process (this file run as a script, in its own session so Ctrl-C does not reach it) holds
  the read end of a pipe from this process: when this process ends without `stop()` (SIGKILL,
  SIGTERM, `os._exit`), the pipe closes and the watchdog shuts the server down and removes the
  directory.

PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user
(Debian's package creates it; else `nobody`) on a directory chowned to it.

Binaries are found with `pg_config --bindir`, else in the newest /usr/lib/postgresql/*/bin
(Debian's layout), else on PATH. `PostgresServer.available()` says whether they were found and, if
not, why: the only reason the fixtures skip.

psycopg is imported inside the methods that connect: conftest imports this module on every run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

SUPERUSER = "depmon"
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
UNPRIVILEGED_USERS = ("postgres", "nobody")
INSTALL_HINT = "`make test` run as root installs Debian's postgresql package (scripts/install-test-tools)"

# Small and fast: the data are thrown away, so nothing is made durable.
DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "16MB",
    "cluster_name": "depmon-test",  # in the processes' titles: `ps` tells them from a real cluster
}


class PostgresStartError(RuntimeError):
    """initdb or the server failed; the message carries the command's output or the server log's tail."""


@dataclass(frozen=True)
class Binaries:
    initdb: Path
    postgres: Path
    source: str  # how they were found, for messages


def _pair(bindir: Path) -> tuple[Path, Path] | None:
    initdb, postgres = bindir / "initdb", bindir / "postgres"
    if os.access(initdb, os.X_OK) and os.access(postgres, os.X_OK):
        return initdb, postgres
    return None


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_binaries(
    *, path: str | None = None, debian_glob: str = DEBIAN_GLOB, use_pg_config: bool = True
) -> tuple[Binaries | None, str]:
    """The server binaries and how they were found, or None and what was looked at."""
    looked = []
    pg_config = shutil.which("pg_config", path=path) if use_pg_config else None
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            looked.append(f"{pg_config} --bindir failed ({exc})")
        else:
            found = _pair(Path(out)) if out else None
            if found:
                return Binaries(*found, source=f"pg_config --bindir: {out}"), ""
            looked.append(f"pg_config --bindir gave {out or 'nothing'}, without initdb and postgres")
    else:
        looked.append("no pg_config")
    root, _, pattern = debian_glob.rpartition("/*/")
    candidates = sorted((p for p in Path(root).glob(f"*/{pattern}") if p.is_dir()), key=_version_key, reverse=True)
    for bindir in candidates:
        found = _pair(bindir)
        if found:
            return Binaries(*found, source=str(bindir)), ""
    looked.append(f"nothing in {debian_glob}")
    initdb, postgres = shutil.which("initdb", path=path), shutil.which("postgres", path=path)
    if initdb and postgres:
        return Binaries(Path(initdb), Path(postgres), source="PATH"), ""
    looked.append("initdb and postgres not both on PATH")
    return None, f"PostgreSQL server binaries not found ({'; '.join(looked)}); {INSTALL_HINT}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc; none where there is no /proc)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{entry.name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry.name))
    return found


def _kill(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _watchdog(base_dir: str) -> None:
    """`python postgres_server.py --watchdog BASE_DIR`, started before initdb with a pipe on stdin.

    Reads lines until EOF: the postmaster's pid (one line per start attempt; the last counts), and
    "stopped" once the owner has cleaned up. EOF without "stopped" means the owner died: shut the
    server down (SIGQUIT: immediate shutdown, which still releases shared memory; after 5 s SIGKILL
    to the postmaster and its children) and remove the directory."""
    lines = sys.stdin.read().split()
    if "stopped" in lines:
        return
    pids = [int(line) for line in lines if line.isdigit()]
    if pids:
        pid = pids[-1]
        _kill([pid], signal.SIGQUIT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            _kill([*_children(pid), pid], signal.SIGKILL)
    shutil.rmtree(base_dir, ignore_errors=True)


class PostgresServer:
    """One throwaway server. `start()`, then `url` / `create_database()`, then `stop()` (idempotent)."""

    def __init__(
        self,
        *,
        binaries: Binaries | None = None,
        settings: dict[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._binaries = binaries
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.port = 0
        self.base_dir: Path | None = None
        self.pid: int | None = None
        self.initdb_seconds = 0.0
        self.startup_seconds = 0.0  # from `postgres` started to the first accepted connection
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}

    @staticmethod
    def available() -> tuple[bool, str]:
        binaries, reason = find_binaries()
        return (True, f"PostgreSQL binaries: {binaries.source}") if binaries else (False, reason)

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "not started"
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base_dir is not None, "not started"
        return self.base_dir / "socket"

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None, "not started"
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        assert self.port, "not started"
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{quote(name, safe='')}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        if self._binaries is None:
            self._binaries, reason = find_binaries()
            if self._binaries is None:
                raise PostgresStartError(reason)
        atexit.register(self.stop)
        try:
            self._make_dirs()
            self._start_watchdog()
            self._initdb()
            for attempt in range(3):  # the free port can be taken before the server binds it
                self.port = free_port()
                if self._start_postgres(last_attempt=attempt == 2):
                    break
        except BaseException:  # KeyboardInterrupt included: never leave a server or a directory
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT, as `pg_ctl stop -m fast`), then immediate, then SIGKILL; remove the directory."""
        # Each step forgets its object only once done: a stop interrupted by a second Ctrl-C is redone by atexit,
        # and the watchdog is told "stopped" only when nothing is left.
        if self._proc is not None:
            _shut_down(self._proc)
            self._proc = None
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.write(b"stopped\n")
            with contextlib.suppress(OSError):
                watchdog.stdin.close()
            try:
                watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ----------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` (fresh, from template1) and return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name`, disconnecting whoever is still connected to it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- internals ----------------------------------------------------------------------------

    def _make_dirs(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="depmon-pg-"))
        self.socket_dir.mkdir(mode=0o700)
        self.log_path.touch()
        if os.geteuid() == 0:
            user = _unprivileged_user()
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)

    def _start_watchdog(self) -> None:
        assert self.base_dir is not None
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", __file__, "--watchdog", str(self.base_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is not None and self._watchdog.stdin is not None:
            self._watchdog.stdin.write(line.encode() + b"\n")
            self._watchdog.stdin.flush()

    def _initdb(self) -> None:
        assert self._binaries is not None
        assert self.base_dir is not None
        cmd = [
            str(self._binaries.initdb),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-locale",  # C collation: the same on every machine, whatever LANG is
            "--no-sync",
        ]
        began = time.monotonic()
        try:
            result = subprocess.run(
                cmd, cwd=self.base_dir, capture_output=True, text=True, timeout=120, env=_env(), **self._run_as
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresStartError(f"initdb did not finish in 120 s: {' '.join(cmd)}") from exc
        self.initdb_seconds = time.monotonic() - began
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise PostgresStartError(f"initdb failed (exit {result.returncode}): {' '.join(cmd)}\n{output}")

    def _start_postgres(self, *, last_attempt: bool) -> bool:
        """Start the server; True once it accepts connections, False if the port was taken (retry)."""
        assert self._binaries is not None
        cmd = [str(self._binaries.postgres), "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.socket_dir)]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # out of the terminal's process group: Ctrl-C is ours to handle
                env=_env(),
                **self._run_as,
            )
        self.pid = self._proc.pid
        self._tell_watchdog(str(self.pid))
        error = self._wait_ready(began)
        if error is None:
            self.startup_seconds = time.monotonic() - began
            return True
        _shut_down(self._proc)
        self._proc = None
        log_tail = _tail(self.log_path)
        if not last_attempt and "could not bind" in log_tail:
            return False
        raise PostgresStartError(f"PostgreSQL did not start: {error}\ncommand: {' '.join(cmd)}\nlog tail:\n{log_tail}")

    def _wait_ready(self, began: float) -> str | None:
        import psycopg

        assert self._proc is not None
        last_error = "no attempt"
        while time.monotonic() - began < self.start_timeout:
            code = self._proc.poll()
            if code is not None:
                return f"the server exited with code {code}"
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return None
            except psycopg.OperationalError as exc:
                last_error = str(exc).strip()
            time.sleep(0.02)
        return f"no connection after {self.start_timeout:.0f} s (last error: {last_error})"


def _shut_down(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (fast shutdown, as `pg_ctl stop -m fast`), SIGQUIT (immediate) after 10 s, SIGKILL to the
    postmaster and its children after 5 more (the children are not in its process group)."""
    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        _kill(_children(proc.pid), signal.SIGKILL)
        proc.kill()
        proc.wait()


def _unprivileged_user() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresStartError(
        f"running as root and none of the users {', '.join(UNPRIVILEGED_USERS)} exists"
        " (PostgreSQL refuses to run as root)"
    )


def _env() -> dict[str, str]:
    """The environment without PG* variables (PGDATA, PGPORT, ... would change what initdb and postgres do)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


if __name__ == "__main__" and sys.argv[1:2] == ["--watchdog"]:
    _watchdog(sys.argv[2])
