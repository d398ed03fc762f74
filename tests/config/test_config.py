"""Configuration loading: one invalid fixture per validation rule, tested against its exact error lines."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.commands.cli import main
from monitor.config import (
    Config,
    ConfigError,
    HttpProbeSpec,
    Timing,
    find_cycle,
    load_config,
    parse_duration,
)
from monitor.config import loading as config_module

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "config"
INVALID = FIXTURES / "invalid"
VALID = FIXTURES / "valid"

ROUTING_KEY_31 = "R0ut1ngKeyThatIsOneCharTooShort"
CLIENT_ID = "depmon-client-4711"
CLIENT_SECRET = "hunter2-Client-Secret-0xC0FFEE"
SECRETS_ENV = {"SSOE_CLIENT_ID": CLIENT_ID, "SSOE_CLIENT_SECRET": CLIENT_SECRET}
KINDS = "known kinds: http, oauth2, tls, tcp, dns, prometheus, datadog"
USERINFO = "must not carry a user or password (user:password@ before the host)"
HTTPS = "must be an https:// URL (http:// only to a loopback address: 127.0.0.0/8, ::1 or localhost)"
PORT = "has an invalid port (1 to 65535)"

# fixture name -> (environ, the `key.path: message` part of each line, in the order printed)
INVALID_CASES: dict[str, tuple[Mapping[str, str], tuple[str, ...]]] = {
    "unknown_top_level_key": ({}, ("alerts: unknown key",)),
    "unknown_probe_key": ({}, ("dependencies.evss.probes[0].retries: unknown key",)),
    "unknown_expect_key": ({}, ("dependencies.evss.probes[0].expect.latency: unknown key",)),
    "missing_environment": ({}, ("monitor.environment: required key is missing",)),
    "bad_duration": ({}, ("monitor.defaults.interval: must be a duration like 500ms, 10s, 3m, 1h or 90d",)),
    "duration_over_ten_years": (
        {},
        ("monitor.resolve_hold: must be at most 10 years", "monitor.retention: must be at most 10 years"),
    ),
    "bad_duration_max_latency": (
        {},
        ("dependencies.evss.probes[0].expect.max_latency: must be a duration like 500ms, 10s, 3m, 1h or 90d",),
    ),
    "threshold_below_one_default": ({}, ("monitor.defaults.success_threshold: must be at least 1",)),
    "threshold_below_one_probe": ({}, ("dependencies.evss.probes[0].failure_threshold: must be at least 1",)),
    "timeout_not_shorter_than_interval": (
        {},
        (
            "dependencies.evss.probes[0].timeout: "
            "timeout (30s) must be shorter than the interval (30s from monitor.defaults)",
        ),
    ),
    "interval_not_longer_than_inherited_timeout": (
        {},
        (
            "dependencies.evss.probes[0].interval: "
            "timeout (10s from monitor.defaults) must be shorter than the interval (5s)",
        ),
    ),
    "default_timeout_not_shorter_than_interval": (
        {},
        ("monitor.defaults.timeout: timeout (10s) must be shorter than the interval (10s)",),
    ),
    "unknown_probe_kind": ({}, (f"dependencies.evss.probes[0].kind: unknown probe kind; {KINDS}",)),
    "missing_probe_kind": ({}, (f"dependencies.evss.probes[0].kind: required key is missing; {KINDS}",)),
    "duplicate_probe_name": (
        {},
        ("dependencies.evss.probes[1].name: duplicate probe name 'healthcheck' in this dependency",),
    ),
    "unknown_requires": ({}, ("features.claims.requires[2]: unknown dependency or feature 'bgs'",)),
    "unknown_any_of": ({}, ("features.authentication.any_of[0]: unknown dependency or feature 'idme'",)),
    "unknown_depends_on": ({}, ("dependencies.evss.depends_on[0]: unknown dependency 'ssoe-oauth'",)),
    "unknown_bearer_from": (
        {},
        ("dependencies.evss.probes[0].bearer_from: unknown oauth2 probe 'ssoe-oauth/access' (DEPENDENCY/PROBE)",),
    ),
    "bearer_from_not_in_depends_on": (
        {},
        ("dependencies.evss.probes[0].bearer_from: 'ssoe-oauth' must be listed in this dependency's depends_on",),
    ),
    "unknown_dependency_playbook": ({}, ("dependencies.evss.playbooks[1]: unknown playbook 'evss-runbook'",)),
    "unknown_feature_playbook": ({}, ("features.claims.playbooks[0]: unknown playbook 'claims-runbook'",)),
    "unknown_notify": ({}, ("escalation.notify[1]: unknown contact 'product-lead'",)),
    "unknown_security_notify": ({}, ("escalation.security_notify[0]: unknown contact 'iso'",)),
    "unknown_security_playbook": ({}, ("escalation.security_playbooks[0]: unknown playbook 'security-incident'",)),
    "dependency_cycle": ({}, ("dependencies.ssoe-oauth.depends_on: cycle: ssoe-oauth -> evss -> ssoe-oauth",)),
    "feature_cycle": ({}, ("features.authentication.requires: cycle: authentication -> claims -> authentication",)),
    "feature_cycle_any_of": (
        {},
        ("features.authentication.any_of: cycle: authentication -> claims -> authentication",),
    ),
    "routing_key_length": (
        {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY_31},
        ("pagerduty.routing_key: must be 32 characters (an Events API v2 integration key) or empty",),
    ),
    "unset_variable": (
        {},
        (
            "monitor.environment: environment variable DEPMON_ENVIRONMENT is not set "
            "(use ${DEPMON_ENVIRONMENT:-default} for a default)",
        ),
    ),
    "invalid_yaml": ({}, ("line 4, column 10: mapping values are not allowed in this context",)),
    "yaml_alias_bomb": ({}, ("e[0]: line 7, column 8: aliases expand to more than 10000 nodes (a YAML alias bomb)",)),
    "yaml_too_deep": ({}, ("monitor.links[0][0][0][0][0][0]: line 4, column 72: nested deeper than 64 levels",)),
    "yaml_recursive_alias": (
        {},
        ("monitor.links[0]: line 4, column 17: alias *loop is inside its own anchor (a recursive structure)",),
    ),
    "yaml_huge_integer": ({}, ("a value cannot be built (ValueError)",)),
    "bad_listen": ({}, ("monitor.listen: must be HOST:PORT, like 127.0.0.1:9464",)),
    "state_url_not_postgresql": (
        {},
        ("monitor.state_url: must be a postgresql:// URL (or null for the SQLite file at state_path)",),
    ),
    "state_url_unreadable": (
        {},
        (
            "monitor.state_url: is not a connection URL libpq can read "
            "(its reason is not shown: it may quote the password)",
        ),
    ),
    "url_userinfo": (
        {},
        (f"pagerduty.events_url: {USERINFO}", f"pagerduty.api_url: {USERINFO}", f"slack.webhooks.#alerts: {USERINFO}"),
    ),
    "url_clear_text_not_loopback": (
        {},
        (f"pagerduty.events_url: {HTTPS}", f"pagerduty.api_url: {HTTPS}", f"slack.webhooks.#alerts: {HTTPS}"),
    ),
    "url_no_host": (
        {},
        ("pagerduty.events_url: must name a host", "dependencies.evss.probes[0].proxy: must name a host"),
    ),
    "url_bad_port": ({}, (f"pagerduty.api_url: {PORT}", f"slack.webhooks.#alerts: {PORT}")),
    "url_control_characters": ({}, ("slack.webhooks.#alerts: must not contain spaces or control characters",)),
    "proxy_bad_scheme": (
        {},
        ("dependencies.evss.probes[0].proxy: must be an http://, https://, socks5:// or socks5h:// URL",),
    ),
    "destination_proxy_bad": (
        {},
        (
            "pagerduty.proxy: must be an http:// or https:// URL (a forward proxy)",
            "slack.proxy: must name a host",
        ),
    ),
    "quorum_without_replicas": (
        {},
        ("monitor: quorum: 2 needs replicas, which share state through monitor.state_url (postgresql://)",),
    ),
    "bad_id": (
        {},
        (
            "dependencies.EVSS Claims: "
            "must be an id: lowercase letters, digits, '-' and '_', starting with a letter or digit",
        ),
    ),
    "bad_url": ({}, ("dependencies.evss.probes[0].url: must be an http:// or https:// URL",)),
    "secret_in_invalid_probe": (
        SECRETS_ENV,
        ("dependencies.ssoe-oauth.probes[0].timeout: must be a duration like 500ms, 10s, 3m, 1h or 90d",),
    ),
    "secret_field_invalid": (
        SECRETS_ENV,
        ("dependencies.ssoe-oauth.probes[0].client_secret: Input should be a valid string",),
    ),
    "multiple_schema_errors": (
        {},
        (
            "monitor.environment: required key is missing",
            "monitor.listen: must be HOST:PORT, like 127.0.0.1:9464",
            "monitor.defaults.failure_threshold: must be at least 1",
            "dependencies.evss.probes[0].interval: must be a duration like 500ms, 10s, 3m, 1h or 90d",
            "alerts: unknown key",
        ),
    ),
    "multiple_reference_errors": (
        {},
        (
            "escalation.notify[0]: unknown contact 'product-owner'",
            "features.claims.requires[2]: unknown dependency or feature 'bgs'",
            "features.authentication.requires: cycle: authentication -> claims -> authentication",
        ),
    ),
}


def _load_error(path: Path, environ: Mapping[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    return caught.value


def _write(directory: Path, files: Mapping[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def _one_dependency(dep_id: str) -> str:
    probe = "{name: port, kind: tcp, host: h.test, port: 443}"
    return f"dependencies:\n  {dep_id}:\n    name: {dep_id}\n    probes:\n      - {probe}\n"


MONITOR_YAML = "monitor:\n  environment: test\n"
DEPENDENCIES_YAML = """\
dependencies:
  ssoe-oauth:
    name: SSOe OAuth
    probes:
      - {name: resolve, kind: dns, host: sso.example.test}
  evss:
    name: EVSS
    depends_on: [ssoe-oauth]
    probes:
      - {name: healthcheck, kind: http, url: "https://evss.example.test/health"}
