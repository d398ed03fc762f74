"""Soak: the real daemon on the simulator, failures and recoveries every minute, RSS and fds sampled.

Not part of the test suite (issue 11). Runs `depmon run` against the simulated VA environment
for `--minutes` (default 60); each minute one upstream (in turn EVSS, Caseflow, VA Profile, MHV,
SSOe OAuth) fails for the first half and recovers for the second, so pages are triggered and
resolved all along. Every `--sample` seconds it prints the daemon's resident memory and open file
descriptors (from /proc), the events the fake PagerDuty received, and at the end the first and
last samples side by side: flat is the target.

    python tests/benchmarks/soak.py --minutes 60
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from monitor.sim.daemon import DaemonProcess
from monitor.sim.environment import SimulatedEnvironment

ROTATION = ("evss", "caseflow", "va-profile", "mhv", "ssoe-oauth")


def sample(pid: int) -> tuple[float, int]:
    """(resident memory in MiB, open file descriptors) of a process."""
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    """Run the soak and print the samples; exit 1 when the daemon died on the way."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples (default 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, SimulatedEnvironment(Path(workdir)) as sim:
        daemon = DaemonProcess(sim.config_dir, sim.state_path)
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        started = time.monotonic()
        end = started + args.minutes * 60
        samples: list[tuple[float, float, int, int]] = []
        next_sample = started + 30.0  # after start-up settles
        try:
            while time.monotonic() < end:
                elapsed = time.monotonic() - started
                minute = int(elapsed // 60)
                failing = ROTATION[minute % len(ROTATION)]
                for dep in ROTATION:
                    upstream = sim.upstream(dep)
                    if dep == failing and elapsed % 60 < 30:
                        upstream.fail_with(503)
                    else:
                        upstream.clear_faults()
                if daemon.proc.poll() is not None:
                    print(f"daemon exited with {daemon.proc.returncode} after {elapsed:.0f} s", file=sys.stderr)
                    return 1
                if time.monotonic() >= next_sample:
                    rss, fds = sample(pid)
                    events = len(sim.pagerduty.events)
                    samples.append((elapsed, rss, fds, events))
                    print(f"t={elapsed:6.0f}s rss={rss:6.1f} MiB fds={fds:4d} pagerduty_events={events}", flush=True)
                    next_sample += args.sample
                time.sleep(1.0)
        finally:
            for dep in ROTATION:
                sim.upstream(dep).clear_faults()
            daemon.stop()
        if len(samples) >= 2:
            (t0, rss0, fd0, _), (t1, rss1, fd1, ev1) = samples[0], samples[-1]
            print(
                f"start (t={t0:.0f}s): rss {rss0:.1f} MiB, fds {fd0}; end (t={t1:.0f}s): rss {rss1:.1f} MiB, "
                f"fds {fd1}; {ev1} PagerDuty events"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
