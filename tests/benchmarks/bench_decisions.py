"""Decisions micro-benchmark: a mass outage's pages, from `decide` to the store's commit.

Two figures, for issue 10's bound on pages when every dependency fails at once:

- `decide`: CPU ms of one `incidents.decide` call with every dependency down and its incident
  open (what each reconciliation of a mass outage costs the event loop), at 100, 1,000 and
  10,000 dependencies, features of 5 dependencies each;
- `apply_all`: wall ms of committing 250 trigger decisions (a `pager.COMMIT_BATCH`) to a SQLite
  state file in a worker thread, on an idle interpreter and beside a thread that keeps the GIL
  busy (the event loop of a daemon at 90% of a core). Each statement is a call into sqlite3 that
  lets go of the GIL; taking it back from a busy thread waits up to `sys.getswitchinterval()`.

Not part of the test suite: `python tests/benchmarks/bench_decisions.py`. To measure another
checkout, put it first on the path: `PYTHONPATH=/tmp/baseline python ...`.

Measured on the 2-core development machine (quiet, one run each):

    decide, CPU ms per call (all down, all open)   before (d8c117f)   after
                 100 dependencies                        2.4          0.6
               1,000 dependencies                      175.5          6.6
              10,000 dependencies                   17,347           69.0

    apply_all of 250 triggers, wall ms              before (d8c117f)   after
                 idle interpreter                         41           26
                 beside a busy thread                  9,145          133

Before, `decide` asked every open incident's impacted features with a scan of every feature
(quadratic), and `apply_all` wrote three statements per decision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from monitor.paging.decisions import Action, OpenIncident, Policy, Situation, decide, dedup_key
from monitor.state.health import DependencyHealth, DependencyState
from monitor.state.impact import FeatureHealth, FeatureState
from monitor.store import IncidentWrite
from monitor.store.sqlite import SQLiteStore

DOWN = DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, failing=True)
# A trigger body of the size the daemon writes (features, evidence, escalation steps, links).
BODY = {
    "routing_key": "R" * 32,
    "event_action": "trigger",
    "dedup_key": "depmon/bench/dep",
    "payload": {
        "summary": "dependency down: HTTP 503 from /health",
        "severity": "critical",
        "source": "depmon/bench",
        "custom_details": {
            "impacted_features": [{"id": f"feature{i}", "name": f"Feature {i}"} for i in range(5)],
            "evidence": [{"probe": "health", "outcome": "http_status", "detail": "HTTP 503 " + "x" * 150}],
            "escalation": ["step " * 20] * 6,
        },
    },
    "links": [{"href": "https://example.invalid/playbook", "text": "playbook"}] * 3,
}


def decide_ms(size: int, rounds: int) -> float:
    """Median CPU ms of `decide` with `size` dependencies down, each with its incident open."""
    deps = [f"dep{i:05d}" for i in range(size)]
    features = {
        f"feature{i}": FeatureHealth(FeatureState.DOWN, tuple(deps[i * 5 : i * 5 + 5])) for i in range(size // 5)
    }
    policy = Policy("bench", significant_duration=1e9)
    situation = Situation({d: DOWN for d in deps}, features)
    opened = {d: OpenIncident(d, dedup_key("bench", d), 0.0, (f"feature{i // 5}",), id=i) for i, d in enumerate(deps)}
    samples = []
    for _ in range(rounds):
        started = time.process_time()
        decisions = decide(policy, opened, situation, 1.0)
        samples.append(time.process_time() - started)
    assert decisions == []  # every incident already says what is down: nothing to send
    return 1000 * statistics.median(samples)


def _writes(count: int, first: int) -> list[IncidentWrite]:
    return [
        IncidentWrite(
            dependency=f"dep{first + i}",
            dedup_key=f"depmon/bench/dep{first + i}",
            at=time.time(),
            kind="trigger",
            timeline={"action": "trigger", "evidence": [{"probe": "health", "detail": "HTTP 503 " + "x" * 100}]},
            event=(Action.TRIGGER, BODY),
            features=[f"feature{i // 5}"],
            summary="dependency down",
            severity="critical",
        )
        for i in range(count)
    ]


def apply_ms(busy: bool, rounds: int, work: Path) -> float:
    """Median wall ms of `apply_all` of 250 triggers in a worker thread, the main thread busy or idle."""
    store = SQLiteStore(work / f"state-{busy}.sqlite3", environment="test")
    store.apply_all(_writes(1, 10**7))  # created and migrated
    samples: list[float] = []
    for n in range(rounds):
        writes = _writes(250, n * 1000)
        took: list[float] = []

        def commit(writes: list[IncidentWrite] = writes, took: list[float] = took) -> None:
            started = time.perf_counter()
            store.apply_all(writes)
            took.append(time.perf_counter() - started)

        worker = threading.Thread(target=commit)
        worker.start()
        while worker.is_alive():
            if busy:  # pure Python: holds the GIL until the interpreter asks it to let go
                total = 0
                for i in range(2000):
                    total += i
            else:
                worker.join()
        samples.append(took[0])
    store.close()
    return 1000 * statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("decide, CPU ms per call (all down, all open)")
    for size in (100, 1000, 10_000):
        print(f"  {size:>6,} dependencies  {decide_ms(size, args.rounds if size < 10_000 else 1):10.1f}")
    with tempfile.TemporaryDirectory(prefix="depmon-bench-decisions-") as tmp:
        print("apply_all of 250 triggers, wall ms")
        print(f"  idle interpreter      {apply_ms(False, args.rounds, Path(tmp)):10.0f}")
        print(f"  beside a busy thread  {apply_ms(True, args.rounds, Path(tmp)):10.0f}")
    print(f"(switch interval {1000 * sys.getswitchinterval():g} ms)")


if __name__ == "__main__":
    main()
