"""`depmon bench`: size a deployment by running depmon and blackbox_exporter at the same rate.

    loopback target (nginx, else a built-in keep-alive server in a child process)
        ^                                   ^
    depmon run (subprocess, generated     blackbox_exporter (subprocess), driven by a small
    config of N http dependencies)        asyncio client: N / interval `/probe` calls a second

depmon runs as the real daemon (`python -m monitor.commands.cli run`) with a generated config, not
in-process: what a user sizes is the daemon they deploy (engine, pager, store, logs, its
/metrics server on the same event loop), and a separate process is measured exactly as
blackbox_exporter is, from /proc/<pid>/stat and /proc/<pid>/status, with none of this
process's polling, parsing and driving counted. The two run one after the other, not side by
side, so neither takes the other's cores.

Figures, over a measuring window that starts once every probe has run (depmon) or at the first
scheduled call (blackbox): probes run vs scheduled, CPU ms per probe, lag p99 (depmon: its
`depmon_scheduler_lag_seconds` histogram over the window; blackbox: its own
`probe_duration_seconds`), peak RSS (VmHWM), the slowest `/metrics` scrape, and for depmon the
pages it raised (the `incident_triggered` events of its log) and whether it said it was
overloaded.

The figures are pure functions of what was read (`cpu_seconds`, `peak_rss_bytes`,
`histogram_quantile`, `Figures`, `render_text`, ...), unit-tested apart from the processes.
Every loop here is bounded in count and in time; every address is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.errors import BenchError

HOST = "127.0.0.1"
HEALTH_BODY = b'{"status":"pass"}'
FAILING_BODY = b'{"status":"fail"}'
BENCH_ROUTING_KEY = "B" * 32
FAIL_FLAG = "fail"  # a file in the work directory: while it exists, the target answers 503
DEPENDENCIES_PER_FEATURE = 5
MAX_CONCURRENT_PROBES = 200  # depmon's default; blackbox's driver keeps as many calls in flight
SCRAPE_EVERY_SECONDS = 15.0  # a common Prometheus scrape interval; the slowest scrape is the figure
PROGRESS_EVERY_SECONDS = 5.0

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Figures: pure functions of what was read


def cpu_seconds(stat: str, ticks_per_second: int) -> float:
    """User + system CPU seconds of a process from its `/proc/<pid>/stat` line (all its threads).

    The command name (field 2) may hold spaces and parentheses, so fields are counted after the
    last `)`: utime and stime are fields 14 and 15.
    """
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def peak_rss_bytes(status: str) -> int:
    """The peak resident set size (`VmHWM`) from a `/proc/<pid>/status` text; 0 when absent."""
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def scheduled_runs(targets: int, interval: float, seconds: float) -> float:
    """How many runs `targets` probes every `interval` seconds are due in `seconds`."""
    return targets * seconds / interval


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q <= 1) of `samples`; 0 when there are none."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The `q` quantile of a cumulative histogram, interpolated in its bucket as Prometheus does.

    `buckets` are (upper bound, cumulative count) pairs, `+Inf` last. A quantile in the `+Inf`
    bucket is the highest finite bound (the histogram knows no more); no observations is 0.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return 0.0
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Scrape:
    """The samples of one Prometheus text exposition: sample name -> [(labels, value)]."""

    samples: Mapping[str, Sequence[tuple[Mapping[str, str], float]]]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        """Parse a `/metrics` answer (Prometheus text format)."""
        samples: dict[str, list[tuple[Mapping[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return cls(samples)

    def total(self, name: str, **exclude: str) -> float:
        """The sum of the samples of `name`, leaving out those with any of the `exclude` labels."""
        return sum(
            value
            for labels, value in self.samples.get(name, ())
            if not any(labels.get(k) == v for k, v in exclude.items())
        )

    def count(self, name: str, value: float, **only: str) -> int:
        """How many series of `name` with all the `only` labels have exactly `value`."""
        return sum(
            1
            for labels, v in self.samples.get(name, ())
            if v == value and all(labels.get(k) == want for k, want in only.items())
        )

    def buckets(self, histogram: str) -> dict[float, float]:
        """The cumulative buckets of an unlabelled histogram: upper bound -> count."""
        return {float(labels["le"]): value for labels, value in self.samples.get(f"{histogram}_bucket", ())}


def bucket_delta(before: Mapping[float, float], after: Mapping[float, float]) -> list[tuple[float, float]]:
    """The buckets of the observations made between two scrapes of one histogram."""
    return [(bound, count - before.get(bound, 0.0)) for bound, count in after.items()]


@dataclass(frozen=True)
class Figures:
    """What one monitor did over the measuring window."""

    name: str
    seconds: float
    scheduled: float
    run: int
    failed: int
    cpu_seconds: float
    lag_p99_seconds: float
    lag_meaning: str  # what the lag figure is for this monitor
    peak_rss_bytes: int
    metrics_seconds: float  # the slowest /metrics answer
    pages: int | None = None
    self_pages: int | None = None
    overloaded: bool | None = None
    down_at_end: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def run_ratio(self) -> float:
        """Probes run over probes scheduled."""
        return self.run / self.scheduled if self.scheduled else 0.0

    @property
    def cpu_ms_per_probe(self) -> float:
        """CPU milliseconds of the monitor's process per probe run."""
        return 1000 * self.cpu_seconds / self.run if self.run else math.inf

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values (milliseconds and megabytes, rounded)."""
        return {
            "seconds": round(self.seconds, 2),
            "scheduled": round(self.scheduled),
            "run": self.run,
            "run_ratio": round(self.run_ratio, 4),
            "failed": self.failed,
            "cpu_ms_per_probe": _finite(round(self.cpu_ms_per_probe, 3)),
            "cpu_percent_of_a_core": round(100 * self.cpu_seconds / self.seconds, 1) if self.seconds else 0.0,
            "lag_p99_ms": round(1000 * self.lag_p99_seconds, 1),
            "lag_is": self.lag_meaning,
            "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
            "metrics_seconds": round(self.metrics_seconds, 3),
            "pages": self.pages,
            "self_pages": self.self_pages,
            "overloaded": self.overloaded,
            "down_at_end": self.down_at_end,
            "notes": list(self.notes),
        }


def page_bound(interval: float, failure_threshold: int, confirm_interval: float) -> float:
    """Issue 10's bound on a page after an outage starts: interval + (threshold - 1) x confirm + 1 s."""
    return interval + (failure_threshold - 1) * confirm_interval + 1.0