"""
FEATURES_YAML = """\
features:
  authentication: {name: Authentication, requires: [ssoe-oauth]}
  claims: {name: Claims, requires: [authentication, evss]}
"""


class TestInvalidConfig:
    """`load_config` on the invalid fixtures: every error printed as `FILE: key.path: message`."""

    @pytest.mark.parametrize(
        ("fixture", "environ", "lines"),
        [pytest.param(name, environ, lines, id=name) for name, (environ, lines) in INVALID_CASES.items()],
    )
    def test_error_lines(self, fixture: str, environ: Mapping[str, str], lines: tuple[str, ...]) -> None:
        """Each invalid fixture fails with exactly its expected lines, each prefixed by the file."""
        path = INVALID / f"{fixture}.yaml"
        error = _load_error(path, environ)
        assert str(error).splitlines() == [f"{path}: {line}" for line in lines]
        assert [str(issue) for issue in error.issues] == [f"{path}: {line}" for line in lines]

    def test_every_fixture_has_a_case(self) -> None:
        """Every file in the invalid fixture folder is tested, and every tested fixture exists."""
        assert sorted(p.stem for p in INVALID.glob("*.yaml")) == sorted(INVALID_CASES)

    @pytest.mark.parametrize(
        "path",
        [
            pytest.param(Path("does-not-exist.yaml"), id="missing-file"),
            pytest.param(Path("does-not-exist"), id="missing-directory"),
        ],
    )
    def test_non_existent_path(self, tmp_path: Path, path: Path) -> None:
        """A path that does not exist is one error naming that path."""
        missing = tmp_path / path
        assert str(_load_error(missing, {})) == f"{missing}: no such file or directory"


class TestDirectoryConfig:
    """A directory's `*.yaml` files merged by top-level key."""

    def test_merges_by_top_level_key(self, tmp_path: Path) -> None:
        """Sections from several files form one config."""
        directory = _write(
            tmp_path / "config",
            {"monitor.yaml": MONITOR_YAML, "dependencies.yaml": DEPENDENCIES_YAML, "features.yaml": FEATURES_YAML},
        )
        config = load_config(directory, environ={})
        assert config.monitor.environment == "test"
        assert list(config.dependencies) == ["ssoe-oauth", "evss"]
        assert list(config.features) == ["authentication", "claims"]

    def test_merges_one_section_split_across_files(self, tmp_path: Path) -> None:
        """Entries of one top-level section in two files are merged, each file's in file order."""
        more = _one_dependency("mhv")
        directory = _write(
            tmp_path / "config",
            {"a.yaml": MONITOR_YAML + DEPENDENCIES_YAML, "b.yaml": more},
        )
        assert list(load_config(directory, environ={}).dependencies) == ["ssoe-oauth", "evss", "mhv"]

    @pytest.mark.parametrize(
        ("broken_file", "replace", "line"),
        [
            pytest.param(
                "features.yaml",
                ("[authentication, evss]", "[authentication, evss, bgs]"),
                "features.claims.requires[2]: unknown dependency or feature 'bgs'",
                id="reference-error-in-features",
            ),
            pytest.param(
                "dependencies.yaml",
                ("kind: dns", "kind: ftp"),
                f"dependencies.ssoe-oauth.probes[0].kind: unknown probe kind; {KINDS}",
                id="schema-error-in-dependencies",
            ),
            pytest.param(
                "monitor.yaml",
                ("environment: test", "environment: test\n  listen: nowhere"),
                "monitor.listen: must be HOST:PORT, like 127.0.0.1:9464",
                id="schema-error-in-monitor",
            ),
            pytest.param(
                "monitor.yaml",
                ("environment: test", "environment: ${DEPMON_ENVIRONMENT}"),
                "monitor.environment: environment variable DEPMON_ENVIRONMENT is not set "
                "(use ${DEPMON_ENVIRONMENT:-default} for a default)",
                id="unset-variable-in-monitor",
            ),
            pytest.param(
                "dependencies.yaml",
                ("depends_on: [ssoe-oauth]", "depends_on: [ssoe-oauth, vaos]"),
                "dependencies.evss.depends_on[1]: unknown dependency 'vaos'",
                id="reference-error-in-dependencies",
            ),
        ],
    )
    def test_errors_name_the_file_they_are_in(
        self, tmp_path: Path, broken_file: str, replace: tuple[str, str], line: str
    ) -> None:
        """An error in a merged directory names the file that holds the offending key."""
        files = {"monitor.yaml": MONITOR_YAML, "dependencies.yaml": DEPENDENCIES_YAML, "features.yaml": FEATURES_YAML}
        files[broken_file] = files[broken_file].replace(*replace)
        directory = _write(tmp_path / "config", files)
        assert str(_load_error(directory, {})) == f"{directory / broken_file}: {line}"

    def test_same_dependency_in_two_files(self, tmp_path: Path) -> None:
        """A dependency defined in two files is an error in the second, naming the first."""
        evss = _one_dependency("evss")
        directory = _write(tmp_path / "config", {"a.yaml": MONITOR_YAML + evss, "b.yaml": evss})
        assert str(_load_error(directory, {})) == (
            f"{directory / 'b.yaml'}: dependencies.evss: already defined in {directory / 'a.yaml'}"
        )

    def test_invalid_yaml_names_its_file(self, tmp_path: Path) -> None:
        """Invalid YAML in one file of a directory is reported with that file, line and column."""
        directory = _write(
            tmp_path / "config",
            {"monitor.yaml": MONITOR_YAML, "dependencies.yaml": "dependencies:\n  evss: [unclosed\n"},
        )
        assert str(_load_error(directory, {})) == (
            f"{directory / 'dependencies.yaml'}: line 3, column 1: did not find expected ',' or ']'"
        )

    @pytest.mark.parametrize(
        "files",
        [
            pytest.param({}, id="empty"),
            pytest.param({"README.md": "# config\n", "notes.txt": "monitor: {}\n"}, id="other-files-only"),
        ],
    )
    def test_directory_without_yaml(self, tmp_path: Path, files: dict[str, str]) -> None:
        """A directory with no `*.yaml` file is one error naming the directory."""
        directory = _write(tmp_path / "config", files)
        assert str(_load_error(directory, {})) == f"{directory}: no *.yaml files in this directory"


