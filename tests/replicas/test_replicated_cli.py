"""The CLI commands that read or write state go where the daemon's state is: the replicas' PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from monitor.commands.silence import run_silence
from monitor.store import IncidentWrite, PostgresStore
from tests.helpers import config_from

pytestmark = pytest.mark.integration

CONFIG = """
monitor:
  environment: test
  state_url: "{url}"
  replica: a
dependencies:
  evss:
    name: EVSS
    probes:
      - {{name: health, kind: http, url: "https://evss.example.test/health"}}
"""


def test_a_silence_set_by_the_cli_is_in_the_replicas_database(tmp_path: Path, postgres_url: str) -> None:
    config = config_from(tmp_path, CONFIG.format(url=postgres_url))
    out, err = io.StringIO(), io.StringIO()
    status = run_silence(config, None, "evss", "1h", "EVSS deploy", False, None, out, err, clock=lambda: 1000.0)
    assert (status, err.getvalue()) == (0, "")
    with PostgresStore(postgres_url, environment="test") as store:
        [silence] = store.silences(active_at=1001.0)
    assert (silence.dependency, silence.ends_at, silence.reason) == ("evss", 4600.0, "EVSS deploy")
    assert not (tmp_path / "var").exists(), "no SQLite file is created when state_url is set"
    listing = io.StringIO()
    assert run_silence(config, None, None, None, None, True, None, listing, err, clock=lambda: 1001.0) == 0
    assert "evss" in listing.getvalue()


def test_postmortem_reads_the_replicas_database(tmp_path: Path, postgres_url: str) -> None:
    from monitor.commands.postmortem import print_postmortem

    config = config_from(tmp_path, CONFIG.format(url=postgres_url))
    with PostgresStore(postgres_url, environment="test") as store:
        store.apply(IncidentWrite("evss", "depmon/test/evss", 1000.0, "trigger", {"action": "trigger"}, summary="x"))
    out, err = io.StringIO(), io.StringIO()
    status = print_postmortem(config, "evss", None, None, out, err=err)
    assert status == 0, err.getvalue()
    assert "evss" in out.getvalue().lower()
