"""The Prometheus scrape config, the alerting rules and their promtool unit tests (deploy/prometheus/)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import SPEC_6_METRICS, SPEC_10_4_METRICS, SPEC_11_METRICS
from tests.helpers import SHARED

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES_FILE = PROMETHEUS / "rules" / "depmon.rules.yml"
RULES_TEST_FILE = PROMETHEUS / "tests" / "depmon.rules.test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
DEPLOY_README = ROOT / "deploy" / "README.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "depmon.json"
SPEC = SHARED / "SPEC.md"

EXPECTED_ALERTS = {
    "DepmonDown",
    "DepmonAbsent",
    "DependencyDown",
    "OutboxBacklogGrowing",
    "DestinationBacklogGrowing",
    "MaintenanceDataStale",
    "CertificateExpiringSoon",
    "ProbeFlapping",
    "DepmonPagerDutyEventsDropped",
    "DepmonEscalationFailed",
    "DepmonOverloaded",
    "DepmonCannotSeeOut",
    "DepmonPagerFailing",
    "DepmonStoreStalled",
    "DepmonSignalUnavailable",
    "DepmonNoLeader",
    "DepmonMultipleLeaders",
    "DependencySeenDownBelowQuorum",
}

# depmon_pagerduty_events_total's outcomes (SPEC 7 and 10.4, CHANGELOG.md, issue 9): `rejected`
# is gone, and `dropped` counts a 400 only.
PAGERDUTY_OUTCOMES = {"accepted", "dropped", "retried"}


def _load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in _load_rules()["groups"] for rule in group["rules"] if "alert" in rule}


ALERTS = _alerts()


def _spec_text() -> str:
    if not SPEC.is_file():  # the suite's own copy (tests/deploy/conftest.py) is checked against it when present
        pytest.skip(f"SPEC.md not found at {SPEC}")
    return SPEC.read_text(encoding="utf-8")


def _metric_table(section: str) -> dict[str, str]:
    return dict(re.findall(r"^\|\s*`(depmon_\w+)`\s*\|\s*(gauge|counter|histogram)\b", section, re.MULTILINE))


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _github_slug(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


class TestRulesFile:
    """deploy/prometheus/rules/depmon.rules.yml."""

    @pytest.mark.needs_tool
    def test_promtool_accepts_the_rules(self, promtool: str) -> None:
        """`promtool check rules` accepts the rules file with every lint enabled."""
        result = _run(promtool, "check", "rules", "--lint=all", "--lint-fatal", RULES_FILE)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout

    def test_defines_exactly_the_operations_alerts(self) -> None:
        """The rules file defines the alerts of the operations kit (EXPECTED_ALERTS) and nothing else."""
        assert set(ALERTS) == EXPECTED_ALERTS

    @pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
    def test_alert_has_severity_and_annotations(self, alert: str) -> None:
        """Every alert carries a severity label and summary, description and https runbook_url annotations."""
        rule = ALERTS[alert]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        assert rule["annotations"]["runbook_url"].startswith("https://")

    @pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
    def test_per_dependency_alerts_name_the_dependency(self, alert: str) -> None:
        """An alert over a per-dependency metric names the dependency's config id in its summary."""
        rule = ALERTS[alert]
        per_dependency = re.search(r"depmon_(dependency|probes?|tls)_", rule["expr"])
        mentions = "$labels.dependency" in rule["annotations"]["summary"]
        assert mentions == bool(per_dependency)

    def test_dependency_down_is_the_alertmanager_fallback(self) -> None:
        """DependencyDown is marked and described as the fallback path for when depmon cannot reach PagerDuty."""
        rule = ALERTS["DependencyDown"]
        assert rule["labels"]["path"] == "alertmanager-fallback"
        assert "fallback" in rule["annotations"]["description"]
        assert "depmon_dependency_in_maintenance == 0" in rule["expr"]

    def test_readme_table_lists_every_alert_with_its_severity(self) -> None:
        """deploy/README.md's "Alert rules" table names every alert of the rules file, and only those, with severity."""
        section = DEPLOY_README.read_text(encoding="utf-8").split("\n## Alert rules\n", 1)[1].split("\n#", 1)[0]
        table = dict(re.findall(r"^\|\s*(\w+)\s*\|\s*(critical|warning|info)\s*\|", section, re.MULTILINE))
        assert table == {name: rule["labels"]["severity"] for name, rule in ALERTS.items()}

    @pytest.mark.parametrize(
        "alert", sorted(a for a in EXPECTED_ALERTS if "deploy/README.md#" in ALERTS[a]["annotations"]["runbook_url"])
    )
    def test_runbook_anchor_exists_in_deploy_readme(self, alert: str) -> None:
        """A runbook_url into deploy/README.md points at a heading that exists there."""
        anchor = ALERTS[alert]["annotations"]["runbook_url"].rsplit("#", 1)[1]
        headings = re.findall(r"^#+\s+(.+)$", DEPLOY_README.read_text(encoding="utf-8"), flags=re.MULTILINE)
        assert anchor in {_github_slug(h) for h in headings}