class TestSubstitution:
    """`${VAR}` and `${VAR:-default}` in string values, from the `environ` passed in."""

    @pytest.mark.parametrize(
        ("environ", "environment", "state_path"),
        [
            pytest.param({}, "staging", ":memory:", id="defaults-when-unset"),
            pytest.param(
                {"DEPMON_ENVIRONMENT": "production", "DEPMON_STATE_PATH": "/var/lib/depmon.sqlite3"},
                "production",
                "/var/lib/depmon.sqlite3",
                id="environ-over-defaults",
            ),
            pytest.param({"DEPMON_ENVIRONMENT": "prod-east"}, "prod-east", ":memory:", id="mixed"),
        ],
    )
    def test_default_and_environ(self, environ: dict[str, str], environment: str, state_path: str) -> None:
        """A set variable wins over the default; an unset one takes the default."""
        config = load_config(VALID / "variables.yaml", environ=environ)
        assert (config.monitor.environment, config.monitor.state_path) == (environment, state_path)

    def test_variable_without_default_from_environ(self) -> None:
        """`${VAR}` without a default takes the value from `environ`."""
        config = load_config(INVALID / "unset_variable.yaml", environ={"DEPMON_ENVIRONMENT": "production"})
        assert config.monitor.environment == "production"

    def test_empty_default(self) -> None:
        """`${VAR:-}` with the variable unset is the empty string."""
        config = load_config(VALID / "variables.yaml", environ={})
        assert config.pagerduty.routing_key.get_secret_value() == ""
        assert config.secret_values() == []

    def test_inside_a_longer_string(self, tmp_path: Path) -> None:
        """A variable inside a longer string is replaced in place."""
        path = tmp_path / "config.yaml"
        path.write_text(
            MONITOR_YAML
            + "dependencies:\n  evss:\n    name: EVSS\n    probes:\n"
            + '      - {name: healthcheck, kind: http, url: "https://${EVSS_HOST:-evss.test}:${EVSS_PORT}/health"}\n',
            encoding="utf-8",
        )
        config = load_config(path, environ={"EVSS_PORT": "8443"})
        probe = config.dependencies["evss"].probes[0]
        assert isinstance(probe, HttpProbeSpec)
        assert probe.url == "https://evss.test:8443/health"

    def test_pagerduty_service_default(self) -> None:
        """A substituted default fills a plain (non-secret) field."""
        config = load_config(VALID / "variables.yaml", environ={})
        assert config.dependencies["ssoe-oauth"].pagerduty_service == "P0J60YD"