@dataclass(frozen=True)
class FailureFigures:
    """Every target answering 503 at once (`--fail-after`): the pages and the schedule meanwhile.

    The bench's dependencies depend on nothing (features only group them), so each is a root
    cause of its own: one page per dependency is expected, and no self page.
    """

    after_seconds: float  # into the measuring window
    bound_seconds: float
    expected_pages: int
    page_delays: tuple[float, ...]  # seconds from the switch to each dependency's first page received
    self_pages: int
    lag_p99_seconds: float  # scheduler lag from the switch to the end of the window
    # Seconds from the switch to each page's decision: written to the durable outbox and logged as
    # `incident_triggered`. Delivery follows at PagerDuty's pace (about 120 events a minute per
    # routing key), so for many root causes at once the decision is what the bound can hold.
    decision_delays: tuple[float, ...] = ()

    @property
    def decided_within_bound(self) -> int:
        """How many pages were decided (durably queued) within the bound."""
        return sum(1 for delay in self.decision_delays if delay <= self.bound_seconds)

    @property
    def within_bound(self) -> int:
        """How many pages came within the bound."""
        return sum(1 for delay in self.page_delays if delay <= self.bound_seconds)

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values."""
        return {
            "after_seconds": self.after_seconds,
            "bound_seconds": self.bound_seconds,
            "expected_pages": self.expected_pages,
            "pages": len(self.page_delays),
            "within_bound": self.within_bound,
            "self_pages": self.self_pages,
            "first_page_seconds": round(min(self.page_delays), 3) if self.page_delays else None,
            "p50_page_seconds": round(percentile(self.page_delays, 0.5), 3) if self.page_delays else None,
            "p99_page_seconds": round(percentile(self.page_delays, 0.99), 3) if self.page_delays else None,
            "last_page_seconds": round(max(self.page_delays), 3) if self.page_delays else None,
            "lag_p99_ms": round(1000 * self.lag_p99_seconds, 1),
            "decided": len(self.decision_delays),
            "decided_within_bound": self.decided_within_bound,
            "p99_decision_seconds": round(percentile(self.decision_delays, 0.99), 3) if self.decision_delays else None,
            "last_decision_seconds": round(max(self.decision_delays), 3) if self.decision_delays else None,
        }

    def lines(self) -> list[str]:
        """The figures as report lines."""
        d = self.as_dict()
        when = (
            f"first {d['first_page_seconds']} s, p50 {d['p50_page_seconds']} s, p99 {d['p99_page_seconds']} s, "
            f"last {d['last_page_seconds']} s after the switch"
            if self.page_delays
            else "no page"
        )
        return [
            f"all targets fail at {self.after_seconds:g} s: {d['pages']} of {self.expected_pages} expected pages "
            f"(one per dependency: each is its own root cause), {self.within_bound} within the bound of "
            f"{self.bound_seconds:g} s; {when}; {self.self_pages} self pages; "
            f"scheduler lag p99 meanwhile {d['lag_p99_ms']} ms",
            f"decided (queued in the outbox): {d['decided']}, {self.decided_within_bound} within the bound; "
            f"p99 {d['p99_decision_seconds']} s, last {d['last_decision_seconds']} s after the switch",
        ]


def failure_figures(
    events: Sequence[tuple[str, str, float]], switched_at: float, after: float, bound: float, expected: int, lag: float
) -> FailureFigures:
    """The figures of a failure from the (action, dedup key, received UNIX time) of the events PagerDuty got."""
    first: dict[str, float] = {}
    own = 0
    for action, key, at in events:
        if action != "trigger" or at < switched_at:
            continue
        if key.endswith("/self"):
            own += 1
        elif key not in first:
            first[key] = at - switched_at
    return FailureFigures(after, bound, expected, tuple(sorted(first.values())), own, lag)


@dataclass(frozen=True)
class Report:
    """One bench run: its parameters, the loopback target, and the figures of each monitor."""

    targets: int
    interval: float
    seconds: float
    target: str
    depmon: Figures
    blackbox: Figures | None
    blackbox_skipped: str | None = None
    failure: FailureFigures | None = None

    def ratios(self) -> dict[str, float | None]:
        """depmon's figures over blackbox_exporter's (below 1: depmon spends less); empty without blackbox."""
        if self.blackbox is None:
            return {}
        d, b = self.depmon, self.blackbox
        return {
            "cpu_per_probe": _ratio(d.cpu_ms_per_probe, b.cpu_ms_per_probe),
            "peak_rss": _ratio(d.peak_rss_bytes, b.peak_rss_bytes),
            "metrics_seconds": _ratio(d.metrics_seconds, b.metrics_seconds),
            "run_ratio": _ratio(d.run_ratio, b.run_ratio),
        }

    def as_dict(self) -> dict[str, Any]:
        """The whole report as one JSON document (`depmon bench --json`)."""
        return {
            "targets": self.targets,
            "interval_seconds": self.interval,
            "seconds": self.seconds,
            "scheduled_per_second": round(self.targets / self.interval, 1),
            "target": self.target,
            "depmon": self.depmon.as_dict(),
            "blackbox": None if self.blackbox is None else self.blackbox.as_dict(),
            "blackbox_skipped": self.blackbox_skipped,
            "ratio": self.ratios() or None,
            "all_fail": None if self.failure is None else self.failure.as_dict(),
        }


def render_text(report: Report) -> str:
    """The report as a side-by-side table for a terminal."""
    monitors = [report.depmon] + ([report.blackbox] if report.blackbox else [])
    ratios = report.ratios()
    header = ["", *(f.name for f in monitors)] + (["depmon/blackbox"] if ratios else [])
    rows: list[list[str]] = [header]

    def row(label: str, cells: list[str], ratio: float | None = None, has_ratio: bool = False) -> None:
        extra = [("-" if ratio is None else f"{ratio:.2f}x")] if ratios else []
        rows.append([label, *cells, *(extra if has_ratio else [""] * len(extra))])

    row("probes run / scheduled", [f"{f.run} / {f.scheduled:.0f} ({f.run_ratio:.1%})" for f in monitors])
    row("failed probes", [str(f.failed) for f in monitors])
    row(
        "CPU per probe",
        [f"{f.cpu_ms_per_probe:.2f} ms ({100 * f.cpu_seconds / f.seconds:.0f}% of a core)" for f in monitors],
        ratios.get("cpu_per_probe"),
        True,
    )
    row("lag p99", [f"{1000 * f.lag_p99_seconds:.1f} ms ({f.lag_meaning})" for f in monitors])
    row("peak RSS", [f"{f.peak_rss_bytes / 2**20:.0f} MB" for f in monitors], ratios.get("peak_rss"), True)
    row("/metrics (slowest)", [f"{f.metrics_seconds:.3f} s" for f in monitors], ratios.get("metrics_seconds"), True)
    d = report.depmon
    row("depmon pages (self)", [f"{d.pages} ({d.self_pages})", *(["-"] * (len(monitors) - 1))])
    row("depmon overloaded", [_yes_no(d.overloaded), *(["-"] * (len(monitors) - 1))])
    row("dependencies down at end", [str(d.down_at_end), *(["-"] * (len(monitors) - 1))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"depmon bench: {report.targets} HTTP targets every {report.interval:g} s "
        f"({report.targets / report.interval:g} probes/s) for {report.seconds:g} s against {report.target}",
        "",
    ]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    if report.blackbox_skipped:
        lines.append(f"blackbox_exporter: {report.blackbox_skipped}")
    for monitor in monitors:
        lines += [f"{monitor.name}: {note}" for note in monitor.notes]
    if report.failure is not None:
        lines += ["", *report.failure.lines()]
    return "\n".join(lines)


def depmon_config(
    url: str, targets: int, interval: float, listen: str, state_path: str, events_url: str | None = None
) -> dict[str, Any]:
    """A config of `targets` dependencies of one http probe each, features of 5 dependencies each.

    With `events_url`, pages go to that (fake) PagerDuty; without, depmon only logs them (dry run).
    """
    dependencies = {
        f"dep{i:05d}": {
            "name": f"Dependency {i}",
            "probes": [{"name": "health", "kind": "http", "url": f"{url}/health/{i}", "expect": {"health_json": True}}],
        }
        for i in range(targets)
    }
    ids = list(dependencies)
    features = {
        f"feature{n:05d}": {"name": f"Feature {n}", "requires": ids[start : start + DEPENDENCIES_PER_FEATURE]}
        for n, start in enumerate(range(0, len(ids), DEPENDENCIES_PER_FEATURE))
    }
    pagerduty = {"pagerduty": {"routing_key": BENCH_ROUTING_KEY, "events_url": events_url}} if events_url else {}
    return {
        **pagerduty,
        "monitor": {
            "environment": "bench",
            "listen": listen,
            "state_path": state_path,
            "max_concurrent_probes": MAX_CONCURRENT_PROBES,
            "defaults": {"interval": f"{interval:g}s", "timeout": f"{probe_timeout(interval):g}s"},
        },
        "dependencies": dependencies,
        "features": features,
    }


def config_files(document: Mapping[str, Any], per_file: int = 500) -> dict[str, dict[str, Any]]:
    """A config document split into a directory's files, at most `per_file` entries per section each.

    The config loader bounds the values of one file (a hostile-config guard); a directory of
    `*.yaml` files is merged section by section, so thousands of dependencies load as a directory.
    """
    files: dict[str, dict[str, Any]] = {
        "00-monitor.yaml": {key: document[key] for key in ("monitor", "pagerduty") if key in document}
    }
    for section in ("dependencies", "features"):
        items = list(document.get(section, {}).items())
        for n, start in enumerate(range(0, len(items), per_file)):
            files[f"{section}-{n:04d}.yaml"] = {section: dict(items[start : start + per_file])}
    return files


def probe_timeout(interval: float) -> float:
    """The probe timeout of both monitors: half the interval (depmon wants it shorter), at most 2 s."""
    return min(2.0, interval / 2)


def decision_times(log_lines: Sequence[str]) -> dict[str, float]:
    """Dedup key -> UNIX time of its first `incident_triggered` log line (dependencies only, not self)."""
    decided: dict[str, float] = {}
    for line in log_lines:
        if '"incident_triggered"' not in line:
            continue
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            key = str(event.get("dedup_key", ""))
            if event.get("event") == "incident_triggered" and not key.endswith("/self") and key not in decided:
                decided[key] = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
    return decided


def triggered_pages(log_lines: Sequence[str]) -> tuple[int, int]:
    """(pages, self pages) among a daemon's JSON log lines: its `incident_triggered` events."""
    pages = own = 0
    for line in log_lines:
        if '"incident_triggered"' not in line:
            continue
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "incident_triggered":
                pages += 1
                own += str(event.get("dedup_key", "")).endswith("/self")
    return pages, own


