"""The helpers every test package shares: waiting for a condition (in a thread or on the event
loop), configs written from YAML text, and the schema documents the tests check against.

One home for each, so that a wait's deadline, a config's file name or a schema's location is
decided once; fixtures (a fake PagerDuty, a PostgreSQL server) are in tests/conftest.py.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import jsonschema

from monitor.config import Config, bundled_config_path, load_config
from monitor.sim.fake_pagerduty import FakePagerDuty

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "monitor" / "schemas"
# The project's shared folder (SPEC.md, PagerDuty's published OpenAPI documents), when it is beside
# the repository: a test may compare with it in addition to the repository's own copies.
SHARED = ROOT.parent / "shared"
PUBLISHED_PAGERDUTY = SHARED / "pagerduty"

T = TypeVar("T")

# The `start_pagerduty` fixture's type (tests/conftest.py): options and services in, a started fake out.
StartPagerDuty = Callable[..., FakePagerDuty]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` (from a test's thread) until it returns something truthy and return that;
    fail the test after `timeout` seconds. An HTTP error, a missing key or a bad value counts as
    not yet (a daemon still starting), and the last one is named in the failure."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        time.sleep(interval)


async def until(condition: Callable[[], T | Awaitable[T]], seconds: float = 10.0, interval: float = 0.005) -> T:
    """Poll `condition` (sync or async) on the event loop until it returns something truthy and
    return that; `TimeoutError` after `seconds` (anyio.fail_after)."""
    with anyio.fail_after(seconds):
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            await anyio.sleep(interval)


def write_config(directory: Path, text: str, name: str = "depmon.yaml") -> Path:
    """Write YAML `text` as `directory/name`; returns the path."""
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def config_from(directory: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    """The config YAML `text` loads to, written as `directory/depmon.yaml` (environment empty by default)."""
    return load_config(write_config(directory, text), environ={} if environ is None else environ)


def bundled_config(environ: Mapping[str, str] | None = None) -> Config:
    """The bundled VA configuration, loaded with `environ` (empty by default: every default applies)."""
    return load_config(bundled_config_path(), environ={} if environ is None else environ)


def repo_schema(name: str) -> Any:
    """The JSON schema `name` (events-v2.json, ...) from the repository's own copies in monitor/schemas."""
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def published_validator(name: str, pointer: str) -> jsonschema.protocols.Validator | None:
    """A validator for the schema at JSON `pointer` in PagerDuty's published OpenAPI document `name`
    (shared/pagerduty/ beside the repository); None when that folder is not on this machine."""
    path = PUBLISHED_PAGERDUTY / name
    if not path.is_file():
        return None
    document = _nullable_to_type(json.loads(path.read_text(encoding="utf-8")))
    # OpenAPI 3.0 schemas are draft 4 plus `nullable`; with draft 4 a $ref ignores its siblings,
    # so the whole document can serve as the root that #/components/... pointers resolve in.
    return jsonschema.Draft4Validator({**document, "$ref": pointer})


def _nullable_to_type(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_type(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_type(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        converted["type"] = [node["type"], "null"]
    return converted