class TestSecrets:
    """Secrets from the environment never appear in errors and are listed by `Config.secret_values()`."""

    @pytest.mark.parametrize(
        "routing_key",
        [
            pytest.param(ROUTING_KEY_31, id="31-characters"),
            pytest.param(ROUTING_KEY_31 + "XY", id="33-characters"),
        ],
    )
    def test_invalid_routing_key_not_in_error(self, routing_key: str) -> None:
        """A routing key of the wrong length is reported without its value."""
        error = _load_error(INVALID / "routing_key_length.yaml", {"PAGERDUTY_ROUTING_KEY": routing_key})
        assert [issue.path for issue in error.issues] == ["pagerduty.routing_key"]
        assert routing_key not in str(error)
        assert routing_key not in repr(error.issues)

    @pytest.mark.parametrize(
        "fixture",
        [
            pytest.param("secret_in_invalid_probe", id="probe-with-another-error"),
            pytest.param("secret_field_invalid", id="secret-field-itself-invalid"),
        ],
    )
    def test_client_secret_not_in_error(self, fixture: str) -> None:
        """An oauth2 probe's client id and secret never appear in the error of an invalid config."""
        error = _load_error(INVALID / f"{fixture}.yaml", SECRETS_ENV)
        for secret in (CLIENT_ID, CLIENT_SECRET):
            assert secret not in str(error)
            assert secret not in repr(error.issues)

    def test_secret_values_lists_environment_secrets(self) -> None:
        """`secret_values()` lists the routing key, API token and oauth2 client credentials that are set."""
        routing_key = "0123456789abcdef0123456789abcdef"
        environ = {**SECRETS_ENV, "PAGERDUTY_ROUTING_KEY": routing_key, "PAGERDUTY_API_TOKEN": "u+token-1234"}
        config = load_config(VALID / "variables.yaml", environ=environ)
        assert sorted(config.secret_values()) == sorted([routing_key, "u+token-1234", CLIENT_ID, CLIENT_SECRET])

    def test_secret_values_include_credential_headers_and_proxy_passwords(self) -> None:
        """Credential headers and a proxy URL's password count as secrets; ordinary headers do not."""
        config = Config.model_validate(
            {
                "monitor": {"environment": "test"},
                "dependencies": {
                    "vaos": {
                        "name": "VAOS",
                        "probes": [
                            {
                                "name": "health",
                                "kind": "http",
                                "url": "https://vaos.example/health",
                                "headers": {"Accept": "application/json", "X-Api-Key": "k-123456"},
                                "proxy": "http://fwd:pr0xy-pass@127.0.0.1:3128",
                            }
                        ],
                    }
                },
            }
        )
        assert sorted(config.secret_values()) == ["k-123456", "pr0xy-pass"]

    def test_secret_values_include_the_destination_proxies_passwords(self) -> None:
        """`pagerduty.proxy` and `slack.proxy` carry credentials that count as secrets, decoded too."""
        config = _minimal(
            {
                "pagerduty": {"proxy": "http://pd:pd-pr0xy%2Fpass@proxy.example:3128"},
                "slack": {"proxy": "https://chat:sl4ck-proxy@proxy.example:3129"},
            }
        )
        assert sorted(config.secret_values()) == ["pd-pr0xy%2Fpass", "pd-pr0xy/pass", "sl4ck-proxy"]

    def test_secret_values_include_every_state_url_password(self) -> None:
        """Every password form of a state_url counts as a secret: userinfo, `?password=` and `?sslpassword=`."""
        url = "postgresql://depmon:us3r-pass@db.example/depmon?password=qu3ry-pass&sslpassword=k3y%2Fpass"
        config = _minimal({"monitor": {"environment": "test", "state_url": url}})
        assert sorted(config.secret_values()) == ["k3y/pass", "qu3ry-pass", "us3r-pass"]

    def test_secrets_hidden_in_model_repr(self) -> None:
        """The loaded config's repr shows no secret value."""
        config = load_config(VALID / "variables.yaml", environ=SECRETS_ENV)
        assert CLIENT_SECRET not in repr(config)
        assert CLIENT_SECRET in config.secret_values()


