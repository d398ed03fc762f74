"""What the shared store costs: CPU per probe of one depmon on SQLite vs one replica on PostgreSQL.

Not part of the test suite (issue 14). Starts a throwaway PostgreSQL (tests/postgres_server.py),
a loopback upstream, and `depmon run` with `--dependencies` HTTP dependencies probed every
`--interval`; measures the daemon's CPU time (utime + stime from /proc) over `--seconds` and
the probes it ran (depmon_probes_total), first with the SQLite file, then with
`monitor.state_url` (a replica reporting its verdicts, leading, claiming the outbox). The
database server's own CPU is printed beside it.

    python tests/benchmarks/bench_replicas.py --dependencies 200 --interval 1s --seconds 30
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from monitor.sim.daemon import DaemonProcess
from monitor.sim.loopback import LoopbackServer, Response
from tests.harness import metric_value, wait_for
from tests.postgres_server import PostgresServer

CONFIG = """
monitor:
  environment: bench
  {state}
  defaults: {{interval: {interval}, timeout: 800ms, failure_threshold: 2, success_threshold: 1}}
dependencies:
{dependencies}
"""
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (the PostgreSQL server and its backends), from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def probes_run(daemon: DaemonProcess) -> float:
    exposition = daemon.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith("depmon_probes_total{")
    )


def measure(workdir: Path, state: str, args: argparse.Namespace, upstream: str, db_pid: int | None) -> dict[str, float]:
    dependencies = "\n".join(
        f'  d{i}: {{name: D{i}, probes: [{{name: health, kind: http, url: "{upstream}/health"}}]}}'
        for i in range(args.dependencies)
    )
    config = workdir / f"{state.split(':')[0] or 'sqlite'}.yaml"
    config.write_text(CONFIG.format(state=state, interval=args.interval, dependencies=dependencies))
    daemon = DaemonProcess(config, workdir / "state.sqlite3")
    try:
        daemon.start()
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 30, "ready")
        time.sleep(args.warmup)
        assert daemon.proc is not None
        cpu0, probes0, db0 = cpu_seconds(daemon.proc.pid), probes_run(daemon), tree_cpu_seconds(db_pid or os.getpid())
        time.sleep(args.seconds)
        cpu1, probes1, db1 = cpu_seconds(daemon.proc.pid), probes_run(daemon), tree_cpu_seconds(db_pid or os.getpid())
        leader = metric_value(daemon.get("/metrics").text, "depmon_replica_leader", replica="bench")
    finally:
        daemon.close()
    probes = probes1 - probes0
    return {
        "probes": probes,
        "cpu_ms_per_probe": 1000 * (cpu1 - cpu0) / probes,
        "db_cpu_ms_per_probe": 1000 * (db1 - db0) / probes if db_pid else 0.0,
        "leader": leader if leader is not None else -1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dependencies", type=int, default=200)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    with LoopbackServer() as upstream, PostgresServer() as server, tempfile.TemporaryDirectory() as tmp:
        upstream.route("GET", "/health", lambda request: Response(200, b'{"status": "pass"}'))
        url = server.create_database("bench")
        results = {
            "sqlite": measure(Path(tmp), "", args, upstream.url, None),
            "postgresql": measure(Path(tmp), f'state_url: "{url}"\n  replica: bench', args, upstream.url, server.pid),
        }
    print(f"{args.dependencies} dependencies every {args.interval}, {args.seconds:.0f} s measured:")
    for mode, figures in results.items():
        print(
            f"  {mode:<10} probes {figures['probes']:>6.0f}  depmon CPU {figures['cpu_ms_per_probe']:.3f} ms/probe"
            f"  database CPU {figures['db_cpu_ms_per_probe']:.3f} ms/probe  leader {figures['leader']:.0f}"
        )
    extra = results["postgresql"]["cpu_ms_per_probe"] - results["sqlite"]["cpu_ms_per_probe"]
    print(f"  extra depmon CPU per probe with the shared store: {extra:+.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