_PROBE_SUCCESS = re.compile(rb"^probe_success (\S+)$", re.MULTILINE)
_PROBE_DURATION = re.compile(rb"^probe_duration_seconds (\S+)$", re.MULTILINE)


def blackbox_probe_result(body: bytes) -> tuple[bool, float]:
    """(success, duration seconds) of one blackbox_exporter `/probe` answer."""
    success = _PROBE_SUCCESS.search(body)
    duration = _PROBE_DURATION.search(body)
    return (success is not None and float(success.group(1)) == 1.0), (float(duration.group(1)) if duration else 0.0)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b and math.isfinite(a) and math.isfinite(b) else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


# ---------------------------------------------------------------------------------------------
# Processes


def run_bench(
    targets: int = 1000,
    interval: float = 2.0,
    seconds: float = 30.0,
    blackbox: bool = True,
    json_output: bool = False,
    out: TextIO | None = None,
    progress_to: TextIO | None = None,
    fail_after: float | None = None,
) -> int:
    """`depmon bench`: start the target, measure depmon, then blackbox_exporter, print the figures.

    Exit 0; 1 when a part could not be started, 2 on options that are not positive.
    """
    out = out or sys.stdout
    err = progress_to or sys.stderr
    if targets < 1 or not interval > 0 or not seconds > 0 or (fail_after is not None and not fail_after > 0):
        print("depmon bench: --targets, --interval, --seconds and --fail-after must be positive", file=err)
        return 2

    def progress(text: str) -> None:
        print(f"bench: {text}", file=err, flush=True)

    skipped: str | None = None
    figures_blackbox: Figures | None = None
    exporter = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if not blackbox:
        skipped = "skipped (--no-blackbox)"
    elif exporter is None:
        skipped = "not installed (Debian: apt-get install prometheus-blackbox-exporter)"
    try:
        with tempfile.TemporaryDirectory(prefix="depmon-bench-") as tmp:
            work = Path(tmp)
            with loopback_target(work, progress) as (url, target):
                depmon, failure = measure_depmon(url, targets, interval, seconds, work, progress, fail_after)
                if exporter is not None and skipped is None:
                    figures_blackbox = measure_blackbox(exporter, url, targets, interval, seconds, work, progress)
    except BenchError as exc:
        print(f"depmon bench: {exc}", file=err)
        return 1
    report = Report(targets, interval, seconds, target, depmon, figures_blackbox, skipped, failure)
    if json_output:
        print(json.dumps(report.as_dict(), indent=2), file=out)
    else:
        print(render_text(report), file=out)
    return 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def loopback_target(work: Path, progress: Progress) -> Iterator[tuple[str, str]]:
    """A keep-alive HTTP server on 127.0.0.1 answering `{"status":"pass"}`: (base URL, what it is)."""
    nginx = shutil.which("nginx")
    if nginx is not None:
        with _nginx(nginx, work) as url:
            progress(f"target: nginx at {url}")
            yield url, "nginx"
        return
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(4096)
    url = f"http://{HOST}:{sock.getsockname()[1]}"
    # A child process, so that the server's CPU is not counted with this process's.
    flag = str(work / FAIL_FLAG)
    server = multiprocessing.get_context("fork").Process(target=serve_health, args=(sock, flag), daemon=True)
    server.start()
    sock.close()
    progress(f"target: built-in server at {url} (nginx is not installed)")
    try:
        yield url, "built-in server"
    finally:
        server.terminate()
        server.join(5)


