"""`depmon validate --strict`: an empty required secret fails the validation, naming its key and variable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from monitor.commands.cli import main
from monitor.commands.validate_strict import non_production_label, pinned_range, required_secret_issues
from monitor.config import Config, ConfigIssue, bundled_config_path
from tests.helpers import config_from

pytestmark = pytest.mark.unit

ROUTING_KEY = "0123456789abcdef0123456789abcdef"
SECRETS = {
    "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
    "PAGERDUTY_API_TOKEN": "u+token-of-the-rest-api",
    "SSOE_CLIENT_ID": "depmon-client-4711",
    "SSOE_CLIENT_SECRET": "hunter2-Client-Secret-0xC0FFEE",
    "PAGERDUTY_FROM_EMAIL": "oncall@example.gov",
    "PAGERDUTY_REQUESTER_ID": "PREQ001",
}
# The production address of every upstream whose bundled default is not production (config/README.md).
PRODUCTION_HOSTS = {"VA_PROFILE_URL": "https://vaprofile.example.va.gov"}
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
    "PAGERDUTY_FROM_EMAIL": f"{MONITOR}: pagerduty.from_email: empty: no responder request, note or urgency is "
    "written to PagerDuty; set PAGERDUTY_FROM_EMAIL (--strict)",
    "PAGERDUTY_REQUESTER_ID": f"{MONITOR}: pagerduty.requester_id: empty: no responder request is made; "
    "set PAGERDUTY_REQUESTER_ID (--strict)",
}


def _strict(environ: Mapping[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    status = main(["validate", "--strict", "--config", "config"], environ={**PRODUCTION_HOSTS, **environ})
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
            "pagerduty.from_email",
            "pagerduty.requester_id",
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
pagerduty: {{routing_key: "${{PAGERDUTY_ROUTING_KEY:-}}", api_token: "${{PAGERDUTY_API_TOKEN:-}}",
            from_email: "${{PAGERDUTY_FROM_EMAIL:-}}", requester_id: "${{PAGERDUTY_REQUESTER_ID:-}}"}}
dependencies:
  idp:
    name: IdP
    probes:
      - {{name: base, kind: http, url: "https://idp.example.invalid/"}}{tokens}
"""
    return config_from(folder, text, environ)


class TestNonProductionLabel:
    @pytest.mark.parametrize(
        ("host", "word"),
        [
            ("int.vaprofile.va.gov", "int"),  # a label that is the word
            ("api.staging.va.gov", "staging"),
            ("sqa.eauth.va.gov", "sqa"),
            ("sandbox.api.va.gov", "sandbox"),
            ("dev-api.va.gov", "dev"),  # a label's prefix, then a hyphen
            ("stg-fwdproxy.vfs.va.gov", "stg"),
            ("api-test.va.gov", "test"),  # a hyphen, then a label's suffix
            ("vets-api-int.example.gov", "int"),
            ("API.Staging.VA.gov", "staging"),  # without case
            ("api.staging.va.gov.", "staging"),  # a fully qualified name's final dot
            ("developer.va.gov", None),  # a word run into a longer label is another word
            ("internal.va.gov", None),
            ("contest.gov", None),
            ("devops.example.gov", None),
            ("testing.gov", None),
            ("stg2.example.gov", None),
            ("my-dev-box.va.gov", None),  # inside a label, neither its prefix nor its suffix
            ("api.va.gov", None),
            ("10.0.0.1", None),
            ("", None),
        ],
    )
    def test_rule(self, host: str, word: str | None) -> None:
        """A label equal to a word, or starting with it and `-`, or ending with `-` and it; nothing else."""
        assert non_production_label(host) == word


class TestPinnedRange:
    @pytest.mark.parametrize(
        ("url", "pinned"),
        [
            ("https://app.datadoghq.com/d/x?from_ts=1640615800322&to_ts=1643294200322&live=true", ["from_ts", "to_ts"]),
            ("https://app.datadoghq.com/d/x?from_ts=", ["from_ts"]),  # DataDog's keys are pinned whatever they hold
            ("https://grafana.example.gov/d/x?orgId=1&from=1640615800322&to=1643294200322", ["from", "to"]),
            ("https://grafana.example.gov/d/x?from=2021-12-27T00:00:00Z", ["from"]),
            ("https://grafana.example.gov/d/x?from=now-6h&to=now", []),  # relative: follows the present
            ("https://app.datadoghq.com/d/x?live=true", []),
            ("https://grafana.example.gov/d/x#from=1640615800322", []),  # not a query parameter
        ],
    )
    def test_rule(self, url: str, pinned: list[str]) -> None:
        """`from_ts`/`to_ts`, and `from`/`to` with an absolute value (a digit first), in URL order."""
        assert pinned_range(url) == pinned


