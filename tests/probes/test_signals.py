"""Traffic signals (SPEC 11.3), the pure parts: the config of the two kinds and `enabled`, the
readings of Prometheus's and Datadog's answers (a hypothesis property over any answer), the
judgement against a threshold, a confirmation that counts only a new point, and the disagreement
between traffic and the active probes."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import Config, ConfigError, DatadogProbeSpec, PrometheusProbeSpec, Timing, load_config
from monitor.results import Outcome, ProbeResult, Signal
from monitor.state.disagreement import PROBES_FAILING, TRAFFIC_FAILING, disagreement
from monitor.state.health import ProbeHealth, ProbeStatus, observe
from probes import datadog, prometheus
from probes._signals import NO_DATA, SIGNAL_BACKEND, BackendUnavailable, judge

pytestmark = pytest.mark.unit

QUERY = 'sum(rate(api_external_http_request_total{service="caseflow",status!="success"}[5m]))'


def _prometheus(**fields: Any) -> PrometheusProbeSpec:
    return PrometheusProbeSpec.model_validate(
        {"name": "traffic", "kind": "prometheus", "url": "http://127.0.0.1:9090", "query": QUERY} | fields
    )


def _config(tmp_path: Path, probe: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "depmon.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            monitor: {environment: test}
            dependencies:
              caseflow:
                name: Caseflow
                probes:
                  - {name: health, kind: http, url: "https://caseflow.invalid/health"}
            """
        )
        + textwrap.indent(probe, " " * 6)
    )
    return load_config(path, environ=environ or {})


def _error_lines(tmp_path: Path, probe: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, probe, environ)
    return [line.split(": ", 1)[1] for line in str(caught.value).splitlines()]


class TestSignalConfig:
    """The prometheus and datadog kinds in the config, and `enabled` on every kind."""

    def test_a_disabled_probe_may_leave_its_required_fields_empty(self, tmp_path: Path) -> None:
        """`enabled: ${DEPMON_TRAFFIC:-false}` with no backend loads, and the probe is not iterated."""
        config = _config(
            tmp_path,
            "- {name: traffic, kind: prometheus, url: '${PROMETHEUS_URL:-}', enabled: '${DEPMON_TRAFFIC:-false}'}\n",
        )
        assert [p.name for _, p in config.iter_probes()] == ["health"]
        assert [p.name for _, p in config.iter_probes(disabled=True)] == ["health", "traffic"]

    def test_an_enabled_probe_with_an_empty_required_field_is_an_error(self, tmp_path: Path) -> None:
        """Each empty required field of an enabled probe is named at its own key."""
        lines = _error_lines(
            tmp_path,
            "- {name: traffic, kind: datadog, query: q, fail_above: 5, api_key: '${DD_API_KEY:-}'}\n",
        )
        why = "required while the probe is enabled (set it, or `enabled: false`)"
        assert lines == [f"dependencies.caseflow.probes[1].{key}: {why}" for key in ("api_key", "app_key")]

    def test_exactly_one_threshold(self, tmp_path: Path) -> None:
        """fail_above and fail_below together are refused, and so is neither on an enabled probe."""
        both = "- {name: traffic, kind: prometheus, url: 'http://p:9090', query: q, fail_above: 1, fail_below: 0}\n"
        neither = "- {name: traffic, kind: prometheus, url: 'http://p:9090', query: q}\n"
        assert _error_lines(tmp_path, both) == [
            "dependencies.caseflow.probes[1]: fail_above and fail_below: exactly one of them, not both"
        ]
        assert _error_lines(tmp_path, neither) == [
            "dependencies.caseflow.probes[1]: fail_above or fail_below is required (exactly one)"
        ]

    def test_datadog_defaults_and_secrets(self, tmp_path: Path) -> None:
        """Datadog's URL defaults to api.datadoghq.com, its window to 5m; both keys are secrets."""
        config = _config(
            tmp_path,
            "- {name: traffic, kind: datadog, query: q, fail_above: 5, api_key: '${K}', app_key: '${A}'}\n",
            {"K": "the-api-key-value", "A": "the-app-key-value"},
        )
        spec = config.dependencies["caseflow"].probes[1]
        assert isinstance(spec, DatadogProbeSpec)
        assert (spec.url, spec.window, spec.no_data) == ("https://api.datadoghq.com", 300.0, "inconclusive")
        assert {"the-api-key-value", "the-app-key-value"} <= set(config.secret_values())

    def test_a_datadog_url_in_clear_text_is_refused_off_loopback(self, tmp_path: Path) -> None:
        """The keys travel to the URL: http:// only to loopback."""
        probe = "- {name: t, kind: datadog, url: 'http://api.ddog-gov.com', query: q, fail_above: 5, enabled: false}\n"
        (line,) = _error_lines(tmp_path, probe)
        assert line.startswith("dependencies.caseflow.probes[1].url: ")

    def test_an_infinite_threshold_is_refused(self, tmp_path: Path) -> None:
        """A threshold is a finite number."""
        probe = "- {name: t, kind: prometheus, url: 'http://p:9090', query: q, fail_above: .inf}\n"
        (line,) = _error_lines(tmp_path, probe)
        assert line.startswith("dependencies.caseflow.probes[1].fail_above: ")