_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen {host}:{port} backlog=4096;
        location / {{
            default_type application/json;
            if (-f {work}/fail) {{
                return 503 '{failing}';
            }}
            return 200 '{body}';
        }}
    }}
}}
"""


@contextlib.contextmanager
def _nginx(nginx: str, work: Path) -> Iterator[str]:
    port = free_port()
    # Started as root, nginx's workers run as an unprivileged user: they must be able to reach
    # (not list) the fail flag in the private work directory.
    if os.geteuid() == 0:
        work.chmod(0o711)
    conf = work / "nginx.conf"
    conf.write_text(
        _NGINX_CONF.format(work=work, host=HOST, port=port, body=HEALTH_BODY.decode(), failing=FAILING_BODY.decode())
    )
    with _process([nginx, "-p", str(work), "-e", str(work / "nginx-error.log"), "-c", str(conf)], work / "nginx.out"):
        url = f"http://{HOST}:{port}"
        _wait_until(lambda: _answers(f"{url}/health/0"), 10.0, "nginx did not start")
        yield url


def serve_health(sock: socket.socket, fail_flag: str) -> None:
    """The built-in target: keep-alive HTTP/1.1, `{"status":"pass"}` to every request, forever;
    503 `{"status":"fail"}` while the file `fail_flag` exists."""

    def answer(status: bytes, body: bytes) -> bytes:
        head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
        return head + str(len(body)).encode() + b"\r\n\r\n" + body

    passing, failing = answer(b"200 OK", HEALTH_BODY), answer(b"503 Service Unavailable", FAILING_BODY)

    def current() -> bytes:  # a stat of a local file per request: microseconds, as nginx's `-f`
        return failing if os.path.exists(fail_flag) else passing

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(current())
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@contextlib.contextmanager
def _process(argv: Sequence[str], output: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in `output`; stopped (SIGTERM, then SIGKILL) on exit."""
    with output.open("wb") as sink:
        child = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield child
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)


