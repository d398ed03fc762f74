"""`depmon validate --strict`: an empty required secret fails the validation, naming its key and variable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from monitor.commands.cli import main
from monitor.commands.validate_strict import required_secret_issues
from monitor.config import Config, ConfigIssue, bundled_config_path
from tests.helpers import config_from

pytestmark = pytest.mark.unit

ROUTING_KEY = "0123456789abcdef0123456789abcdef"
SECRETS = {
    "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
    "PAGERDUTY_API_TOKEN": "u+token-of-the-rest-api",
    "SSOE_CLIENT_ID": "depmon-client-4711",
    "SSOE_CLIENT_SECRET": "hunter2-Client-Secret-0xC0FFEE",
}
MONITOR = "config/monitor.yaml"
DEPENDENCIES = "config/dependencies.yaml"

# the variable left empty -> the line `depmon validate --strict` prints for it (bundled config)
BUNDLED_LINES = {
    "PAGERDUTY_ROUTING_KEY": f"{MONITOR}: pagerduty.routing_key: required secret is empty: "
    "set PAGERDUTY_ROUTING_KEY (--strict)",
    "PAGERDUTY_API_TOKEN": f"{MONITOR}: pagerduty.api_token: required secret is empty: "
    "set PAGERDUTY_API_TOKEN (--strict)",
    "SSOE_CLIENT_ID": f"{DEPENDENCIES}: dependencies.ssoe-oauth.probes[0].client_id: required secret is empty: "
    "set SSOE_CLIENT_ID (--strict)",
    "SSOE_CLIENT_SECRET": f"{DEPENDENCIES}: dependencies.ssoe-oauth.probes[0].client_secret: "
    "required secret is empty: set SSOE_CLIENT_SECRET (--strict)",
}


def _strict(environ: Mapping[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    status = main(["validate", "--strict", "--config", "config"], environ=environ)
    captured = capsys.readouterr()
    return status, captured.err.splitlines(), captured.out


@pytest.fixture(autouse=True)
def _in_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root so that file names read `config/...` as a user sees them."""
    monkeypatch.chdir(bundled_config_path().parent)


class TestValidateStrict:
    @pytest.mark.parametrize(("variable", "line"), BUNDLED_LINES.items(), ids=list(BUNDLED_LINES))
    def test_one_empty_secret_fails_naming_key_and_variable(
        self, variable: str, line: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With one required secret empty, --strict exits 2 with exactly that secret's line."""
        status, errors, out = _strict({**SECRETS, variable: ""}, capsys)
        assert (status, errors, out) == (2, [line], "")

    def test_every_secret_empty_lists_them_all_in_config_order(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With nothing set, every required secret is reported, in config order."""
        status, errors, _ = _strict({}, capsys)
        assert (status, errors) == (2, list(BUNDLED_LINES.values()))

    def test_all_secrets_set_is_valid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With every required secret set, --strict exits 0 like plain validate."""
        status, errors, out = _strict(SECRETS, capsys)
        assert (status, errors) == (0, [])
        assert out.startswith("config: valid")

    def test_without_strict_empty_secrets_are_valid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Plain validate still accepts empty secrets (the demo and dry runs rely on it)."""
        assert main(["validate", "--config", "config"], environ={}) == 0

    def test_no_secret_value_is_printed(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The lines name variables, never the values of the secrets that are set."""
        _, errors, out = _strict({**SECRETS, "SSOE_CLIENT_SECRET": ""}, capsys)
        for value in SECRETS.values():
            assert value not in "\n".join(errors) + out


class TestRequiredSecretIssues:
    @pytest.mark.parametrize(
        ("written", "message"),
        [
            ("${MY_KEY:-}", "required secret is empty: set MY_KEY (--strict)"),
            ("${MY_KEY}", "required secret is empty: set MY_KEY (--strict)"),
            (
                "",
                "required secret is empty: set it from an environment variable (${VAR}), never in the file (--strict)",
            ),
            (
                None,
                "required secret is empty: set it from an environment variable (${VAR}), never in the file (--strict)",
            ),
        ],
        ids=["with-default", "plain", "literal-empty", "absent"],
    )
    def test_message_names_the_variable_as_written(self, tmp_path: Path, written: str | None, message: str) -> None:
        """The variable is the one the file names at that key; without one, the message says how to set it."""
        raw: dict[str, Any] = {"pagerduty": {} if written is None else {"routing_key": written}}
        issues = required_secret_issues(_config_with(tmp_path, {}), raw, lambda loc: "f.yaml")
        assert issues[0] == ConfigIssue("f.yaml", "pagerduty.routing_key", message)

    def test_every_oauth2_probe_needs_its_client(self, tmp_path: Path) -> None:
        """Each oauth2 probe's client id and secret are required, wherever the probe stands."""
        config = _config_with(tmp_path, {}, oauth2_probes=2)
        paths = [issue.path for issue in required_secret_issues(config, {}, lambda loc: "f.yaml")]
        assert paths == [
            "pagerduty.routing_key",
            "pagerduty.api_token",
            "dependencies.idp.probes[1].client_id",
            "dependencies.idp.probes[1].client_secret",
            "dependencies.idp.probes[2].client_id",
            "dependencies.idp.probes[2].client_secret",
        ]

    def test_set_secrets_raise_nothing(self, tmp_path: Path) -> None:
        """Secrets that hold a value are not reported."""
        config = _config_with(tmp_path, SECRETS, oauth2_probes=1)
        assert required_secret_issues(config, {}, lambda loc: "f.yaml") == []

    def test_file_comes_from_the_key_path(self, tmp_path: Path) -> None:
        """Each issue names the file that `file_for` gives for its key path."""
        issues = required_secret_issues(_config_with(tmp_path, {}), {}, lambda loc: f"{loc[0]}.yaml")
        assert {issue.file for issue in issues} == {"pagerduty.yaml"}


def _config_with(folder: Path, environ: Mapping[str, str], oauth2_probes: int = 0) -> Config:
    """A one-dependency config whose secrets come from `environ`, with `oauth2_probes` token probes."""
    tokens = "".join(
        f"""
      - {{name: token{n}, kind: oauth2, token_url: "https://idp.example.invalid/token",
         client_id: "${{SSOE_CLIENT_ID:-}}", client_secret: "${{SSOE_CLIENT_SECRET:-}}"}}"""
        for n in range(oauth2_probes)
    )
    text = f"""
monitor: {{environment: test}}
pagerduty: {{routing_key: "${{PAGERDUTY_ROUTING_KEY:-}}", api_token: "${{PAGERDUTY_API_TOKEN:-}}"}}
dependencies:
  idp:
    name: IdP
    probes:
      - {{name: base, kind: http, url: "https://idp.example.invalid/"}}{tokens}
"""
    return config_from(folder, text, environ)
