"""The figures of `depmon bench`: pure computations over what was read from /proc and /metrics."""

from __future__ import annotations

import json
import math

import pytest

from monitor.commands.bench import (
    Figures,
    Report,
    Scrape,
    blackbox_probe_result,
    bucket_delta,
    config_files,
    cpu_seconds,
    decision_times,
    depmon_config,
    failure_figures,
    histogram_quantile,
    page_bound,
    peak_rss_bytes,
    percentile,
    probe_timeout,
    render_text,
    scheduled_runs,
    triggered_pages,
)
from monitor.config import Config

pytestmark = pytest.mark.unit

# /proc/<pid>/stat of a process whose name holds a space and a parenthesis; utime 250, stime 50.
STAT = "4242 (python (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 100 1 2 3"

METRICS = """\
# HELP depmon_probes_total Probe runs by outcome
# TYPE depmon_probes_total counter
depmon_probes_total{dependency="a",probe="health",kind="http",outcome="ok"} 90.0
depmon_probes_total{dependency="a",probe="health",kind="http",outcome="timeout"} 4.0
depmon_probes_total{dependency="b",probe="health",kind="http",outcome="ok"} 6.0
# HELP depmon_scheduler_lag_seconds How late probe runs start against their schedule
# TYPE depmon_scheduler_lag_seconds histogram
depmon_scheduler_lag_seconds_bucket{le="0.01"} 50.0
depmon_scheduler_lag_seconds_bucket{le="0.1"} 99.0
depmon_scheduler_lag_seconds_bucket{le="+Inf"} 100.0
depmon_scheduler_lag_seconds_count 100.0
depmon_scheduler_lag_seconds_sum 2.0
# HELP depmon_dependency_up 1 if the dependency is up or degraded, else 0
# TYPE depmon_dependency_up gauge
depmon_dependency_up{dependency="a"} 1.0
depmon_dependency_up{dependency="b"} 0.0
"""


def _figures(name: str = "depmon", **overrides: object) -> Figures:
    values: dict[str, object] = {
        "name": name,
        "seconds": 10.0,
        "scheduled": 5000.0,
        "run": 4950,
        "failed": 0,
        "cpu_seconds": 4.95,
        "lag_p99_seconds": 0.02,
        "lag_meaning": "scheduler lag",
        "peak_rss_bytes": 100 * 2**20,
        "metrics_seconds": 0.2,
    }
    values.update(overrides)
    return Figures(**values)  # type: ignore[arg-type]


class TestProcReading:
    def test_cpu_is_user_plus_system_time_counted_after_the_command_name(self) -> None:
        """utime and stime are read after the last parenthesis, so a name with spaces does not shift them."""
        assert cpu_seconds(STAT, 100) == pytest.approx(3.0)

    def test_peak_rss_is_vmhwm_in_bytes(self) -> None:
        """VmHWM, not the current VmRSS, is the peak; kB become bytes."""
        status = "Name:\tdepmon\nVmHWM:\t  102400 kB\nVmRSS:\t   51200 kB\n"
        assert peak_rss_bytes(status) == 100 * 2**20

    def test_peak_rss_of_a_process_without_memory_is_zero(self) -> None:
        """A status without VmHWM (a zombie) reads as 0."""
        assert peak_rss_bytes("Name:\tgone\nState:\tZ (zombie)\n") == 0


class TestQuantiles:
    def test_histogram_quantile_interpolates_in_its_bucket(self) -> None:
        """p50 of 50 observations under 10 ms and 49 between 10 and 100 ms is the 10 ms bound."""
        buckets = [(0.01, 50.0), (0.1, 99.0), (math.inf, 100.0)]
        assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
        assert histogram_quantile(0.9, buckets) == pytest.approx(0.01 + 0.09 * 40 / 49)

    def test_a_quantile_in_the_inf_bucket_is_the_highest_finite_bound(self) -> None:
        """When the p99 lies beyond every bound, the histogram knows only that it is above the last one."""
        assert histogram_quantile(0.99, [(0.01, 10.0), (5.0, 50.0), (math.inf, 100.0)]) == 5.0

    def test_no_observations_is_zero(self) -> None:
        """An empty window has no lag rather than a division by zero."""
        assert histogram_quantile(0.99, [(0.01, 0.0), (math.inf, 0.0)]) == 0.0
        assert histogram_quantile(0.99, []) == 0.0

    def test_bucket_delta_keeps_only_the_observations_of_the_window(self) -> None:
        """Counts before the window are subtracted bucket by bucket."""
        before = {0.01: 40.0, math.inf: 40.0}
        after = {0.01: 50.0, math.inf: 60.0}
        assert sorted(bucket_delta(before, after)) == [(0.01, 10.0), (math.inf, 20.0)]

    def test_percentile_is_nearest_rank(self) -> None:
        """p99 of 1..100 is 99, p50 is 50, and no samples is 0."""
        samples = [float(n) for n in range(100, 0, -1)]
        assert percentile(samples, 0.99) == 99.0
        assert percentile(samples, 0.5) == 50.0
        assert percentile([], 0.99) == 0.0