def _proc_cpu(pid: int) -> float:
    return cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def _proc_peak_rss(pid: int) -> int:
    return peak_rss_bytes(Path(f"/proc/{pid}/status").read_text())


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with httpx.Client(trust_env=False, timeout=timeout) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(condition: Callable[[], bool], within: float, failure: str) -> bool:
    """Poll `condition` every 0.2 s for at most `within` seconds; raise RuntimeError(failure) if empty."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    if failure:
        raise BenchError(failure)
    return False


def _wait_started(child: subprocess.Popen[bytes], url: str, output: Path, name: str) -> None:
    """Wait (at most 60 s) until `url` answers 200; BenchError with the output's end if the child exits."""

    def started() -> bool:
        if child.poll() is not None:
            tail = output.read_text(errors="replace").strip().splitlines()[-5:]
            raise BenchError(f"{name} exited with status {child.returncode}: " + " | ".join(tail))
        return _answers(url)

    _wait_until(started, 60.0, f"{name} did not answer {url} within 60 s")


def _scrape(client: httpx.Client, url: str) -> tuple[str, float]:
    started = time.perf_counter()
    text = client.get(url).text
    return text, time.perf_counter() - started


@dataclass
class _Watch:
    """CPU progress of one process, printed every few seconds."""

    pid: int
    name: str
    progress: Progress
    total: float
    started: float = field(default_factory=time.monotonic)
    last: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.last = (time.monotonic(), _proc_cpu(self.pid))

    def tick(self, extra: str = "") -> None:
        now = time.monotonic()
        if now - self.last[0] < 1.0:  # the window's last sliver: the previous line said it
            return
        cpu = _proc_cpu(self.pid)
        share = (cpu - self.last[1]) / max(now - self.last[0], 1e-9)
        self.last = (now, cpu)
        self.progress(f"{self.name} {now - self.started:4.0f}/{self.total:g} s, CPU {share:.0%} of a core{extra}")