class TestRuleUnitTests:
    """deploy/prometheus/tests/depmon.rules.test.yml, run by `promtool test rules`."""

    @pytest.mark.needs_tool
    def test_promtool_unit_tests_pass(self, promtool: str) -> None:
        """Every promtool unit test of the rules passes."""
        result = _run(promtool, "test", "rules", RULES_TEST_FILE)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    @pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
    def test_every_alert_has_a_firing_and_a_quiet_case(self, alert: str) -> None:
        """Each alert is evaluated at least once expecting it to fire and once expecting silence."""
        tests = yaml.safe_load(RULES_TEST_FILE.read_text(encoding="utf-8"))["tests"]
        cases = [case for test in tests for case in test.get("alert_rule_test", []) if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in cases), "no firing case"
        assert any(not case["exp_alerts"] for case in cases), "no quiet case"

    @pytest.mark.needs_tool
    @pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
    def test_unit_tests_catch_a_rule_that_never_fires(self, promtool: str, alert: str, tmp_path: Path) -> None:
        """Replacing one alert's expression by one that never fires makes the promtool unit tests fail."""
        rules = _load_rules()
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    rule["expr"] = "vector(1) < 0"
        (tmp_path / "rules").mkdir()
        (tmp_path / "tests").mkdir()
        (tmp_path / "rules" / RULES_FILE.name).write_text(yaml.safe_dump(rules), encoding="utf-8")
        (tmp_path / "tests" / RULES_TEST_FILE.name).write_text(
            RULES_TEST_FILE.read_text(encoding="utf-8"), encoding="utf-8"
        )
        result = _run(promtool, "test", "rules", tmp_path / "tests" / RULES_TEST_FILE.name)
        assert result.returncode != 0
        assert alert in result.stdout + result.stderr


class TestRuleMetricNames:
    """The metric names the rules select, against SPEC section 6."""

    @pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
    def test_rule_selects_only_spec_metrics(self, alert: str, allowed_series: set[str], metric_names_of: Any) -> None:
        """Every metric an alert expression selects is in SPEC section 6 or 10.4 (or Prometheus's own `up`)."""
        names = metric_names_of(ALERTS[alert]["expr"])
        assert names, "no metric found in the expression"
        assert names <= allowed_series, names - allowed_series

    def test_spec_metric_list_matches_the_spec(self, spec_metrics: dict[str, str]) -> None:
        """The test suite's copy of the metric table equals SPEC.md section 6 (plus 10.4, checked below)."""
        section = _spec_text().split("## 6.", 1)[1].split("\n## ", 1)[0]
        assert _metric_table(section) == SPEC_6_METRICS
        assert spec_metrics == {**SPEC_6_METRICS, **SPEC_10_4_METRICS, **SPEC_11_METRICS}

    def test_third_round_metrics_are_named_by_the_spec_or_the_changelog(self) -> None:
        """Each metric of the third round's list is in SPEC.md section 11, or in CHANGELOG.md."""
        section = _spec_text().split("## 11.", 1)[1]
        changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
        for name in SPEC_11_METRICS:
            assert f"`{name}`" in section or f"`{name.removesuffix('_total')}" in changelog, name

    def test_second_round_metric_list_matches_the_spec(self) -> None:
        """The test suite's copy of the second round's metric table equals SPEC.md section 10.4."""
        section = _spec_text().split("### 10.4", 1)[1].split("\n### ", 1)[0]
        assert _metric_table(section) == SPEC_10_4_METRICS

    def test_daemon_registers_every_metric_used(self, metric_names_of: Any, series_names_of: Any) -> None:
        """monitor.metrics registers every depmon_ series the rules and the dashboard select."""
        metrics = pytest.importorskip("monitor.metrics")
        exposed = {
            family.name + ("_total" if family.type == "counter" else ""): family.type
            for family in metrics.Metrics().registry.collect()
        }
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        exprs = [rule["expr"] for rule in ALERTS.values()]
        exprs += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
        used = {name for expr in exprs for name in metric_names_of(expr) if name.startswith("depmon_")}
        missing = used - series_names_of(exposed)
        assert not missing, missing