# ---------------------------------------------------------------------------------------------
# Readings


def _vector(*values: str, at: float = 1700000000.5) -> dict[str, Any]:
    result = [{"metric": {}, "value": [at, v]} for v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class TestPrometheusReading:
    """An instant query's answer -> one number, no data, or the backend's trouble."""

    def test_one_sample(self) -> None:
        """The value and the evaluation time of a one-series vector."""
        assert prometheus.reading("P", _vector("0.25")) == (0.25, 1700000000.5, "")

    def test_a_scalar(self) -> None:
        """A scalar result is one number too."""
        document = {"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "3"]}}
        assert prometheus.reading("P", document) == (3.0, 1700000000.0, "")

    def test_an_empty_vector_is_no_data(self) -> None:
        """No series: no value, and why."""
        assert prometheus.reading("P", _vector()) == (None, None, "an empty vector")

    @pytest.mark.parametrize(
        ("document", "says"),
        [
            ({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}, "parse error at char 5"),
            (_vector("1", "2"), "2 series (aggregate it"),
            ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "a 'matrix'"),
            ({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}, "a 'string'"),
            (_vector("lots"), "not [time, number]"),
            ([1, 2], "not a JSON object"),
        ],
    )
    def test_what_is_not_one_number_is_the_backends_trouble(self, document: Any, says: str) -> None:
        """An error status, several series, a matrix or a string: readable, never a crash."""
        with pytest.raises(BackendUnavailable) as caught:
            prometheus.reading("Prometheus at p:9090", document)
        assert says in caught.value.detail


def _datadog(*points: list[Any]) -> dict[str, Any]:
    return {"status": "ok", "res_type": "time_series", "series": [{"pointlist": list(points)}]}


class TestDatadogReading:
    """A v1 query's answer -> the last non-null point of the first series."""

    def test_the_last_non_null_point(self) -> None:
        """Trailing nulls (a rollup still filling) are skipped; the time is in milliseconds."""
        assert datadog.reading("D", _datadog([1000.0, 3], [2000.0, 4], [3000.0, None])) == (4.0, 2.0, "")

    @pytest.mark.parametrize(
        ("document", "why"),
        [
            ({"status": "ok", "series": []}, "no series"),
            (_datadog(), "the series has no points"),
            (_datadog([1000.0, None]), "the series has no non-null point"),
        ],
    )
    def test_no_data(self, document: Any, why: str) -> None:
        """No series, no points, only nulls: no data, and why."""
        assert datadog.reading("D", document) == (None, None, why)

    def test_an_error_status(self) -> None:
        """Datadog's own error message is shown."""
        with pytest.raises(BackendUnavailable) as caught:
            datadog.reading("Datadog at d:443", {"status": "error", "error": "Error parsing query"})
        assert caught.value.detail == "Datadog at d:443 answered an error: Error parsing query"


# Any JSON a backend could send: the readers must say something readable about each.
_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_PROMETHEUS_LIKE = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["success", "error"]) | _JSON,
        "data": st.fixed_dictionaries(
            {
                "resultType": st.sampled_from(["vector", "scalar", "matrix", "string"]) | _JSON,
                "result": st.lists(
                    st.fixed_dictionaries(
                        {"value": st.tuples(st.floats(), st.sampled_from(["NaN", "+Inf", "1", "0.5", "x"]) | _JSON)}
                    ),
                    max_size=3,
                )
                | _JSON,
            }
        ),
    }
)
_DATADOG_LIKE = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["ok", "error"]),
        "series": st.lists(
            st.fixed_dictionaries({"pointlist": st.lists(st.tuples(st.floats(), st.none() | st.floats()) | _JSON)}),
            max_size=2,
        )
        | _JSON,
    }
)


