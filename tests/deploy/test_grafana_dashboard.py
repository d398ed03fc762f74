"""The Grafana dashboard and its provisioning files (deploy/grafana/)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "depmon.json"
PANEL_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's built-in interval variables, replaced by concrete durations before promtool parses.
BUILTIN_DURATIONS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h", "${__range}": "1h"}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


DASHBOARD = _dashboard()
PANELS = DASHBOARD["panels"]
QUERY_PANELS = [panel for panel in PANELS if panel["type"] != "row"]
TARGETS = [(panel, target) for panel in PANELS for target in panel.get("targets", [])]
TARGET_IDS = [f"panel{panel['id']}-{target['refId']}" for panel, target in TARGETS]
VARIABLES = {var["name"]: var for var in DASHBOARD["templating"]["list"]}

# The "depmon itself" row (issue 10): what each of its panels must query.
SELF_ROW_TITLE = "depmon itself"
SELF_ROW_NEEDLES = {
    "overloaded": "depmon_overloaded{",
    "event-loop lag p99": "histogram_quantile(0.99, sum by (le, instance) (rate(depmon_event_loop_lag_seconds_bucket{",
    "inconclusive runs by reason": "sum by (reason) (rate(depmon_probes_inconclusive_total{",
    "canaries": "depmon_canary_up{",
    "PagerDuty events dropped": 'outcome="dropped"',
}
# The replicated mode's row (issue 14, SPEC 10.4): the leader and the replicas seeing each dependency down.
REPLICAS_ROW_TITLE = "Replicas (replicated mode)"
REPLICAS_ROW_NEEDLES = {
    "leader by replica": "max by (replica) (depmon_replica_leader{",
    "replicas seeing a dependency down": "max by (dependency) (depmon_dependency_down_replicas{",
}


def _row_panels(title: str) -> list[dict[str, Any]]:
    """The panels under the expanded row `title`: below it and above the next row."""
    (row,) = [p for p in PANELS if p["type"] == "row" and p["title"] == title]
    top = row["gridPos"]["y"]
    later_rows = [p["gridPos"]["y"] for p in PANELS if p["type"] == "row" and p["gridPos"]["y"] > top]
    bottom = min(later_rows, default=float("inf"))
    return [p for p in QUERY_PANELS if top < p["gridPos"]["y"] < bottom]


def concrete(expr: str) -> str:
    """The expression with Grafana's variables replaced by values promtool can parse."""
    for name, value in BUILTIN_DURATIONS.items():
        expr = expr.replace(name, value)
    for name in VARIABLES:
        # Query variables sit in regex matchers (=~"$dependency"): any regex is a valid stand-in.
        expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
    return expr


