"""Fixtures shared by every test package."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
import trustme

from monitor.sim.fake_pagerduty import FakePagerDuty
from tests.helpers import StartPagerDuty

if TYPE_CHECKING:
    from tests.postgres_server import PostgresServer


_LEVEL_ORDER = {"e2e": 0, "integration": 1, "unit": 2}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the daemon-running (e2e) tests first, then integration, then unit, each in collection order:
    under xdist the long tests start at once and the many short ones fill the workers at the end,
    instead of one long test running alone while the other workers idle."""
    unmarked = [item.nodeid for item in items if not any(m.name in _LEVEL_ORDER for m in item.iter_markers())]
    if unmarked:  # a new test module says its level (pytestmark), so `pytest -m unit` keeps meaning something
        raise pytest.UsageError(f"tests without a level marker (unit, integration, e2e): {unmarked[:5]}")
    items.sort(key=lambda item: min(_LEVEL_ORDER[m.name] for m in item.iter_markers() if m.name in _LEVEL_ORDER))


@pytest.fixture
def anyio_backend() -> str:
    """anyio's pytest plugin runs async tests on asyncio only: the daemon runs on asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """A test that runs the CLI in-process configures structlog onto its own captured stream;
    put the defaults back so later tests do not log into a closed file."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _collector_thresholds() -> Iterator[None]:
    """A daemon run in-process tunes the garbage collector (`daemon.tune_collector`): put it back."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


# -- a throwaway PostgreSQL (tests/postgres_server.py) ------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session: its own data directory and port, removed at the end.
    Skips (with the reason) only when the server binaries are absent, and fails instead with
    DEPMON_REQUIRE_TOOLS=1 (as the deploy tests' tools do); a server that does not start is an
    error that carries the server log's tail."""
    from tests.postgres_server import PostgresServer

    found, reason = PostgresServer.available()
    if not found:
        if os.environ.get("DEPMON_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + " (DEPMON_REQUIRE_TOOLS=1 makes this a failure)")
        pytest.skip(reason)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test (named after it) on the session's server; dropped afterwards."""
    import psycopg

    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{slug}_{secrets.token_hex(4)}"
    yield postgres_server.create_database(name)
    with contextlib.suppress(psycopg.Error):  # best effort: the server goes at the end of the session anyway
        postgres_server.drop_database(name)


# -- a loopback fake of PagerDuty (monitor/sim/fake_pagerduty.py) -----------------------------------


@pytest.fixture
def start_pagerduty() -> Iterator[StartPagerDuty]:
    """Starts a loopback fake of PagerDuty's Events API and REST API: `start_pagerduty(services=...,
    **options)` passes `options` to FakePagerDuty and makes each of `services` (ids, or id -> name)
    known; every fake it started is stopped after the test."""
    with contextlib.ExitStack() as started:

        def start(*, services: Iterable[str] | dict[str, str] = (), **options: Any) -> FakePagerDuty:
            fake = started.enter_context(FakePagerDuty(**options))
            names = services if isinstance(services, dict) else dict.fromkeys(services)
            for service, name in names.items():
                fake.add_service(service, name)
            return fake

        yield start


@pytest.fixture
def pagerduty(start_pagerduty: StartPagerDuty) -> FakePagerDuty:
    """A loopback fake of PagerDuty (Events API and REST), with its defaults."""
    return start_pagerduty()


# -- a throwaway certificate authority, for loopback TLS servers (probes, PagerDuty, Slack) ----------


@pytest.fixture
def ca() -> trustme.CA:
    """A throwaway certificate authority for loopback TLS servers."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    """The path of `ca`'s certificate as a PEM file (a probe's `ca_file`)."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)