# case -> (a webhook URL refused, its message)
REFUSED_URLS = {
    "userinfo-hides-the-host": ("http://127.0.0.1:8080@hooks.evil.example/x", USERINFO),
    "localhost-prefix": ("http://localhost.evil.example/x", HTTPS),
    "loopback-prefix": ("http://127.0.0.1.evil.example/x", HTTPS),
    "ipv4-mapped": ("http://[::ffff:7f00:1]/x", HTTPS),
    "integer-address": ("http://2130706433/x", HTTPS),
}


class TestUrls:
    """Configured URLs are read by a URL parser: scheme, host, port and userinfo, never split strings."""

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("http://[::1]/hook", id="ipv6-loopback"),
            pytest.param("http://[0:0:0:0:0:0:0:1]:8080/hook", id="ipv6-loopback-long-form"),
            pytest.param("http://127.1.2.3/hook", id="anywhere-in-127/8"),
            pytest.param("http://LOCALHOST:8080/hook", id="localhost-any-case"),
            pytest.param("https://hooks.slack.com/services/T0/B0/x", id="https"),
        ],
    )
    def test_loopback_or_https_accepted(self, url: str) -> None:
        """A webhook and the PagerDuty URLs may be http:// to any loopback address, and https:// anywhere."""
        config = _minimal({"pagerduty": {"events_url": url, "api_url": url}, "slack": {"webhooks": {"#a": url}}})
        assert (config.pagerduty.events_url, config.pagerduty.api_url, config.slack.webhook("#a")) == (url, url, url)

    @pytest.mark.parametrize(("url", "message"), REFUSED_URLS.values(), ids=REFUSED_URLS.keys())
    def test_non_loopback_clear_text_refused(self, url: str, message: str) -> None:
        """http:// to a host that only looks local is refused, with a message that does not quote the URL."""
        with pytest.raises(ValidationError) as caught:
            _minimal({"slack": {"webhooks": {"#a": url}}})
        [error] = caught.value.errors()
        assert (error["loc"], error["msg"]) == (("slack", "webhooks", "#a"), f"Value error, {message}")

    def test_proxy_credentials_accepted(self) -> None:
        """A probe's proxy may carry its own user and password, and may be a SOCKS proxy."""
        probe = {"name": "h", "kind": "http", "url": "https://vaos.example/health"}
        for proxy in ("http://fwd:pr0xy-pass@proxy.example:3128", "socks5h://proxy.example:1080"):
            config = _minimal({"dependencies": {"vaos": {"name": "VAOS", "probes": [{**probe, "proxy": proxy}]}}})
            assert next(spec.proxy for _, spec in config.iter_probes()) == proxy

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("postgresql://depmon@db1.example:5432,db2.example:5433/depmon", id="several-hosts"),
            pytest.param("postgresql:///depmon?host=/run/postgresql", id="socket-directory"),
        ],
    )
    def test_state_url_read_by_libpq(self, url: str) -> None:
        """A state_url libpq reads is accepted, several hosts and a socket directory included."""
        config = _minimal({"monitor": {"environment": "test", "state_url": url}})
        assert config.monitor.state_url is not None
        assert config.monitor.state_url.get_secret_value() == url