class TestScrape:
    def test_total_sums_every_series_and_can_leave_some_out(self) -> None:
        """All runs are 100; leaving out outcome ok leaves the 4 failures."""
        scrape = Scrape.parse(METRICS)
        assert scrape.total("depmon_probes_total") == 100.0
        assert scrape.total("depmon_probes_total", outcome="ok") == 4.0

    def test_buckets_and_counts(self) -> None:
        """Histogram buckets map their bound to their count; one dependency is not up."""
        scrape = Scrape.parse(METRICS)
        assert scrape.buckets("depmon_scheduler_lag_seconds") == {0.01: 50.0, 0.1: 99.0, math.inf: 100.0}
        assert scrape.count("depmon_dependency_up", 0.0) == 1
        assert scrape.count("depmon_dependency_up", 1.0, dependency="a") == 1
        assert scrape.count("depmon_dependency_up", 1.0, dependency="b") == 0
        assert scrape.total("no_such_metric") == 0.0


class TestFigures:
    def test_cpu_per_probe_and_run_ratio(self) -> None:
        """4.95 CPU seconds over 4,950 runs is 1 ms a probe; 4,950 of 5,000 is 99%."""
        figures = _figures()
        assert figures.cpu_ms_per_probe == pytest.approx(1.0)
        assert figures.run_ratio == pytest.approx(0.99)

    def test_no_run_has_no_finite_cost(self) -> None:
        """A monitor that ran nothing shows no CPU per probe in JSON, not a division error."""
        figures = _figures(run=0)
        assert figures.as_dict()["cpu_ms_per_probe"] is None
        assert figures.run_ratio == 0.0

    def test_scheduled_runs(self) -> None:
        """1,000 targets every 2 s are due 15,000 times in 30 s."""
        assert scheduled_runs(1000, 2.0, 30.0) == 15000.0

    def test_ratios_are_depmon_over_blackbox(self) -> None:
        """Half of blackbox's CPU per probe is a ratio of 0.5; without blackbox there are no ratios."""
        blackbox = _figures("blackbox_exporter", cpu_seconds=9.9, peak_rss_bytes=25 * 2**20, metrics_seconds=0.01)
        report = Report(1000, 2.0, 10.0, "nginx", _figures(), blackbox)
        ratios = report.ratios()
        assert ratios["cpu_per_probe"] == pytest.approx(0.5)
        assert ratios["peak_rss"] == pytest.approx(4.0)
        assert Report(1000, 2.0, 10.0, "nginx", _figures(), None, "skipped").ratios() == {}

    def test_json_report_carries_every_field(self) -> None:
        """The JSON document names each figure of each monitor, in milliseconds and megabytes."""
        report = Report(1000, 2.0, 10.0, "nginx", _figures(pages=0, self_pages=0, overloaded=False), None, "skipped")
        document = json.loads(json.dumps(report.as_dict()))
        assert document["blackbox"] is None
        assert document["ratio"] is None
        assert document["scheduled_per_second"] == 500.0
        depmon = document["depmon"]
        assert depmon["run"] == 4950
        assert depmon["scheduled"] == 5000
        assert depmon["cpu_ms_per_probe"] == 1.0
        assert depmon["lag_p99_ms"] == 20.0
        assert depmon["peak_rss_mb"] == 100.0
        assert depmon["pages"] == 0
        assert depmon["overloaded"] is False

    def test_text_report_shows_both_monitors_side_by_side(self) -> None:
        """The table has a column per monitor and the ratio column when blackbox ran."""
        blackbox = _figures("blackbox_exporter", cpu_seconds=9.9, lag_meaning="probe duration")
        text = render_text(Report(1000, 2.0, 10.0, "nginx", _figures(pages=1, self_pages=1), blackbox))
        assert "depmon/blackbox" in text
        assert "0.50x" in text
        assert "4950 / 5000 (99.0%)" in text
        assert "1 (1)" in text


