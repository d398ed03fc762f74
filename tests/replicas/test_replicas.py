"""Replicas on PostgreSQL (issue 14, SPEC 10.6): three daemons, quorum 2, exactly one page.

Each test starts a throwaway PostgreSQL database (`postgres_url`), three `depmon run`
subprocesses sharing it, one loopback upstream per dependency and a fake PagerDuty.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.sim.daemon import log_time
from monitor.sim.fake_pagerduty import FakePagerDuty, ReceivedEvent
from monitor.sim.loopback import LoopbackServer, Response
from tests.harness import DaemonProcess, metric_value, replica_config, wait_for

pytestmark = pytest.mark.e2e

INTERVAL = 1.0  # monitor.defaults.interval: liveness and failover are bounded by 2 x this
DEPENDENCIES = ("evss", "vaos", "mhv", "lighthouse")


class Upstreams:
    """One loopback server per dependency, each able to fail alone."""

    def __init__(self) -> None:
        self.servers = {dep: LoopbackServer() for dep in DEPENDENCIES}

    def __enter__(self) -> Upstreams:
        for server in self.servers.values():
            server.start()
            server.route("GET", "/health", lambda request: Response(200, b'{"status": "pass"}'))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in self.servers.values():
            server.stop()


class Relay:
    """A TCP relay in front of PostgreSQL for one replica; `cut()` severs it like a lost route."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self.holding = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    continue
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self.holding:  # a black hole: the bytes go nowhere, the connections stay open
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def hold(self) -> None:
        """Let nothing through, either way, and close nothing: a route lost without a reset."""
        self.holding = True

    def cut(self) -> None:
        """Close every connection through the relay and refuse new ones."""
        with self._lock:
            self._cut = True
            self.listener.close()
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    with Upstreams() as servers:
        yield servers


class Replicas:
    """Starts replicas of one deployment; closes them all at the end."""

    def __init__(self, tmp_path: Path, state_url: str, upstreams: Upstreams, pagerduty: FakePagerDuty) -> None:
        self.tmp_path, self.state_url = tmp_path, state_url
        self.upstreams, self.pagerduty = upstreams, pagerduty
        self.daemons: dict[str, DaemonProcess] = {}

    def start(self, replica: str, *, state_url: str | None = None, proxy: str | None = None) -> DaemonProcess:
        config = self.tmp_path / f"{replica}.yaml"
        config.write_text(
            replica_config(
                environment="e2e",
                state=f"state_url: {state_url or self.state_url}",
                replica=replica,
                quorum=2,
                events_url=self.pagerduty.events_url,
                health_urls={dep: f"{server.url}/health" for dep, server in self.upstreams.servers.items()},
                proxy=proxy,
            )
        )
        daemon = DaemonProcess(config, self.tmp_path / f"{replica}.sqlite3")
        self.daemons[replica] = daemon
        return daemon.start()

    def leaders(self) -> list[str]:
        found = []
        for name, daemon in self.daemons.items():
            if daemon.proc is None or daemon.proc.poll() is not None:
                continue
            with contextlib.suppress(Exception):
                if metric_value(daemon.get("/metrics").text, "depmon_replica_leader", replica=name) == 1:
                    found.append(name)
        return found

    def close(self) -> None:
        for daemon in self.daemons.values():
            daemon.close()


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str, upstreams: Upstreams, pagerduty: FakePagerDuty) -> Iterator[Replicas]:
    deployment = Replicas(tmp_path, postgres_url, upstreams, pagerduty)
    try:
        yield deployment
    finally:
        deployment.close()


def inconclusive(daemon: DaemonProcess, dependency: str) -> float:
    """depmon_probes_inconclusive_total of a dependency on one replica, summed over its reasons."""
    exposition = daemon.get("/metrics").text
    return sum(
        metric_value(exposition, "depmon_probes_inconclusive_total", dependency=dependency, reason=reason) or 0.0
        for reason in ("cannot_see_out", "canary_failing", "overloaded", "loop_stalled", "started_late")
    )