def _minimal(sections: Mapping[str, object]) -> Config:
    """A one-dependency config with `sections` replacing its top-level sections."""
    document: dict[str, object] = {
        "monitor": {"environment": "test"},
        "dependencies": {"evss": {"name": "EVSS", "probes": [{"name": "port", "kind": "tcp", "host": "h", "port": 1}]}},
    }
    return Config.model_validate({**document, **sections})


class TestTiming:
    """`Config.timing`: each probe's own timing over `monitor.defaults`."""

    @pytest.mark.parametrize(
        ("dependency", "probe", "expected"),
        [
            pytest.param(
                "ssoe-oauth",
                "token",
                Timing(interval=30, timeout=10, failure_threshold=3, success_threshold=2, confirm_interval=2),
                id="all-inherited",
            ),
            pytest.param(
                "evss",
                "healthcheck",
                Timing(interval=60, timeout=10, failure_threshold=5, success_threshold=2, confirm_interval=2),
                id="own-interval-and-failure-threshold",
            ),
            pytest.param(
                "evss",
                "certificate",
                Timing(interval=30, timeout=3, failure_threshold=3, success_threshold=2, confirm_interval=2),
                id="own-timeout",
            ),
        ],
    )
    def test_inherits_defaults(self, dependency: str, probe: str, expected: Timing) -> None:
        """A probe takes every timing setting it does not set itself from the defaults."""
        config = load_config(VALID / "variables.yaml", environ={})
        spec = next(p for p in config.dependencies[dependency].probes if p.name == probe)
        assert config.timing(spec) == expected


