"""Machine output and log levels of the CLI (SPEC 11.5): `validate --json`, `silence --list --json`,
`maintenance --json`, `impact --format json`, `run --log-level`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.commands import cli
from monitor.commands.cli import main
from monitor.commands.impact_report import impact_map
from monitor.config import bundled_config_path, load_config
from monitor.sim.fake_pagerduty import FakePagerDuty

pytestmark = pytest.mark.integration

TOKEN = "tok-Secret-9f2c41d7e8"
EVSS_SERVICE = "PZKWB6Y"
EVSS_FEATURES = ["claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"]
UNKNOWN_KEY = (
    "monitor: {environment: unit, colour: blue}\n"
    "dependencies: {evss: {name: EVSS, probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]}}\n"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`depmon ARGV`: (exit status, stdout, stderr)."""
    status = main(list(argv), environ=environ or {})
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(autouse=True)
def _in_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root so that file names read `config/...` as a user sees them."""
    monkeypatch.chdir(bundled_config_path().parent)


class TestValidateJson:
    def test_valid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid config: exit 0 and the document says so, with its counts."""
        status, out, err = run(capsys, "validate", "--json", "--config", "config")
        assert (status, err) == (0, "")
        assert json.loads(out) == {"config": "config", "valid": True, "dependencies": 11, "features": 12, "issues": []}

    def test_invalid_lists_each_issue(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """An invalid config: exit 2, the issues as {file, path, message} on stdout, nothing on stderr."""
        path = tmp_path / "depmon.yaml"
        path.write_text(UNKNOWN_KEY)
        status, out, err = run(capsys, "validate", "--json", "--config", str(path))
        assert (status, err) == (2, "")
        assert json.loads(out) == {
            "config": str(path),
            "valid": False,
            "dependencies": None,
            "features": None,
            "issues": [{"file": str(path), "path": "monitor.colour", "message": "unknown key"}],
        }

    def test_strict_issues_too(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With --strict, the strict issues are the document's issues: exit 2, in config order."""
        environ = {"VA_PROFILE_URL": "https://vaprofile.example.va.gov"}  # not the integration host
        status, out, _ = run(capsys, "validate", "--strict", "--json", "--config", "config", environ=environ)
        document = json.loads(out)
        assert (status, document["valid"], document["dependencies"]) == (2, False, 11)
        assert [(i["file"], i["path"]) for i in document["issues"]] == [
            ("config/monitor.yaml", "pagerduty.routing_key"),
            ("config/monitor.yaml", "pagerduty.api_token"),
            ("config/dependencies.yaml", "dependencies.ssoe-oauth.probes[0].client_id"),
            ("config/dependencies.yaml", "dependencies.ssoe-oauth.probes[0].client_secret"),
            ("config/monitor.yaml", "pagerduty.from_email"),
            ("config/monitor.yaml", "pagerduty.requester_id"),
        ]
        assert document["issues"][0]["message"] == "required secret is empty: set PAGERDUTY_ROUTING_KEY (--strict)"


class TestSilenceListJson:
    def test_lists_the_silences_in_force(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """Each silence in force as {id, dependency, created_at, ends_at, reason}, times in ISO 8601 UTC."""
        state = str(tmp_path / "state.sqlite3")
        assert run(capsys, "silence", "--list", "--json", "--state", state)[:2] == (0, '{\n  "silences": []\n}\n')
        assert run(capsys, "silence", "evss", "--for", "1h", "--reason", "EVSS upgrade", "--state", state)[0] == 0
        status, out, err = run(capsys, "silence", "--list", "--json", "--state", state)
        (silence,) = json.loads(out)["silences"]
        assert (status, err) == (0, "")
        assert list(silence) == ["id", "dependency", "created_at", "ends_at", "reason"]
        assert (silence["id"], silence["dependency"], silence["reason"]) == (1, "evss", "EVSS upgrade")
        created, ends = (datetime.fromisoformat(silence[k].replace("Z", "+00:00")) for k in ("created_at", "ends_at"))
        assert ends - created == timedelta(hours=1)

    def test_json_without_list_is_exit_2(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """--json only goes with --list: anything else is exit 2, saying so."""
        status, out, err = run(capsys, "silence", "evss", "--for", "1h", "--reason", "x", "--json")
        assert (status, out, err) == (2, "", "depmon silence: --json: only with --list\n")


@pytest.fixture
def fake() -> Iterator[FakePagerDuty]:
    with FakePagerDuty(api_token=TOKEN) as running:
        for service in load_config(bundled_config_path(), {}).service_owners():
            running.add_service(service)
        yield running


class TestMaintenanceJson:
    def test_lists_windows(self, capsys: pytest.CaptureFixture[str], fake: FakePagerDuty) -> None:
        """An open window on EVSS's service: its times, services, the nodes and features it covers."""
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        fake.add_window([EVSS_SERVICE], start, start + timedelta(hours=1), "EVSS upgrade")
        environ = {"PAGERDUTY_API_URL": fake.api_url, "PAGERDUTY_API_TOKEN": TOKEN}
        status, out, err = run(capsys, "maintenance", "--json", environ=environ)
        document = json.loads(out)
        (window,) = document["windows"]
        assert (status, err, document["bad_service_ids"]) == (0, "", [])
        assert {k: v for k, v in window.items() if k != "id"} == {
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "open": True,
            "description": "EVSS upgrade",
            "services": [EVSS_SERVICE],
            "covers": ["evss"],
            "features": EVSS_FEATURES,
        }
        assert TOKEN not in out

    def test_unreadable_is_exit_1_with_stdout_empty(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a token: exit 1, the reason on stderr, no half document on stdout."""
        status, out, err = run(capsys, "maintenance", "--json")
        assert (status, out) == (1, "")
        assert err == "no PagerDuty API token (pagerduty.api_token): maintenance windows cannot be read\n"

    @pytest.mark.parametrize("action", ["open", "close"])
    def test_json_with_an_action_is_exit_2(self, capsys: pytest.CaptureFixture[str], action: str) -> None:
        """--json is for the list: with open or close, exit 2 saying so."""
        status, out, err = run(capsys, "maintenance", action, "evss", "--json")
        assert (status, out, err) == (2, "", f"depmon maintenance {action}: --json: only for the list (no action)\n")


class TestImpactJson:
    def test_bundled_entries(self, capsys: pytest.CaptureFixture[str]) -> None:
        """EVSS takes its four features down; ID.me degrades sign-in, the other credentials left."""
        status, out, _ = run(capsys, "impact", "--format", "json", "--config", "config")
        dependencies = json.loads(out)["dependencies"]
        assert status == 0
        assert dependencies["evss"] == {
            "name": "EVSS",
            "depends_on": ["ssoe-oauth"],
            "down": EVSS_FEATURES,
            "degraded": {},
        }
        assert dependencies["idme"] == {
            "name": "ID.me",
            "depends_on": [],
            "down": [],
            "degraded": {"authentication-credentials": ["mhv", "dslogon"]},
        }

    def test_same_facts_as_the_text(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Every dependency, in config order, with what `impact_map` (the text's source) says."""
        config = load_config(bundled_config_path(), {})
        dependencies: dict[str, Any] = json.loads(run(capsys, "impact", "--format", "json", "--config", "config")[1])[
            "dependencies"
        ]
        assert list(dependencies) == list(config.dependencies)
        for dep_id, impact in impact_map(config).items():
            assert dependencies[dep_id]["down"] == list(impact.down)
            assert dependencies[dep_id]["degraded"] == {f: list(left) for f, left in impact.degraded.items()}


class TestRunLogLevel:
    @pytest.fixture
    def levels(self, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        """The level `run` configures logging with; the daemon itself is not started."""
        seen: list[int] = []
        monkeypatch.setattr(cli, "configure_logging", lambda *args, level, **kwargs: seen.append(level))
        monkeypatch.setattr(cli, "_run", lambda *args: 0)
        return seen

    @pytest.mark.parametrize(
        ("given", "level"),
        [
            ([], logging.INFO),
            (["--log-level", "debug"], logging.DEBUG),
            (["--log-level", "info"], logging.INFO),
            (["--log-level", "warning"], logging.WARNING),
            (["--log-level", "error"], logging.ERROR),
        ],
    )
    def test_level_reaches_the_logging(self, levels: list[int], given: list[str], level: int) -> None:
        """`run --log-level NAME` configures that level; info without it."""
        assert main(["run", "--config", "config", *given], environ={}) == 0
        assert levels == [level]

    def test_unknown_level_is_exit_2(self, levels: list[int], capsys: pytest.CaptureFixture[str]) -> None:
        """Any other name: exit 2, argparse naming the argument and the choices; nothing configured."""
        with pytest.raises(SystemExit) as exited:
            main(["run", "--config", "config", "--log-level", "verbose"], environ={})
        assert exited.value.code == 2
        err = capsys.readouterr().err  # the choices' quoting varies with Python's version
        assert "depmon run: error: argument --log-level: invalid choice: 'verbose'" in err
        assert all(name in err.rsplit("choose from", 1)[1] for name in ("debug", "info", "warning", "error"))
        assert levels == []