def _promtool_check_expressions(promtool: str, exprs: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "grafana-dashboard-expressions",
                "rules": [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = directory / "dashboard-expressions.rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


class TestDashboardModel:
    """deploy/grafana/dashboards/depmon.json as a Grafana dashboard model."""

    def test_is_a_schema_42_dashboard_with_a_stable_uid(self) -> None:
        """The dashboard uses the classic model's schemaVersion 42 and the uid `depmon`."""
        assert DASHBOARD["schemaVersion"] == 42
        assert DASHBOARD["uid"] == "depmon"
        assert DASHBOARD["title"]

    def test_has_a_prometheus_datasource_variable(self) -> None:
        """A template variable named `datasource` of type datasource selects a Prometheus data source."""
        variable = VARIABLES["datasource"]
        assert variable["type"] == "datasource"
        assert variable["query"] == "prometheus"

    def test_uses_no_import_time_inputs(self) -> None:
        """No `__inputs` or ${DS_...} placeholders: file provisioning does not resolve them."""
        text = DASHBOARD_FILE.read_text(encoding="utf-8")
        assert "__inputs" not in DASHBOARD
        assert "${DS_" not in text

    @pytest.mark.parametrize("panel", QUERY_PANELS, ids=[str(p["id"]) for p in QUERY_PANELS])
    def test_panel_and_targets_use_the_datasource_variable(self, panel: dict[str, Any]) -> None:
        """Every panel but a row, and every query of it, point at {type: prometheus, uid: ${datasource}}."""
        assert panel["datasource"] == PANEL_DATASOURCE
        assert panel["targets"], "panel without a query"
        for target in panel["targets"]:
            assert target["datasource"] == PANEL_DATASOURCE

    def test_query_variables_use_the_datasource_variable(self) -> None:
        """Every query template variable reads from ${datasource}."""
        queries = [v for v in VARIABLES.values() if v["type"] == "query"]
        assert queries
        assert all(v["datasource"] == PANEL_DATASOURCE for v in queries)

    def test_panel_ids_are_unique(self) -> None:
        """No two panels share an id."""
        ids = [p["id"] for p in PANELS]
        assert len(ids) == len(set(ids))

    def test_panels_fit_the_grid_without_overlapping(self) -> None:
        """Every panel lies within the 24-column grid and no two panels overlap."""
        cells = {}
        for panel in PANELS:
            grid = panel["gridPos"]
            assert grid["x"] >= 0
            assert min(grid["w"], grid["h"]) > 0
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            cells[panel["id"]] = {
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            }
        for (a, cells_a), (b, cells_b) in itertools.combinations(cells.items(), 2):
            assert not cells_a & cells_b, f"panels {a} and {b} overlap"

    @pytest.mark.parametrize(
        ("needle", "what"),
        [
            ("depmon_feature_state", "feature health at a glance"),
            ("depmon_dependency_state", "dependency state timeline"),
            ("histogram_quantile", "probe latency quantiles"),
            ("depmon_probe_duration_seconds_bucket", "probe latency quantiles"),
            ("depmon_incidents_open", "open incidents"),
            ("depmon_maintenance_windows_open", "maintenance windows"),
            ("depmon_dependency_in_maintenance", "maintenance windows"),
            ("depmon_pagerduty_outbox_pending", "outbox"),
            ('sum by (destination) (depmon_outbox_pending{instance=~"$instance", destination!="pagerduty"})', "outbox"),
            ("rate(depmon_pagerduty_events_total", "outbox"),
            ("depmon_scheduler_lag_seconds_bucket", "scheduler lag"),
            ("depmon_overloaded", "depmon itself: overloaded"),
            ("depmon_event_loop_lag_seconds_bucket", "depmon itself: event-loop lag"),
            ("rate(depmon_probes_inconclusive_total", "depmon itself: inconclusive probe runs"),
            ("depmon_canary_up", "depmon itself: canaries"),
            ('depmon_pagerduty_events_total{instance=~"$instance", outcome="dropped"}', "depmon itself: dropped"),
            ("depmon_replica_leader", "replicas: leader"),
            ("depmon_dependency_down_replicas", "replicas: down replicas per dependency"),
        ],
    )
    def test_has_the_operations_panels(self, needle: str, what: str) -> None:
        """The dashboard queries what the operations panels need (feature, dependency, latency, ...)."""
        assert any(needle in target["expr"] for _, target in TARGETS), what

    def test_rows_are_expanded_and_hold_no_panels_of_their_own(self) -> None:
        """Rows are expanded, so the panels under them sit in the top-level list the tests read."""
        rows = [p for p in PANELS if p["type"] == "row"]
        assert rows
        for row in rows:
            assert row["collapsed"] is False
            assert row["panels"] == []
            assert (row["gridPos"]["x"], row["gridPos"]["w"], row["gridPos"]["h"]) == (0, 24, 1)

    @pytest.mark.parametrize(
        ("row", "what", "needle"),
        [(SELF_ROW_TITLE, what, needle) for what, needle in SELF_ROW_NEEDLES.items()]
        + [(REPLICAS_ROW_TITLE, what, needle) for what, needle in REPLICAS_ROW_NEEDLES.items()],
    )
    def test_row_has_the_panel(self, row: str, what: str, needle: str) -> None:
        """The "depmon itself" row has a panel per view of depmon's health (issue 10), "Replicas" per replica view."""
        matching = [p for p in _row_panels(row) if any(needle in t["expr"] for t in p["targets"])]
        assert len(matching) == 1, what

    @pytest.mark.parametrize(
        ("metric", "codes"),
        [
            ("depmon_overloaded", {"ok": 0, "overloaded": 1}),
            ("depmon_canary_up", {"down": 0, "up": 1}),
            ("depmon_replica_leader", {"follower": 0, "leader": 1}),
        ],
    )
    def test_self_gauges_are_named_on_a_state_timeline(self, metric: str, codes: dict[str, float]) -> None:
        """The 1/0 gauges of depmon itself show as named states over time, not as bare numbers."""
        panel = _state_panel(metric)
        assert panel["type"] == "state-timeline"
        assert _state_codes(panel) == codes

    def test_dependency_states_are_shown_on_a_state_timeline(self) -> None:
        """The dependency state panel is a state-timeline."""
        assert _state_panel("depmon_dependency_state")["type"] == "state-timeline"

    @pytest.mark.parametrize(("panel", "target"), TARGETS, ids=TARGET_IDS)
    def test_rates_use_the_rate_interval(self, panel: dict[str, Any], target: dict[str, Any]) -> None:
        """rate(), irate(), increase() and deriv() ranges are $__rate_interval, not a fixed duration."""
        ranges = re.findall(r"\b(?:rate|irate|increase|deriv)\s*\([^\[]*\[([^\]]*)\]", target["expr"])
        assert all(r == "$__rate_interval" for r in ranges), ranges

    @pytest.mark.parametrize(("panel", "target"), TARGETS, ids=TARGET_IDS)
    def test_query_uses_only_defined_variables(self, panel: dict[str, Any], target: dict[str, Any]) -> None:
        """Every $variable in a query is a template variable of the dashboard or a Grafana built-in."""
        used = set(re.findall(r"\$\{?(\w+)\}?", target["expr"]))
        assert used <= set(VARIABLES) | {"__rate_interval", "__interval", "__range"}, used


class TestDashboardQueries:
    """The PromQL of every panel query."""

    @pytest.mark.needs_tool
    @pytest.mark.parametrize(("panel", "target"), TARGETS, ids=TARGET_IDS)
    def test_query_parses(self, promtool: str, tmp_path: Path, panel: dict[str, Any], target: dict[str, Any]) -> None:
        """promtool parses the query, as a recording rule, once Grafana's variables are replaced."""
        # promtool 2.42 has no `promql` subcommand: `check rules` is the parser at hand.
        result = _promtool_check_expressions(promtool, [concrete(target["expr"])], tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.needs_tool
    def test_the_parse_check_rejects_invalid_queries(self, promtool: str, tmp_path: Path) -> None:
        """The promtool check fails on an unbalanced expression and on an unreplaced Grafana variable."""
        assert _promtool_check_expressions(promtool, ["sum(rate(depmon_probes_total[1m])"], tmp_path).returncode != 0
        unreplaced = "rate(depmon_probes_total[$__rate_interval])"
        assert _promtool_check_expressions(promtool, [unreplaced], tmp_path).returncode != 0

    @pytest.mark.parametrize(("panel", "target"), TARGETS, ids=TARGET_IDS)
    def test_query_selects_only_spec_metrics(
        self, panel: dict[str, Any], target: dict[str, Any], allowed_series: set[str], metric_names_of: Any
    ) -> None:
        """Every metric a panel selects is in SPEC section 6 or 10.4 (histograms as _bucket, counters with _total)."""
        names = metric_names_of(concrete(target["expr"]))
        assert names, "no metric found in the query"
        assert names <= allowed_series, names - allowed_series

    @pytest.mark.parametrize("name", [n for n, v in VARIABLES.items() if v["type"] == "query"])
    def test_variable_query_selects_only_spec_metrics(
        self, name: str, allowed_series: set[str], metric_names_of: Any
    ) -> None:
        """A template variable's label_values() query reads a metric of SPEC section 6 or 10.4."""
        definition = VARIABLES[name]["definition"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
        assert match, definition
        assert metric_names_of(concrete(match.group(1))) <= allowed_series


def _state_panel(metric: str) -> dict[str, Any]:
    (panel,) = [p for p in QUERY_PANELS if any(metric in t["expr"] for t in p["targets"])]
    return panel


def _state_codes(panel: dict[str, Any]) -> dict[str, float]:
    """State name -> the number the panel's value mappings show as that name."""
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    return {option["text"]: float(value) for value, option in mapping["options"].items()}


class TestStateEncoding:
    """The state panels turn one-series-per-state gauges into one number per entity."""

    @pytest.mark.needs_tool
    @pytest.mark.parametrize(
        ("metric", "key"), [("depmon_feature_state", "feature"), ("depmon_dependency_state", "dependency")]
    )
    def test_each_state_shows_as_its_own_name(self, promtool: str, tmp_path: Path, metric: str, key: str) -> None:
        """With one entity in each state, the panel's query gives the number its mappings name as that state."""
        panel = _state_panel(metric)
        codes = _state_codes(panel)
        series = []
        for entity_state in codes:
            for state in codes:
                labels = f'{key}="e_{entity_state}",state="{state}",job="depmon",instance="127.0.0.1:9464"'
                series.append({"series": f"{metric}{{{labels}}}", "values": f"{int(state == entity_state)}x5"})
        test = {
            "rule_files": [],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": series,
                    "promql_expr_test": [
                        {
                            "expr": concrete(panel["targets"][0]["expr"]),
                            "eval_time": "2m",
                            "exp_samples": [
                                {"labels": f'{{{key}="e_{state}"}}', "value": code} for state, code in codes.items()
                            ],
                        }
                    ],
                }
            ],
        }
        path = tmp_path / "state-encoding.test.yml"
        path.write_text(yaml.safe_dump(test), encoding="utf-8")
        result = subprocess.run(
            [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize("metric", ["depmon_feature_state", "depmon_dependency_state"])
    def test_mappings_name_every_state(self, metric: str) -> None:
        """The value mappings name each state of the metric (SPEC section 4) exactly once."""
        expected = {
            "depmon_feature_state": {"ok", "degraded", "down", "maintenance", "unknown"},
            "depmon_dependency_state": {"up", "degraded", "down", "maintenance", "unknown"},
        }[metric]
        codes = _state_codes(_state_panel(metric))
        assert set(codes) == expected
        assert len(set(codes.values())) == len(codes)


class TestProvisioning:
    """deploy/grafana/provisioning/*.yaml."""

    def test_dashboard_provider_loads_files(self) -> None:
        """The dashboard provider is a file provider with a path, in provisioning format version 1."""
        config = yaml.safe_load((GRAFANA / "provisioning" / "dashboards.yaml").read_text(encoding="utf-8"))
        assert config["apiVersion"] == 1
        (provider,) = config["providers"]
        assert provider["type"] == "file"
        assert provider["options"]["path"].startswith("/")

    def test_datasource_is_the_default_prometheus(self) -> None:
        """The provisioned data source is a default Prometheus, the type the dashboard variable asks for."""
        config = yaml.safe_load((GRAFANA / "provisioning" / "datasources.yaml").read_text(encoding="utf-8"))
        assert config["apiVersion"] == 1
        (source,) = config["datasources"]
        assert source["type"] == VARIABLES["datasource"]["query"] == "prometheus"
        assert source["isDefault"] is True
        assert source["url"].startswith("http")
