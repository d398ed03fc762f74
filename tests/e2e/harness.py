"""Runs `depmon run` as a subprocess for end-to-end tests, and reads what it serves and logs."""

from __future__ import annotations

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

DEPMON = [sys.executable, "-m", "monitor.cli"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


class DaemonProcess:
    """`depmon run` on a free loopback port, with its JSON log lines collected as they come."""

    def __init__(self, config: Path, state: Path, env: Mapping[str, str] | None = None) -> None:
        self.config, self.state = config, state
        self.env = {**os.environ, **(env or {})}
        self.env.pop("DEPMON_CONFIG", None)
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> DaemonProcess:
        """Start the daemon and wait until it says where it listens."""
        self.logs.clear()
        self.proc = subprocess.Popen(
            [*DEPMON, "run", "--config", str(self.config), "--state", str(self.state), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        started = wait_for(lambda: self.find("daemon_started"), timeout, "daemon_started")
        self.url = f"http://{started['listen']}"
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.raw.append(line)
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"event": "unparsed", "line": line})

    def find(self, event: str, **fields: Any) -> dict[str, Any] | None:
        """The first log line of `event` whose fields match."""
        for entry in list(self.logs):
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                return entry
        return None

    def count(self, event: str, **fields: Any) -> int:
        """How many log lines of `event` match."""
        return sum(
            1
            for entry in list(self.logs)
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items())
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET one of the daemon's endpoints."""
        return httpx.get(self.url + path, timeout=5.0, **kwargs)

    def status(self) -> dict[str, Any]:
        """The /status document."""
        document: dict[str, Any] = self.get("/status").json()
        return document

    def dependency_state(self, dependency: str) -> str:
        """The state /status gives a dependency."""
        return str(self.status()["dependencies"][dependency]["state"])

    def signal(self, signum: int) -> None:
        """Send a signal to the daemon."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        """Make sure the process is gone and its pipe closed."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