def measure_depmon(
    url: str,
    targets: int,
    interval: float,
    seconds: float,
    work: Path,
    progress: Progress,
    fail_after: float | None = None,
) -> tuple[Figures, FailureFigures | None]:
    """Run `depmon run` on a generated config and measure it over `seconds` of steady state.

    With `fail_after`, every target answers 503 from that many seconds into the window on (see
    `loopback_target`), depmon pages a loopback fake PagerDuty, and the window is stretched to
    end at least 5 s past the bound on those pages.
    """
    from monitor.config import Timing
    from monitor.sim.fake_pagerduty import FakePagerDuty

    timing = Timing()
    bound = page_bound(interval, timing.failure_threshold, timing.confirm_interval)
    port = free_port()
    base = f"http://{HOST}:{port}"
    config = work / "depmon-config"
    config.mkdir()
    fake = FakePagerDuty().start() if fail_after is not None else None
    events_url = None if fake is None else fake.events_url
    document = depmon_config(url, targets, interval, f"{HOST}:{port}", str(work / "depmon.sqlite3"), events_url)
    for name, part in config_files(document).items():
        (config / name).write_text(yaml.safe_dump(part))
    log_path = work / "depmon.log"
    argv = [sys.executable, "-m", "monitor.commands.cli", "run", "--config", str(config), "--log-format", "json"]
    argv += ["--state", str(work / "depmon.sqlite3")]
    notes: list[str] = []
    progress(f"depmon: starting with {targets} dependencies every {interval:g} s")
    switched_at: float | None = None
    failing_since: Scrape | None = None
    with (
        contextlib.ExitStack() as stack,
        _process(argv, log_path) as child,
        httpx.Client(trust_env=False, timeout=60.0) as client,
    ):
        if fake is not None:
            stack.callback(fake.stop)
        _wait_started(child, f"{base}/healthz", log_path, "depmon")
        # Every probe runs once within its first interval; steady state starts after that.
        if not _wait_until(lambda: _answers(f"{base}/readyz"), 3 * interval + 10, ""):
            notes.append("not every probe had run once when the measurement started")
        time.sleep(min(interval, 5.0))
        watch = _Watch(child.pid, "depmon", progress, seconds)
        # The window runs from the start of the first scrape to the start of the last: the counters
        # are read when the daemon renders them, at the start of a scrape.
        started, cpu_before = time.monotonic(), _proc_cpu(child.pid)
        first, slowest = _scrape(client, f"{base}/metrics")
        deadline = started + seconds
        if fail_after is not None:
            deadline = max(deadline, started + fail_after + bound + 5.0)
        overloaded = Scrape.parse(first).total("depmon_overloaded") > 0
        next_scrape = started + SCRAPE_EVERY_SECONDS
        # Scrapes in a thread: a daemon slow to answer /metrics must not stop the progress lines.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="depmon-bench-scrape") as scraper:
            pending: list[concurrent.futures.Future[tuple[str, float]]] = []
            while (now := time.monotonic()) < deadline:
                if fail_after is not None and switched_at is None:
                    if now < started + fail_after:
                        time.sleep(min(PROGRESS_EVERY_SECONDS, started + fail_after - now))
                        continue
                    (work / FAIL_FLAG).touch()
                    switched_at = time.time()
                    progress("target: every answer is 503 from now on")
                    text, _ = _scrape(client, f"{base}/metrics")  # the lag histogram at the switch
                    failing_since = Scrape.parse(text)
                    continue
                time.sleep(min(PROGRESS_EVERY_SECONDS, deadline - now))
                watch.tick()
                if time.monotonic() >= deadline:
                    break
                if time.monotonic() >= next_scrape and all(f.done() for f in pending):
                    pending.append(scraper.submit(_scrape, client, f"{base}/metrics"))
                    next_scrape += SCRAPE_EVERY_SECONDS
            middle = [f.result() for f in pending]  # each bounded by the client's timeout
        for text, took in middle:
            slowest = max(slowest, took)
            overloaded |= Scrape.parse(text).total("depmon_overloaded") > 0
        elapsed, cpu_after = time.monotonic() - started, _proc_cpu(child.pid)
        last, took = _scrape(client, f"{base}/metrics")
        slowest = max(slowest, took)
        if not _answers(f"{base}/healthz", timeout=5.0):
            notes.append("/healthz did not answer 200 within 5 s at the end")
        peak = _proc_peak_rss(child.pid)
    before, after = Scrape.parse(first), Scrape.parse(last)
    overloaded |= after.total("depmon_overloaded") > 0
    runs = after.total("depmon_probes_total") - before.total("depmon_probes_total")
    failed = after.total("depmon_probes_total", outcome="ok") - before.total("depmon_probes_total", outcome="ok")
    lag = bucket_delta(before.buckets("depmon_scheduler_lag_seconds"), after.buckets("depmon_scheduler_lag_seconds"))
    log_lines = log_path.read_text(errors="replace").splitlines()
    pages, own = triggered_pages(log_lines)
    failure = None
    if fake is not None and switched_at is not None and failing_since is not None and fail_after is not None:
        lag_meanwhile = bucket_delta(
            failing_since.buckets("depmon_scheduler_lag_seconds"), after.buckets("depmon_scheduler_lag_seconds")
        )
        events = [(e.action, e.dedup_key, e.received_at) for e in fake.events]
        failure = failure_figures(
            events, switched_at, fail_after, bound, targets, histogram_quantile(0.99, lag_meanwhile)
        )
        decided = sorted(at - switched_at for at in decision_times(log_lines).values() if at >= switched_at)
        failure = dataclasses.replace(failure, decision_delays=tuple(decided))
    figures = Figures(
        name="depmon",
        seconds=elapsed,
        scheduled=scheduled_runs(targets, interval, elapsed),
        run=round(runs),
        failed=round(failed),
        cpu_seconds=cpu_after - cpu_before,
        lag_p99_seconds=histogram_quantile(0.99, lag),
        lag_meaning="scheduler lag",
        peak_rss_bytes=peak,
        metrics_seconds=slowest,
        pages=pages,
        self_pages=own,
        overloaded=overloaded,
        down_at_end=after.count("depmon_dependency_state", 1.0, state="down"),
        notes=tuple(notes),
    )
    return figures, failure