class TestMinimalConfig:
    """The smallest valid configuration."""

    def test_loads_with_defaults(self) -> None:
        """An environment and one dependency with one probe load, with every default applied."""
        config = load_config(VALID / "minimal.yaml", environ={})
        assert isinstance(config, Config)
        assert config.monitor.environment == "test"
        assert config.monitor.listen == "127.0.0.1:9464"
        assert config.monitor.defaults == Timing()
        assert config.features == {}
        assert config.secret_values() == []
        assert [(dep, probe.name, probe.kind) for dep, probe in config.iter_probes()] == [
            ("evss", "healthcheck", "http")
        ]

    def test_valid_fixtures_load(self) -> None:
        """Every valid fixture loads with an empty environment."""
        paths = sorted(VALID.glob("*.yaml"))
        assert paths, f"no valid fixture in {VALID}"
        for path in paths:
            assert isinstance(load_config(path, environ={}), Config), path


class TestParseDuration:
    """`parse_duration`: duration strings to seconds."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            pytest.param("500ms", 0.5, id="milliseconds"),
            pytest.param("10s", 10.0, id="seconds"),
            pytest.param("3m", 180.0, id="minutes"),
            pytest.param("1h", 3600.0, id="hours"),
            pytest.param("1.5s", 1.5, id="fraction"),
            pytest.param(" 2 s ", 2.0, id="spaces"),
            pytest.param(30, 30.0, id="number-of-seconds"),
        ],
    )
    def test_valid(self, text: object, seconds: float) -> None:
        """A number with a unit (or a plain number of seconds) becomes seconds."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param("10", "must be a duration like 500ms, 10s, 3m, 1h or 90d", id="no-unit"),
            pytest.param("10w", "must be a duration like 500ms, 10s, 3m, 1h or 90d", id="unknown-unit"),
            pytest.param("ten seconds", "must be a duration like 500ms, 10s, 3m, 1h or 90d", id="words"),
            pytest.param(True, "must be a duration like 500ms, 10s, 3m, 1h or 90d", id="boolean"),
            pytest.param(None, "must be a duration like 500ms, 10s, 3m, 1h or 90d", id="null"),
            pytest.param("0s", "must be a positive duration", id="zero"),
            pytest.param(-5, "must be a positive duration", id="negative"),
        ],
    )
    def test_invalid(self, text: object, message: str) -> None:
        """Anything else is a ValueError with a readable message."""
        with pytest.raises(ValueError, match=f"^{message}$"):
            parse_duration(text)