class TestPagerDutyOutcomes:
    """The outcome label of depmon_pagerduty_events_total: `dropped` (a 400 only), no `rejected`."""

    def test_dropped_alert_selects_the_dropped_outcome(self) -> None:
        """DepmonPagerDutyEventsDropped counts outcome `dropped` and pages (critical), without waiting."""
        rule = ALERTS["DepmonPagerDutyEventsDropped"]
        assert 'outcome="dropped"' in rule["expr"]
        assert "for" not in rule
        assert rule["labels"]["severity"] == "critical"
        assert "pagerduty_event_dropped" in rule["annotations"]["description"]

    def test_rules_dashboard_and_runbooks_name_only_current_outcomes(self) -> None:
        """No rule, panel or runbook selects or mentions an outcome depmon no longer exports."""
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        exprs = [rule["expr"] for rule in ALERTS.values()]
        exprs += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
        pagerduty = [expr for expr in exprs if "depmon_pagerduty_events_total" in expr]
        selected = {value for expr in pagerduty for value in re.findall(r'outcome\s*[!=]~?\s*"([^"]*)"', expr)}
        assert pagerduty
        assert selected <= PAGERDUTY_OUTCOMES, selected
        for text in (RULES_FILE, DASHBOARD, DEPLOY_README):
            assert "rejected" not in text.read_text(encoding="utf-8"), text


class TestPromqlMetricNames:
    """The lexical metric-name scan the name checks rely on."""

    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            ('absent(up{job="depmon"})', {"up"}),
            ("time() - depmon_a_seconds > 15 * 60 and depmon_a_seconds > 0", {"depmon_a_seconds"}),
            (
                'histogram_quantile(0.99, sum by (le, dependency) (rate(depmon_d_bucket{x=~"a|b"}[5m])))',
                {"depmon_d_bucket"},
            ),
            ("sum(rate(a_total[1m] offset 5m)) without (instance) / on (job) group_left (version) b", {"a_total", "b"}),
            ('1e3 * c unless d{state="down"} == bool 1', {"c", "d"}),
            ('label_replace(e, "dst", "$1", "src", "(.*)")', {"e"}),
        ],
    )
    def test_finds_exactly_the_selected_metrics(self, metric_names_of: Any, expr: str, expected: set[str]) -> None:
        """Functions, keywords, label names, strings, numbers and durations are not taken for metric names."""
        assert metric_names_of(expr) == expected


class TestScrapeConfig:
    """deploy/prometheus/prometheus.yml."""

    @pytest.mark.needs_tool
    def test_promtool_accepts_the_config_and_finds_the_rules(self, promtool: str) -> None:
        """`promtool check config` accepts the example config and loads the rules file it names."""
        result = _run(promtool, "check", "config", SCRAPE_CONFIG)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 1 rule files found" in result.stdout

    def test_scrapes_depmon_as_job_depmon(self) -> None:
        """The example scrapes 127.0.0.1:9464/metrics as job depmon, the job the rules select."""
        config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "depmon"]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
        assert 'job="depmon"' in ALERTS["DepmonDown"]["expr"]
        assert (SCRAPE_CONFIG.parent / config["rule_files"][0]).resolve() == RULES_FILE.resolve()
