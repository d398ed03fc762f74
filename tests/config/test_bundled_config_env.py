"""The bundled config can be deployed as is: every upstream address and PagerDuty id comes from the environment."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from monitor.config import Config, HttpProbeSpec, OAuth2ProbeSpec, TlsProbeSpec, bundled_config_path, load_config
from tests.helpers import bundled_config

pytestmark = pytest.mark.unit

BUNDLED = bundled_config_path()
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _probe(config: Config, dependency: str, name: str) -> Any:
    return next(p for p in config.dependencies[dependency].probes if p.name == name)


def _url(dependency: str, name: str = "base") -> Callable[[Config], str]:
    return lambda config: str(_probe(config, dependency, name).url)


def _host(dependency: str, name: str = "certificate") -> Callable[[Config], str]:
    return lambda config: str(_probe(config, dependency, name).host)


def _service(dependency: str) -> Callable[[Config], str | None]:
    return lambda config: config.dependencies[dependency].pagerduty_service


def _incidents_link(config: Config) -> str:
    return next(link.href for link in config.monitor.links if link.text == "PagerDuty incidents")


# variable -> (value set, where it lands, what is read there)
OVERRIDES: dict[str, tuple[str, Callable[[Config], object], str]] = {
    "SSOE_TOKEN_URL": (
        "https://sso.test/token",
        lambda c: _probe(c, "ssoe-oauth", "token").token_url,
        "https://sso.test/token",
    ),
    "SSOE_TLS_HOST": ("sso.test", _host("ssoe-oauth"), "sso.test"),
    "EAUTH_TLS_HOST": ("eauth.test", _host("ssoe-oauth", "eauth-certificate"), "eauth.test"),
    "IDME_URL": ("https://idme.test/", _url("idme"), "https://idme.test/"),
    "IDME_TLS_HOST": ("idme.test", _host("idme"), "idme.test"),
    "MHV_URL": ("https://mhv.test/", _url("mhv"), "https://mhv.test/"),
    "MHV_TLS_HOST": ("mhv.test", _host("mhv"), "mhv.test"),
    "DSLOGON_URL": ("https://dslogon.test/", _url("dslogon"), "https://dslogon.test/"),
    "DSLOGON_TLS_HOST": ("dslogon.test", _host("dslogon"), "dslogon.test"),
    "VA_PROFILE_URL": ("https://vaprofile.test", _url("va-profile"), "https://vaprofile.test"),
    "EVSS_URL": ("https://evss.test", _url("evss"), "https://evss.test"),
    "CASEFLOW_URL": ("https://caseflow.test", _url("caseflow", "healthcheck"), "https://caseflow.test/health-check"),
    "VAOS_URL": ("https://vaos.test", _url("vaos"), "https://vaos.test"),
    "VAOS_TLS_HOST": ("vaos.test", _host("vaos"), "vaos.test"),
    "LIGHTHOUSE_URL": ("https://lighthouse.test/r4", _url("lighthouse"), "https://lighthouse.test/r4"),
    "LIGHTHOUSE_TLS_HOST": ("lighthouse.test", _host("lighthouse"), "lighthouse.test"),
    "VETEXT_URL": ("https://vetext.test", _url("vetext"), "https://vetext.test"),
    "VANOTIFY_URL": ("https://notify.test", _url("vanotify", "status"), "https://notify.test/_status?simple=1"),
    "PAGERDUTY_EVENTS_URL": ("https://events.pd.test", lambda c: c.pagerduty.events_url, "https://events.pd.test"),
    "PAGERDUTY_API_URL": ("https://api.pd.test", lambda c: c.pagerduty.api_url, "https://api.pd.test"),
    "PAGERDUTY_WEB_URL": ("https://va.pd.test", lambda c: c.pagerduty.web_url, "https://va.pd.test"),
    **{
        f"PD_SERVICE_{dependency.upper().replace('-', '_')}": ("PTEST01", _service(dependency), "PTEST01")
        for dependency in (
            "ssoe-oauth",
            "idme",
            "mhv",
            "dslogon",
            "va-profile",
            "evss",
            "caseflow",
            "vaos",
            "lighthouse",
            "vetext",
            "vanotify",
        )
    },
}


def _raw_values() -> Iterator[tuple[str, str]]:
    """Every string value of the bundled YAML as written (before substitution), with its key path."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{path}[{index}]")
        elif isinstance(node, str):
            yield path, node

    for file in sorted(BUNDLED.glob("*.yaml")):
        yield from walk(yaml.safe_load(file.read_text(encoding="utf-8")), "")