class TestFindCycle:
    """`find_cycle`: a cycle in a node -> successors graph, as a closed path."""

    @pytest.mark.parametrize(
        ("graph", "cycle"),
        [
            pytest.param({}, None, id="empty"),
            pytest.param({"a": ["b"], "b": ["c"], "c": []}, None, id="chain"),
            pytest.param({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None, id="diamond"),
            pytest.param({"a": ["outside"]}, None, id="edge-to-unknown-node"),
            pytest.param({"a": ["a"]}, ["a", "a"], id="self-loop"),
            pytest.param({"a": ["b"], "b": ["a"]}, ["a", "b", "a"], id="two-nodes"),
            pytest.param({"x": ["a"], "a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"], id="behind-a-tail"),
        ],
    )
    def test_cycle(self, graph: dict[str, list[str]], cycle: list[str] | None) -> None:
        """The first cycle found is returned from its entry node back to it; None when acyclic."""
        assert find_cycle(graph) == cycle


class TestHostileYaml:
    """YAML bombs and unreadable files are refused quickly, as `FILE: key.path: message`, never a traceback."""

    def test_billion_laughs_is_refused_in_milliseconds(self) -> None:
        """The alias bomb fixture is refused in well under a second with a few MiB, not 6 s and 268 MiB."""
        tracemalloc.start()
        started = time.perf_counter()
        try:
            error = _load_error(INVALID / "yaml_alias_bomb.yaml", {})
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "a YAML alias bomb" in str(error)
        assert elapsed < 0.5
        assert peak < 8 * 1024 * 1024

    def test_nesting_far_beyond_the_recursion_limit_is_a_config_error(self, tmp_path: Path) -> None:
        """A list nested 100,000 levels deep is a config error (libyaml's own limit), never a RecursionError."""
        path = tmp_path / "deep.yaml"
        path.write_text("monitor: " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
        assert str(_load_error(path, {})).endswith(("nested deeper than 64 levels", "exceeded maximum nesting depth"))

    def test_an_alias_that_nests_too_deep_once_expanded(self, tmp_path: Path) -> None:
        """An alias of a 40-deep node placed 40 levels down is refused: depth counts expanded aliases."""
        deep = "[" * 40 + "]" * 40
        path = tmp_path / "alias-depth.yaml"
        path.write_text(f"a: &deep {deep}\nb: {'[' * 40}*deep{']' * 40}\n", encoding="utf-8")
        assert str(_load_error(path, {})).endswith("nested deeper than 64 levels once alias *deep is expanded")

    def test_a_file_over_the_size_cap_is_refused_unread(self, tmp_path: Path) -> None:
        """A config file over 8 MiB is one error naming it."""
        path = tmp_path / "huge.yaml"
        path.write_text("# " + "x" * (8 * 1024 * 1024) + "\n", encoding="utf-8")
        assert str(_load_error(path, {})) == f"{path}: larger than 8 MiB"

    def test_a_huge_flat_list_stops_at_the_node_budget(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Composing stops at the node budget (250,000; 2,000 here to keep the test fast), before the rest is read."""
        monkeypatch.setattr(config_module, "MAX_NODES", 2_000)
        path = tmp_path / "wide.yaml"
        path.write_text("monitor: [" + "1," * 500_000 + "1]\n", encoding="utf-8")
        started = time.perf_counter()
        error = str(_load_error(path, {}))
        assert error == f"{path}: monitor[1997]: line 1, column 4005: more than 2000 values in one file"
        assert time.perf_counter() - started < 2  # the other 498,000 values are never parsed

    def test_a_bomb_in_a_directory_names_its_file(self, tmp_path: Path) -> None:
        """In a directory, the refusal names the file that holds the bomb."""
        bomb = (
            (INVALID / "yaml_alias_bomb.yaml").read_text(encoding="utf-8").replace("monitor: {environment: test}", "")
        )
        directory = _write(tmp_path / "config", {"monitor.yaml": MONITOR_YAML, "zz-bomb.yaml": bomb})
        assert str(_load_error(directory, {})).startswith(f"{directory / 'zz-bomb.yaml'}: e[0]: ")

    def test_a_read_error_names_the_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An OSError while reading a file is a config error naming the file and the error class."""
        path = tmp_path / "depmon.yaml"
        path.write_text(MONITOR_YAML, encoding="utf-8")

        def refuse(self: Path, *args: object, **kwargs: object) -> str:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "read_text", refuse)
        assert str(_load_error(path, {})) == f"{path}: cannot read: PermissionError"

    def test_any_recursion_or_memory_error_becomes_a_config_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A RecursionError or MemoryError anywhere in loading is a config error naming the path."""
        path = tmp_path / "depmon.yaml"
        path.write_text(MONITOR_YAML, encoding="utf-8")
        for error in (RecursionError, MemoryError):

            def explode(*args: object, error: type[BaseException] = error) -> object:
                raise error()

            monkeypatch.setattr(config_module, "_read_documents", explode)
            assert str(_load_error(path, {})) == f"{path}: cannot be loaded: {error.__name__}"

    @pytest.mark.parametrize("fixture", ["yaml_alias_bomb", "yaml_too_deep", "yaml_huge_integer"])
    def test_validate_exits_2_without_a_traceback(self, fixture: str, capsys: pytest.CaptureFixture[str]) -> None:
        """`depmon validate` on a hostile file prints its `FILE: ...` line and exits 2, no traceback."""
        path = INVALID / f"{fixture}.yaml"
        assert main(["validate", "--config", str(path)], environ={}) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{path}: ")
        assert "Traceback" not in err