class TestInputs:
    def test_generated_config_is_valid_with_features_of_five(self) -> None:
        """The bench config validates: N dependencies of one http probe, a feature per 5 dependencies."""
        document = depmon_config("http://127.0.0.1:8080", 12, 2.0, "127.0.0.1:9464", "/tmp/state")
        config = Config.model_validate(document)
        assert len(config.dependencies) == 12
        assert len(config.features) == 3
        assert config.monitor.defaults.timeout < config.monitor.defaults.interval

    def test_a_large_config_is_split_into_files_that_merge_back(self) -> None:
        """1,200 dependencies in files of 500 each: the sections merge back to the whole document."""
        document = depmon_config("http://127.0.0.1:8080", 1200, 2.0, "127.0.0.1:9464", "/tmp/state")
        files = config_files(document, per_file=500)
        assert sorted(files) == [
            "00-monitor.yaml",
            "dependencies-0000.yaml",
            "dependencies-0001.yaml",
            "dependencies-0002.yaml",
            "features-0000.yaml",
        ]
        merged: dict[str, dict[str, object]] = {}
        for part in files.values():
            for section, entries in part.items():
                merged.setdefault(section, {}).update(entries)
        assert merged == document
        assert max(len(part.get("dependencies", {})) for part in files.values()) == 500

    def test_probe_timeout_is_below_the_interval(self) -> None:
        """Half the interval, at most 2 s."""
        assert probe_timeout(1.0) == 0.5
        assert probe_timeout(10.0) == 2.0

    def test_pages_are_the_incident_triggered_events_and_self_pages_end_in_self(self) -> None:
        """Other events, and lines that are not JSON, are not pages."""
        lines = [
            json.dumps({"event": "incident_triggered", "dedup_key": "depmon/bench/dep00001"}),
            json.dumps({"event": "incident_triggered", "dedup_key": "depmon/bench/self"}),
            json.dumps({"event": "incident_resolved", "dedup_key": "depmon/bench/dep00001"}),
            'not json "incident_triggered"',
        ]
        assert triggered_pages(lines) == (2, 1)

    def test_decision_times_are_each_dependencys_first_trigger_logged(self) -> None:
        """The first `incident_triggered` of each dependency, by its log timestamp; self pages are not counted."""
        lines = [
            json.dumps(
                {"event": "incident_triggered", "dedup_key": "depmon/bench/d1", "timestamp": "2026-11-30T07:00:01Z"}
            ),
            json.dumps(
                {"event": "incident_triggered", "dedup_key": "depmon/bench/self", "timestamp": "2026-11-30T07:00:02Z"}
            ),
            json.dumps(
                {"event": "incident_triggered", "dedup_key": "depmon/bench/d1", "timestamp": "2026-11-30T07:00:09Z"}
            ),
            json.dumps(
                {"event": "incident_resolved", "dedup_key": "depmon/bench/d2", "timestamp": "2026-11-30T07:00:03Z"}
            ),
        ]
        assert decision_times(lines) == {"depmon/bench/d1": 1796022001.0}

    def test_blackbox_probe_answer(self) -> None:
        """probe_success and probe_duration_seconds are read from the exporter's answer."""
        body = b"# HELP probe_success x\nprobe_duration_seconds 0.0123\nprobe_success 1\n"
        assert blackbox_probe_result(body) == (True, 0.0123)
        assert blackbox_probe_result(b"probe_success 0\n") == (False, 0.0)


class TestAllFail:
    """`--fail-after`: the bound on the pages and the figures read from what PagerDuty received."""

    def test_bound_is_interval_plus_confirmations_plus_a_second(self) -> None:
        """2 s interval, threshold 3, 2 s confirmations: 2 + 2 x 2 + 1 = 7 s."""
        assert page_bound(2.0, 3, 2.0) == 7.0
        assert page_bound(30.0, 1, 2.0) == 31.0

    def test_first_trigger_per_dependency_after_the_switch(self) -> None:
        """Each dependency's first trigger after the switch counts, not repeats or earlier ones; self pages apart."""
        events = [
            ("trigger", "depmon/bench/dep00009", 99.0),  # before the switch
            ("trigger", "depmon/bench/dep00001", 103.0),
            ("trigger", "depmon/bench/dep00001", 104.0),  # an update of the same incident
            ("resolve", "depmon/bench/dep00002", 103.5),
            ("trigger", "depmon/bench/dep00002", 108.5),
            ("trigger", "depmon/bench/self", 102.0),
        ]
        figures = failure_figures(events, 100.0, 8.0, 7.0, 3, 0.04)
        assert figures.page_delays == (3.0, 8.5)
        assert (figures.within_bound, figures.self_pages, figures.expected_pages) == (1, 1, 3)
        document = figures.as_dict()
        assert (document["pages"], document["first_page_seconds"], document["last_page_seconds"]) == (2, 3.0, 8.5)
        assert document["lag_p99_ms"] == 40.0
        assert "2 of 3 expected pages" in figures.lines()[0]

    def test_config_sends_pages_to_the_fake_only_when_given(self) -> None:
        """With an events URL the generated config pages it with a valid key; without, it is a dry run."""
        with_pd = depmon_config("http://127.0.0.1:8080", 5, 2.0, "127.0.0.1:9464", "/tmp/s", "http://127.0.0.1:9")
        config = Config.model_validate(with_pd)
        assert config.pagerduty.events_url == "http://127.0.0.1:9"
        assert len(config.pagerduty.routing_key.get_secret_value()) == 32
        assert "pagerduty" in config_files(with_pd)["00-monitor.yaml"]
        assert "pagerduty" not in depmon_config("http://127.0.0.1:8080", 5, 2.0, "127.0.0.1:9464", "/tmp/s")