_BLACKBOX_CONF = """\
modules:
  http_2xx:
    prober: http
    timeout: {timeout:g}s
    http:
      preferred_ip_protocol: ip4
"""


def measure_blackbox(
    exporter: str, url: str, targets: int, interval: float, seconds: float, work: Path, progress: Progress
) -> Figures:
    """Run blackbox_exporter, call its `/probe` for each target every `interval`, measure it."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    conf = work / "blackbox.yml"
    conf.write_text(_BLACKBOX_CONF.format(timeout=probe_timeout(interval)))
    argv = [exporter, f"--config.file={conf}", f"--web.listen-address={HOST}:{port}", "--log.level=warn"]
    progress(f"blackbox_exporter: {targets} targets every {interval:g} s")
    with _process(argv, work / "blackbox.log") as child, httpx.Client(trust_env=False, timeout=60.0) as client:
        _wait_started(child, f"{base}/metrics", work / "blackbox.log", "blackbox_exporter")
        _, slowest = _scrape(client, f"{base}/metrics")
        watch = _Watch(child.pid, "blackbox_exporter", progress, seconds)
        cpu_before = _proc_cpu(child.pid)
        drive = asyncio.run(_drive_blackbox(port, url, targets, interval, seconds, watch))
        cpu_after = _proc_cpu(child.pid)
        _, took = _scrape(client, f"{base}/metrics")
        peak = _proc_peak_rss(child.pid)
    notes = [f"{drive.skipped} calls not made: {MAX_CONCURRENT_PROBES * 4} already waiting"] if drive.skipped else []
    return Figures(
        name="blackbox_exporter",
        seconds=drive.elapsed,
        scheduled=scheduled_runs(targets, interval, seconds),
        run=len(drive.durations),
        failed=drive.failed,
        cpu_seconds=cpu_after - cpu_before,
        lag_p99_seconds=percentile(drive.durations, 0.99),
        lag_meaning="probe duration",
        peak_rss_bytes=peak,
        metrics_seconds=max(slowest, took),
        notes=tuple(notes),
    )


@dataclass
class _Drive:
    durations: list[float] = field(default_factory=list)
    failed: int = 0
    skipped: int = 0
    elapsed: float = 0.0


async def _drive_blackbox(port: int, url: str, targets: int, interval: float, seconds: float, watch: _Watch) -> _Drive:
    """Call `/probe` for target k at start + k * interval / targets: N / interval calls a second.

    Keep-alive connections, at most `MAX_CONCURRENT_PROBES` calls in flight; a call that would
    queue behind 4 times as many is not made (counted as skipped), so a stalled exporter cannot
    pile up work here. Stops issuing at `seconds`, waits at most the probe timeout + 5 s for the
    calls in flight.
    """
    result = _Drive()
    pool = _KeepAlivePool(port, MAX_CONCURRENT_PROBES)
    total = round(targets * seconds / interval)
    step = interval / targets
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def call(k: int) -> None:
        try:
            body = await pool.get(f"/probe?module=http_2xx&target={url}/health/{k % targets}")
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.failed += 1
            return
        success, duration = blackbox_probe_result(body)
        result.durations.append(duration)
        result.failed += not success

    started = loop.time()
    next_progress = started + PROGRESS_EVERY_SECONDS
    k = 0
    while k < total and (now := loop.time()) < started + seconds:
        while k < total and started + k * step <= now:
            if len(tasks) >= 4 * MAX_CONCURRENT_PROBES:
                result.skipped += 1
            else:
                task = loop.create_task(call(k))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            k += 1
        if now >= next_progress:
            watch.tick(f", {len(result.durations)} probes answered")
            next_progress += PROGRESS_EVERY_SECONDS
        await asyncio.sleep(0.005)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=probe_timeout(interval) + 5.0)
        for task in pending:
            task.cancel()
        result.skipped += len(pending)
    result.elapsed = loop.time() - started
    await pool.aclose()
    return result


class _KeepAlivePool:
    """A minimal HTTP/1.1 keep-alive GET client: cheap enough not to compete with the exporter."""

    def __init__(self, port: int, size: int) -> None:
        self._port = port
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: set[asyncio.StreamWriter] = set()

    async def get(self, path: str) -> bytes:
        """The body of a 200 answer to GET `path`; ValueError for another status."""
        async with self._slots:
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(HOST, self._port)
                self._all.add(writer)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self._port}\r\n\r\n".encode())
                status, body, keep = await _read_response(reader)
            except BaseException:
                writer.close()
                self._all.discard(writer)
                raise
            if keep:
                self._idle.append((reader, writer))
            else:
                writer.close()
                self._all.discard(writer)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            return body

    async def aclose(self) -> None:
        """Close every connection."""
        for writer in self._all:
            writer.close()
        self._all.clear()
        self._idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 answer, by Content-Length or chunked."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        for _ in range(100_000):  # bounded: a blackbox answer is a few chunks
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readuntil(b"\r\n")
        body = b"".join(parts)
    else:
        body = b""
    return status, body, headers.get("connection", "").lower() != "close"
