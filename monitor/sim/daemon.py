"""`depmon run` as a subprocess, with its JSON log lines collected as they come.

The demo narrates a daemon this way and the end-to-end tests assert on one: both use
`DaemonProcess`. The daemon runs in a session of its own, so a Ctrl-C in the terminal reaches
the caller only, which then stops the daemon with SIGTERM as a service manager would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from monitor.proxies import PROXY_VARIABLES

LogEntry = dict[str, Any]


def simulation_environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a depmon subprocess in the simulated world, `env` over it.

    The simulated world is on loopback: this shell's proxy variables are not part of it (they
    would send the fake PagerDuty's traffic to a proxy that cannot reach it), unless `env` sets them.
    """
    inherited = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARIABLES}
    return {**inherited, **(env or {})}


def log_time(entry: LogEntry) -> float:
    """The UNIX time of a log line (its ISO `timestamp`), 0.0 when it has none."""
    from datetime import datetime

    stamp = entry.get("timestamp")
    if not isinstance(stamp, str):
        return 0.0
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return 0.0


class DaemonProcess:
    """`depmon run --config CONFIG --state STATE --listen LISTEN` and what it logs.

    `on_log` is called from the reader thread with every JSON log line (and `on_text` with any
    other output line), as they arrive. Close it with `stop()` (graceful) or `close()`.
    """

    def __init__(
        self,
        config: Path,
        state: Path,
        *,
        listen: str = "127.0.0.1:0",
        env: Mapping[str, str] | None = None,
        on_log: Callable[[LogEntry], None] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> None:
        self.config, self.state, self.listen = config, state, listen
        self.env = {k: v for k, v in simulation_environ(env).items() if k != "DEPMON_CONFIG"}
        self._on_log, self._on_text = on_log, on_text
        self._lock = threading.Lock()
        self._logs: list[LogEntry] = []
        self.raw: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._client = httpx.Client(timeout=5.0, trust_env=False)
        self.url = ""
        self.exit_status: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> DaemonProcess:
        """Start the daemon and wait until it logs where it listens.

        Raises RuntimeError when it exits first or stays silent for `timeout` seconds.
        """
        with self._lock:
            self._logs.clear()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor.entry",
                "run",
                "--config",
                str(self.config),
                "--state",
                str(self.state),
                "--listen",
                self.listen,
                "--log-format",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), name="daemon-logs", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            started = self.find("daemon_started")
            if started is not None:
                self.url = f"http://{started['listen']}"
                return self
            if self.proc.poll() is not None:
                self._reader.join(5)
                self.exit_status = self.proc.returncode
                raise RuntimeError(f"the daemon exited with status {self.exit_status}: {''.join(self.raw)[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not log daemon_started within {timeout}s")

    def signal(self, signum: int) -> None:
        """Send a signal to the daemon."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for the graceful stop; returns the exit status.

        Raises subprocess.TimeoutExpired when it takes longer than `timeout` (the daemon is then
        still running: `close()` kills it).
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.exit_status = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return self.exit_status

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        """Make sure the process is gone and its pipe and HTTP client are closed; safe to call twice."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if self._reader is not None:
                self._reader.join(5)
            if proc.stdout is not None:
                proc.stdout.close()
            self.exit_status = proc.returncode
        self._client.close()

    # -- logs ------------------------------------------------------------------------------------

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # the pipe closed under us at close()
            for line in proc.stdout:
                self.raw.append(line)
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                if not isinstance(entry, dict):
                    if self._on_text is not None and line.strip():
                        self._on_text(line.rstrip())
                    continue
                with self._lock:
                    self._logs.append(entry)
                if self._on_log is not None:
                    self._on_log(entry)

    @property
    def logs(self) -> list[LogEntry]:
        """Every JSON log line so far."""
        with self._lock:
            return list(self._logs)

    def matching(self, event: str, since: float = 0.0, **fields: Any) -> list[LogEntry]:
        """Log lines of `event` whose fields match, stamped at or after UNIX time `since`."""
        return [
            entry
            for entry in self.logs
            if entry.get("event") == event
            and all(entry.get(k) == v for k, v in fields.items())
            and (since == 0.0 or log_time(entry) >= since)
        ]

    def find(self, event: str, **fields: Any) -> LogEntry | None:
        """The first log line of `event` whose fields match."""
        found = self.matching(event, **fields)
        return found[0] if found else None

    def count(self, event: str, **fields: Any) -> int:
        """How many log lines of `event` match."""
        return len(self.matching(event, **fields))

    # -- endpoints -------------------------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET one of the daemon's endpoints."""
        return self._client.get(self.url + path, **kwargs)

    def status(self) -> dict[str, Any]:
        """The /status document."""
        document: dict[str, Any] = self.get("/status").json()
        return document

    def dependency_state(self, dependency: str) -> str:
        """The state /status gives a dependency."""
        return str(self.status()["dependencies"][dependency]["state"])