def _judged(kind: str, document: Any) -> ProbeResult:
    spec = _prometheus(fail_above=0.25)
    try:
        value, at, empty = (prometheus if kind == "prometheus" else datadog).reading("backend", document)
    except BackendUnavailable as exc:
        return ProbeResult.unanswered(SIGNAL_BACKEND, exc.outcome, exc.detail)
    return judge(spec, "backend", value, at, empty)


class TestAnyAnswer:
    """A hypothesis property over Prometheus and Datadog answers."""

    @settings(max_examples=300, deadline=None)
    @given(kind=st.sampled_from(["prometheus", "datadog"]), document=_PROMETHEUS_LIKE | _DATADOG_LIKE | _JSON)
    def test_every_answer_is_a_readable_result(self, kind: str, document: Any) -> None:
        """Never a crash; a failure or success carries a finite value, anything else is inconclusive."""
        result = _judged(kind, document)
        assert result.detail
        assert "\n" not in result.detail
        if result.inconclusive is None:
            assert result.signal is not None
            assert result.signal.value is not None
            assert math.isfinite(result.signal.value)
            assert result.ok is not (result.signal.value > 0.25)
        else:
            assert result.inconclusive in (SIGNAL_BACKEND, NO_DATA)
            assert not result.ok

    @settings(max_examples=200, deadline=None)
    @given(value=st.floats(allow_nan=False, allow_infinity=False), limit=st.floats(-1e6, 1e6))
    def test_well_formed_answers_are_judged_strictly(self, value: float, limit: float) -> None:
        """Both backends' well-formed answers fail exactly when the value is strictly above fail_above."""
        spec = _prometheus(fail_above=limit)
        for reading in (
            prometheus.reading("P", _vector(repr(value))),
            datadog.reading("D", _datadog([1000.0, value])),
        ):
            assert judge(spec, "b", *reading).ok is (not value > limit)