def story(daemon: DaemonProcess) -> list[tuple[Any, ...]]:
    """What a replica logged about leading, deciding and delivering: for a failure's message."""
    kinds = ("leader", "incident", "pager", "pagerduty", "replica", "leadership", "dependency_state")
    return [
        (round(log_time(e), 2), e.get("event"), e.get("dependency"), e.get("reason"), e.get("new"))
        for e in daemon.logs
        if any(str(e.get("event", "")).startswith(k) for k in kinds)
    ][-40:]


def triggers(events: list[ReceivedEvent], key: str) -> int:
    return sum(1 for e in events if e.dedup_key == key and e.action == "trigger")


def resolves(events: list[ReceivedEvent], key: str) -> int:
    return sum(1 for e in events if e.dedup_key == key and e.action == "resolve")


class TestQuorum:
    def test_one_outage_pages_once_and_the_next_leader_resolves_it_once(
        self, replicas: Replicas, upstreams: Upstreams, pagerduty: FakePagerDuty
    ) -> None:
        """Three replicas see EVSS fail: one trigger. The leader is killed; the next one resolves, once."""
        for name in ("a", "b", "c"):
            replicas.start(name)
        [leader] = wait_for(lambda: replicas.leaders(), 10, "a leader")
        upstreams.servers["evss"].fail_with(503)
        pagerduty.wait_for(lambda got: triggers(got, "depmon/e2e/evss") >= 1, timeout=15)
        downs = wait_for(
            lambda: (
                metric_value(
                    replicas.daemons[leader].get("/metrics").text, "depmon_dependency_down_replicas", dependency="evss"
                )
                == 3
            ),
            10,
            "all three replicas seeing evss down",
        )
        assert downs
        killed_at = time.monotonic()
        replicas.daemons[leader].kill()
        [successor] = wait_for(lambda: [n for n in replicas.leaders() if n != leader], 10, "a new leader")
        failover = time.monotonic() - killed_at
        print(f"failover after kill -9 of the leader: {failover:.2f} s (bound 2 x interval = {2 * INTERVAL:.1f} s)")
        upstreams.servers["evss"].clear_faults()
        try:
            pagerduty.wait_for(lambda got: resolves(got, "depmon/e2e/evss") >= 1, timeout=30)
        except TimeoutError:
            raise AssertionError(f"no resolve; {successor} logged: {story(replicas.daemons[successor])}") from None
        # The successor's state (/status) shows the incident closed; then count what PagerDuty got.
        wait_for(lambda: not replicas.daemons[successor].status()["incidents"], 10, "no open incident")
        assert triggers(pagerduty.events, "depmon/e2e/evss") == 1
        assert resolves(pagerduty.events, "depmon/e2e/evss") == 1
        assert failover <= 2 * INTERVAL + 1.0, "measured through /metrics polls, which add up to ~1 s"

    def test_a_page_whose_deliverer_dies_is_delivered_once_by_another_replica(
        self, replicas: Replicas, upstreams: Upstreams, pagerduty: FakePagerDuty
    ) -> None:
        """PagerDuty refuses while a replica delivers the trigger; that replica dies; another delivers it, once."""
        for name in ("a", "b", "c"):
            replicas.start(name)
        wait_for(lambda: replicas.leaders(), 10, "a leader")
        pagerduty.fail_with(503)
        upstreams.servers["vaos"].fail_with(503)
        # Any replica may have claimed the event: the one that tried is the one to kill.
        [deliverer] = wait_for(
            lambda: [n for n, d in replicas.daemons.items() if d.find("pagerduty_event_retry")][:1],
            20,
            "a refused delivery",
        )
        replicas.daemons[deliverer].kill()
        killed_at = time.monotonic()
        pagerduty.clear_faults()
        pagerduty.wait_for(lambda got: triggers(got, "depmon/e2e/vaos") >= 1, timeout=60)
        print(f"delivered by another replica {time.monotonic() - killed_at:.1f} s after the deliverer died")
        # The trigger arrived; the next one to arrive is the resolve once vaos recovers: nothing in between.
        upstreams.servers["vaos"].clear_faults()
        events = pagerduty.wait_for(lambda got: resolves(got, "depmon/e2e/vaos") >= 1, timeout=20)
        assert [e.action for e in events if e.dedup_key == "depmon/e2e/vaos"] == ["trigger", "resolve"]

    def test_one_blind_replica_pages_nobody_but_its_own_self_page_naming_it(
        self, replicas: Replicas, upstreams: Upstreams, pagerduty: FakePagerDuty
    ) -> None:
        """Replica c's probes all go through a proxy at a closed port: no dependency page, one self page naming c."""
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        replicas.start("a")
        wait_for(lambda: replicas.leaders() == ["a"], 10, "a leading")
        replicas.start("b")
        blind = replicas.start("c", proxy=f"http://127.0.0.1:{closed_port}")
        try:
            events = pagerduty.wait_for(lambda got: any(e.dedup_key == "depmon/e2e/self" for e in got), timeout=20)
        except TimeoutError:
            seen = sorted({(e.get("event"), e.get("detail"), e.get("reason")) for e in blind.logs}, key=str)
            leader = replicas.daemons["a"].status()
            raise AssertionError(f"no self page; c logged {seen[-30:]}; a's replicas: {leader['replicas']}") from None
        [self_page] = [e for e in events if e.dedup_key == "depmon/e2e/self"]
        assert self_page.summary is not None
        assert "replica c" in self_page.summary, self_page.summary
        # c saw every dependency fail; the quorum (a and b) did not: still no dependency page once
        # c has reported failures for a while (a later positive event: c's own failures counted).
        wait_for(
            lambda: all(inconclusive(blind, dep) >= 3 for dep in DEPENDENCIES), 15, "3 inconclusive failures each on c"
        )
        status = replicas.daemons["a"].status()
        assert {r["replica"] for r in status["replicas"]} == {"a", "b", "c"}
        page = replicas.daemons["a"].get("/").text  # the status page shows them too, c with its trouble
        assert [re.findall(f"<tr data-replica='{name}'>", page) != [] for name in "abc"] == [True, True, True]
        c_row = page[page.index("<tr data-replica='c'>") :].split("</tr>", 1)[0]
        assert "replica c" in c_row or "cannot see out" in c_row, c_row
        assert all(d["state"] == "up" for d in replicas.daemons["a"].status()["dependencies"].values())
        assert [e.dedup_key for e in pagerduty.events if e.action == "trigger"] == ["depmon/e2e/self"]


