"""End-to-end test helpers: the daemon runner the demo uses, and a polling wait that fails the test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from monitor.sim.daemon import DaemonProcess

__all__ = ["DaemonProcess", "wait_for"]


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