HOSTS_CONFIG = """
monitor:
  environment: ${{DEPMON_ENVIRONMENT:-production}}
  canaries: [{{name: egress, kind: tcp, host: {canary}, port: 3128}}]
  links: [{{text: Dashboard, href: "{link}"}}]
pagerduty:
  {{routing_key: "0123456789abcdef0123456789abcdef", api_token: "token", from_email: "oncall@example.gov",
   requester_id: "PREQ001"}}
playbooks: {{runbook: {{title: Runbook, url: "https://docs.example.gov/runbook"}}}}
dependencies:
  evss:
    name: EVSS
    docs: "{docs}"
    playbooks: [runbook]
    probes:
      - {{name: base, kind: http, url: "${{EVSS_URL:-{url}}}"}}
      - {{name: certificate, kind: tls, host: {tls}}}
"""
PRODUCTION_ADDRESSES = {
    "canary": "fwdproxy.example.gov",
    "link": "https://grafana.example.gov/d/x?from=now-6h",
    "docs": "https://docs.example.gov/evss",
    "url": "https://evss.example.gov/health",
    "tls": "evss.example.gov",
}


class TestEnvironmentIssues:
    def _validate(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: Mapping[str, str] = {}, **addresses: str
    ) -> tuple[int, list[str]]:
        path = tmp_path / "depmon.yaml"
        path.write_text(HOSTS_CONFIG.format(**{**PRODUCTION_ADDRESSES, **addresses}))
        status = main(["validate", "--strict", "--config", str(path)], environ=environ)
        lines = capsys.readouterr().err.splitlines()
        return status, [line.removeprefix(f"{path}: ") for line in lines]

    def test_production_addresses_pass(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Production with production hosts and a relative link: exit 0."""
        assert self._validate(tmp_path, capsys) == (0, [])

    def test_every_place_a_host_stands(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A canary, a link, docs, an http probe's URL and a tls probe's host: each its own line, in config order."""
        status, lines = self._validate(
            tmp_path,
            capsys,
            canary="fwdproxy-dev.example.gov",
            link="https://grafana.staging.example.gov/d/x",
            docs="https://sandbox.docs.example.gov/evss",
            url="https://int.evss.example.gov/health",
            tls="evss-sqa.example.gov",
        )
        tail = "while monitor.environment is production"
        assert (status, lines) == (
            2,
            [
                f"monitor.canaries[0].host: host fwdproxy-dev.example.gov has a non-production label (dev) {tail}: "
                "point it at production (--strict)",
                f"monitor.links[0].href: host grafana.staging.example.gov has a non-production label (staging) {tail}: "
                "point it at production (--strict)",
                f"dependencies.evss.docs: host sandbox.docs.example.gov has a non-production label (sandbox) {tail}: "
                "point it at production (--strict)",
                f"dependencies.evss.probes[0].url: host int.evss.example.gov has a non-production label (int) {tail}: "
                "set EVSS_URL to the production address (--strict)",
                f"dependencies.evss.probes[1].host: host evss-sqa.example.gov has a non-production label (sqa) {tail}: "
                "point it at production (--strict)",
            ],
        )

    def test_other_environments_may_name_them(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Staging watching staging hosts is what staging does: exit 0."""
        environ = {"DEPMON_ENVIRONMENT": "staging"}
        assert self._validate(tmp_path, capsys, environ, url="https://api.staging.va.gov/health") == (0, [])

    def test_pinned_link_fails_in_any_environment(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A link pinned to Dec 2021 opens there whatever the environment: exit 2 in staging too."""
        link = "https://app.datadoghq.com/d/x?from_ts=1640615800322&to_ts=1643294200322"
        status, lines = self._validate(tmp_path, capsys, {"DEPMON_ENVIRONMENT": "staging"}, link=link)
        assert (status, lines) == (
            2,
            [
                "monitor.links[0].href: link pinned to a fixed time range (from_ts, to_ts): drop them, so that it "
                "opens on the present (--strict)"
            ],
        )

    def test_only_the_host_is_said(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A URL's path and query (a token may stand there) never reach the message."""
        status, lines = self._validate(tmp_path, capsys, url="https://dev-api.example.gov/h?apikey=Secret-42")
        assert status == 2
        assert "Secret-42" not in "\n".join(lines)
        assert "host dev-api.example.gov " in lines[0]


class TestBundledProduction:
    def test_passes_with_production_settings(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The bundled config, production, secrets and VA_PROFILE_URL set: exit 0 (its links are not pinned)."""
        status, errors, _ = _strict(SECRETS, capsys)
        assert (status, errors) == (0, [])

    def test_va_profile_default_is_not_production(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without VA_PROFILE_URL, production fails on the integration host, naming the variable."""
        status = main(["validate", "--strict", "--config", "config"], environ=SECRETS)
        assert (status, capsys.readouterr().err.splitlines()) == (
            2,
            [
                f"{DEPENDENCIES}: dependencies.va-profile.probes[0].url: host int.vaprofile.va.gov has a "
                "non-production label (int) while monitor.environment is production: set VA_PROFILE_URL to the "
                "production address (--strict)"
            ],
        )

    def test_staging_may_keep_the_defaults(self, capsys: pytest.CaptureFixture[str]) -> None:
        """DEPMON_ENVIRONMENT=staging with the bundled defaults: exit 0."""
        status = main(
            ["validate", "--strict", "--config", "config"], environ={**SECRETS, "DEPMON_ENVIRONMENT": "staging"}
        )
        assert (status, capsys.readouterr().err) == (0, "")