class TestPartition:
    @pytest.mark.parametrize("how", ["reset", "black_hole"])
    def test_a_leader_cut_off_from_the_database_stops_deciding_within_two_intervals(
        self, replicas: Replicas, postgres_url: str, how: str
    ) -> None:
        """The leader's database connections are cut (reset, or silently dropped): it steps down and
        another leads, each within 2 x interval."""
        host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
        relay = Relay(int(host_port.rsplit(":", 1)[1]))
        a = replicas.start("a", state_url=postgres_url.replace(host_port, f"127.0.0.1:{relay.port}"))
        wait_for(lambda: replicas.leaders() == ["a"], 10, "a leading")
        replicas.start("b")
        replicas.start("c")
        wait_for(lambda: len(replicas.daemons["b"].status()["replicas"]) == 3, 10, "three replicas reporting")
        cut_at = time.time()
        relay.cut() if how == "reset" else relay.hold()
        lost = wait_for(lambda: a.find("leadership_lost"), 10, "a stepping down")
        elected = wait_for(
            lambda: [e for n, d in replicas.daemons.items() if n != "a" for e in d.matching("leader_elected")],
            10,
            "another leader",
        )
        stepped_down, taken_over = log_time(lost) - cut_at, log_time(elected[0]) - cut_at
        print(f"{how}: a stepped down after {stepped_down:.2f} s, {elected[0]['replica']} led after {taken_over:.2f} s")
        assert stepped_down <= 2 * INTERVAL
        assert taken_over <= 2 * INTERVAL
        assert [e["replica"] for e in elected] in (["b"], ["c"]), "exactly one new leader"
        if how == "black_hole":  # a cannot know it is cut off: it must give up before the server frees the lock
            assert stepped_down < taken_over