def _readme_defaults() -> dict[str, str]:
    """config/README.md's variable table: variable -> default (`empty` read as "")."""
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| [^|]+ \| ([^|]+) \|", (BUNDLED / "README.md").read_text("utf-8"), re.M)
    return {name: "" if default.strip() == "empty" else default.strip().strip("`") for name, default in rows}


@pytest.fixture(scope="module")
def defaults() -> Config:
    """The bundled config with every variable unset."""
    return bundled_config()


class TestOverrides:
    @pytest.mark.parametrize(("variable", "case"), OVERRIDES.items(), ids=list(OVERRIDES))
    def test_variable_sets_its_key(
        self, defaults: Config, variable: str, case: tuple[str, Callable[[Config], object], str]
    ) -> None:
        """Setting the variable changes the key it names, and only through the environment."""
        value, read, expected = case
        default = read(defaults)
        assert read(load_config(BUNDLED, environ={variable: value})) == expected != default

    def test_web_url_also_moves_the_incidents_link(self) -> None:
        """PAGERDUTY_WEB_URL moves the page's "PagerDuty incidents" link with the service directory links."""
        config = load_config(BUNDLED, environ={"PAGERDUTY_WEB_URL": "https://va.pd.test"})
        assert _incidents_link(config) == "https://va.pd.test/incidents"

    def test_unset_service_ids_are_no_service(self, defaults: Config) -> None:
        """A dependency without a known PagerDuty service has none until its variable is set."""
        assert [d for d, dep in defaults.dependencies.items() if dep.pagerduty_service is None] == [
            "lighthouse",
            "vetext",
            "vanotify",
        ]
        polled = load_config(BUNDLED, environ={"PD_SERVICE_VETEXT": "PVTXT01"}).service_owners()
        assert polled["PVTXT01"] == ["vetext"]


class TestEveryAddressIsAVariable:
    @pytest.mark.parametrize(
        ("kind", "key"),
        [(HttpProbeSpec, "url"), (OAuth2ProbeSpec, "token_url"), (TlsProbeSpec, "host")],
        ids=["http-url", "oauth2-token-url", "tls-host"],
    )
    def test_every_probe_target_is_overridable(self, defaults: Config, kind: type, key: str) -> None:
        """Every probe target of the bundled config is written as a ${VAR:-default}."""
        raw = dict(_raw_values())
        targets = [
            raw[f"dependencies.{dep_id}.probes[{index}].{key}"]
            for dep_id, dependency in defaults.dependencies.items()
            for index, probe in enumerate(dependency.probes)
            if isinstance(probe, kind)
        ]
        assert targets
        assert [target for target in targets if not _VARIABLE.match(target)] == []

    def test_every_dependency_service_id_is_overridable(self, defaults: Config) -> None:
        """Every dependency's PagerDuty service id is written as a ${PD_SERVICE_<ID>:-default}."""
        raw = dict(_raw_values())
        written = {dep_id: raw.get(f"dependencies.{dep_id}.pagerduty_service") for dep_id in defaults.dependencies}
        assert {dep_id: value for dep_id, value in written.items() if not value or "${PD_SERVICE_" not in value} == {}

    @pytest.mark.parametrize("key", ["pagerduty.events_url", "pagerduty.api_url", "pagerduty.web_url"])
    def test_pagerduty_addresses_are_overridable(self, key: str) -> None:
        """Each PagerDuty address is written as a ${PAGERDUTY_...:-default}."""
        assert _VARIABLE.fullmatch(dict(_raw_values())[key])


class TestReadme:
    def test_every_variable_is_listed_with_its_default(self) -> None:
        """config/README.md lists every variable of the bundled YAML with the default the YAML gives it."""
        written: dict[str, str] = {}
        for _, value in _raw_values():
            for name, default in _VARIABLE.findall(value):
                written.setdefault(name, default)
        assert _readme_defaults() == written

    @pytest.mark.parametrize("variable", ["EVSS_URL", "VA_PROFILE_URL", "PAGERDUTY_WEB_URL"])
    def test_non_production_defaults_are_flagged(self, variable: str) -> None:
        """A default that is not a production address carries ASSUMPTION in its README row."""
        row = next(
            line for line in (BUNDLED / "README.md").read_text("utf-8").splitlines() if f"| `{variable}` |" in line
        )
        assert "ASSUMPTION" in row


def test_readme_table_is_parsed() -> None:
    """The README parser reads a backquoted default and `empty` as the empty string."""
    assert _readme_defaults()["PAGERDUTY_ROUTING_KEY"] == ""
    assert _readme_defaults()["DEPMON_ENVIRONMENT"] == "production"