class TestJudge:
    """A value against the threshold; no data per `no_data`."""

    def test_fail_above_is_strict(self) -> None:
        """At the threshold it passes; above it fails with the value, the threshold and the point's time."""
        spec = _prometheus(fail_above=0.25)
        assert judge(spec, "P", 0.25, 0.0, "").ok
        failed = judge(spec, "P", 0.4, 1700000000.0, "")
        assert (failed.ok, failed.outcome) == (False, Outcome.CONDITION)
        assert failed.detail == "[VALUE] 0.4 > fail_above 0.25 at 2023-11-14T22:13:20Z (P)"
        assert failed.signal == Signal(QUERY, 0.4, 1700000000.0)

    def test_fail_below(self) -> None:
        """fail_below fails strictly under it."""
        spec = _prometheus(fail_below=10)
        assert [judge(spec, "P", v, None, "").ok for v in (9.0, 10.0, 11.0)] == [False, True, True]

    @pytest.mark.parametrize(
        ("no_data", "ok", "inconclusive"),
        [("inconclusive", False, NO_DATA), ("fail", False, None), ("pass", True, None)],
    )
    def test_no_data_follows_no_data(self, no_data: str, ok: bool, inconclusive: str | None) -> None:
        """NaN and no value at all are no data, which becomes what `no_data` says."""
        spec = _prometheus(fail_above=0.25, no_data=no_data)
        for value in (None, math.nan):
            result = judge(spec, "P", value, None, "an empty vector")
            assert (result.ok, result.inconclusive) == (ok, inconclusive)

    def test_infinity_is_not_one_number(self) -> None:
        """+Inf (a ratio over no calls) is the backend's trouble, not a failure."""
        result = judge(_prometheus(fail_above=0.25), "P", math.inf, None, "")
        assert (result.inconclusive, result.detail) == (SIGNAL_BACKEND, "P answered +inf, not a finite number")


class TestNewPointOnly:
    """A confirmation counts only a new point."""

    def test_the_same_point_again_counts_for_nothing(self) -> None:
        """Three failures of one point stay one failure; a new point counts."""
        timing = Timing(failure_threshold=2)
        spec = _prometheus(fail_above=0.25)
        health = ProbeHealth()
        for _ in range(3):
            health = observe(health, judge(spec, "P", 0.4, 100.0, ""), timing, parent_failing=False)
        assert (health.status, health.failures) == (ProbeStatus.UNKNOWN, 1)
        health = observe(health, judge(spec, "P", 0.4, 110.0, ""), timing, parent_failing=False)
        assert (health.status, health.failures) == (ProbeStatus.DOWN, 2)


def _health(status: ProbeStatus, failures: int = 0) -> ProbeHealth:
    return ProbeHealth(status=status, failures=failures)


class TestDisagreement:
    """Traffic against the active probes."""

    @pytest.fixture
    def dependency(self, tmp_path: Path) -> Any:
        probe = "- {name: traffic, kind: prometheus, url: 'http://p:9090', query: q, fail_above: 0.25}\n"
        return _config(tmp_path, probe).dependencies["caseflow"]

    def test_traffic_failing_while_the_probes_pass(self, dependency: Any) -> None:
        """Which fail, which pass, and what it suggests."""
        found = disagreement(dependency, [("health", _health(ProbeStatus.UP)), ("traffic", _health(ProbeStatus.DOWN))])
        assert found == {
            "traffic": "failing",
            "passing": ["health"],
            "failing": ["traffic"],
            "suggests": TRAFFIC_FAILING,
        }

    def test_probes_failing_while_traffic_passes(self, dependency: Any) -> None:
        """The other way round: a failing count toward down is enough."""
        found = disagreement(
            dependency, [("health", _health(ProbeStatus.UP, failures=1)), ("traffic", _health(ProbeStatus.UP))]
        )
        assert found == {
            "traffic": "passing",
            "passing": ["traffic"],
            "failing": ["health"],
            "suggests": PROBES_FAILING,
        }

    @pytest.mark.parametrize(
        ("health", "traffic"),
        [
            (ProbeStatus.UP, ProbeStatus.UP),
            (ProbeStatus.DOWN, ProbeStatus.DOWN),
            (ProbeStatus.UNKNOWN, ProbeStatus.DOWN),
            (ProbeStatus.DOWN, ProbeStatus.UNKNOWN),
        ],
    )
    def test_agreement_or_no_verdict_is_none(self, dependency: Any, health: ProbeStatus, traffic: ProbeStatus) -> None:
        """Both sides agreeing, or one side without a verdict yet, is no disagreement."""
        assert disagreement(dependency, [("health", _health(health)), ("traffic", _health(traffic))]) is None
