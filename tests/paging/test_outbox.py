"""The outbox delivery loop, with in-process sinks, a fake clock and a fake sleep."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import Counter
from structlog.testing import capture_logs

from monitor.metrics import Metrics
from monitor.pagerduty.clients import Delivery
from monitor.paging.outbox import Backoff, Outbox, Wakeup
from monitor.paging.sinks import Destination, SinkKind, Sinks
from monitor.paging.sinks.pagerduty_events import EVENTS
from monitor.paging.sinks.slack import SLACK
from monitor.store import Store
from tests.clocks import FakeClock
from tests.helpers import until

pytestmark = pytest.mark.unit

ACCEPTED = Delivery("accepted", 202, "accepted")
SERVER_ERROR = Delivery("retry", 500, "PagerDuty Events API answered HTTP 500")
INVALID = Delivery("dropped", 400, "PagerDuty Events API answered HTTP 400: Event object is invalid")


def trigger(summary: str) -> dict[str, Any]:
    return {"payload": {"summary": summary, "source": "depmon/test", "severity": "critical"}}


class FakeWakeup(Wakeup):
    """A sleep that advances the fake clock instead of waiting; idle waits still wait for a wake."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.sleeps: list[float] = []

    async def wait(self, at_most: float | None) -> None:
        if at_most is None:
            await super().wait(None)
            return
        self.sleeps.append(at_most)
        self.clock.advance(at_most)
        await super().wait(0)


class MaxJitter(random.Random):
    """Jitter that always picks the top of the range, so delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeSender:
    """A sink that records what it is given and answers from a script (then `default`)."""

    def __init__(self, clock: FakeClock, script: Callable[[Mapping[str, Any], int], Delivery] | None = None) -> None:
        self.clock = clock
        self.script = script
        self.sent: list[tuple[float, str, str | None]] = []  # (time, dedup_key, summary)

    def can_deliver(self, destination: Destination) -> bool:
        return True

    async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
        await anyio.lowlevel.checkpoint()
        summary = body.get("payload", {}).get("summary")
        self.sent.append((self.clock(), body["dedup_key"], summary))
        return self.script(body, len(self.sent)) if self.script else ACCEPTED

    def summaries(self) -> list[str | None]:
        return [summary for _, _, summary in self.sent]


class Harness:
    """An outbox over an in-memory store with fake time."""

    def __init__(self, store: Store, sender: FakeSender | None, clock: FakeClock, sinks: Sinks | None = None) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.metrics = Metrics()
        self.wake = FakeWakeup(clock)
        # Fake time throughout: no real pause between scans (TestScans has them).
        self.outbox = Outbox(
            store,
            {EVENTS: sender} if sinks is None else sinks,
            self.metrics,
            clock,
            MaxJitter(),
            self.wake,
            wall_clock=clock,
            scan_every=0.0,
        )

    def count(self, action: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "depmon_pagerduty_events_total", {"action": action, "outcome": outcome}
        )
        return value or 0.0

    @property
    def pending_gauge(self) -> float | None:
        return self.metrics.registry.get_sample_value("depmon_pagerduty_outbox_pending")

    async def until(self, condition: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
        """Wait for `condition` (tests.helpers.until)."""
        await until(condition, seconds, interval=0.001)

    async def settled(self) -> bool:
        return await self.store.pending_count() == 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await tg.start(self.outbox.run)
            yield
            tg.cancel_scope.cancel()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with Store(":memory:", environment="test") as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class TestBackoff:
    """The retry delay schedule."""

    def test_exponential_full_jitter_capped(self) -> None:
        """The delay ceiling doubles per attempt from 1 s up to 5 min and the jitter draws below it."""
        backoff, jitter = Backoff(), MaxJitter()
        assert [backoff.delay(n, SERVER_ERROR, jitter) for n in (1, 2, 3, 10, 40)] == [1.0, 2.0, 4.0, 300.0, 300.0]
        assert 0.0 <= backoff.delay(3, SERVER_ERROR, random.Random(7)) <= 4.0

    def test_rate_limited_waits_at_least_retry_after_or_30_seconds(self) -> None:
        """A 429 waits at least its Retry-After, or 30 s when PagerDuty sent none."""
        backoff, jitter = Backoff(), MaxJitter()
        assert backoff.delay(1, Delivery("retry", 429, "throttled"), jitter) == 30.0
        assert backoff.delay(1, Delivery("retry", 429, "throttled", retry_after=120.0), jitter) == 120.0
        assert backoff.delay(10, Delivery("retry", 429, "throttled", retry_after=5.0), jitter) == 300.0


class TestScans:
    """The store's pending heads are read at most once per `scan_every`, however many deliveries end."""

    @pytest.mark.anyio
    async def test_a_burst_of_deliveries_is_served_by_a_few_scans(
        self, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """300 events delivered: every delivery that ends wakes the loop, but the heads are read a
        few times (each read of 1,000 heads cost the store's thread and the loop in a mass outage)."""
        sender = FakeSender(clock)
        outbox = Outbox(store, {EVENTS: sender}, Metrics(), clock, MaxJitter(), wall_clock=clock, scan_every=0.1)
        for i in range(300):
            await outbox.put(f"depmon/test/dep{i}", "trigger", trigger(f"dep{i} down"))
        real, scans = store.pending_heads, []

        async def counted(now: float) -> Any:
            scans.append(anyio.current_time())
            return await real(now)

        monkeypatch.setattr(store, "pending_heads", counted)
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            await tg.start(outbox.run)
            with anyio.fail_after(10):
                while len(sender.sent) < 300:
                    await anyio.sleep(0.01)
            took = anyio.current_time() - started
            tg.cancel_scope.cancel()
        assert sorted(key for _, key, _ in sender.sent) == sorted(f"depmon/test/dep{i}" for i in range(300))
        assert len(scans) <= took / 0.1 + 2, (len(scans), took)
        assert all(later - earlier >= 0.1 for earlier, later in itertools.pairwise(scans))


class TestOutbox:
    """Delivery in order per dedup key, retries, drops, drain and dry run."""

    @pytest.mark.anyio
    async def test_put_writes_first_then_delivers(self, store: Store, clock: FakeClock) -> None:
        """put() stores the event with its action and key before the loop sends it."""
        h = Harness(store, FakeSender(clock), clock)
        event_id = await h.outbox.put("depmon/test/evss", "trigger", trigger("EVSS down"))
        [head] = await store.pending_heads(clock())
        stored = await store.outbox_event(head.id)
        assert stored.id == event_id
        assert stored.body == {**trigger("EVSS down"), "event_action": "trigger", "dedup_key": "depmon/test/evss"}
        assert h.pending_gauge == 1

        async def published() -> bool:  # the loop publishes the count on its next turn after the delivery
            return await h.settled() and h.pending_gauge == 0

        async with h.running():
            await h.until(published)
        assert h.sender is not None
        assert h.sender.summaries() == ["EVSS down"]
        assert h.count("trigger", "accepted") == 1

    @pytest.mark.anyio
    async def test_order_per_dedup_key_and_keys_independent(self, store: Store, clock: FakeClock) -> None:
        """A key in backoff holds back its own later events but not another key's."""

        a1_sends = 0

        def script(body: Mapping[str, Any], call: int) -> Delivery:
            nonlocal a1_sends
            if body["payload"]["summary"] != "a1":
                return ACCEPTED
            a1_sends += 1
            return SERVER_ERROR if a1_sends <= 2 else ACCEPTED

        sender = FakeSender(clock, script)
        h = Harness(store, sender, clock)
        await h.outbox.put("a", "trigger", trigger("a1"))
        await h.outbox.put("a", "trigger", trigger("a2"))
        await h.outbox.put("b", "trigger", trigger("b1"))
        async with h.running():
            await h.until(h.settled)
        sent = sender.summaries()
        assert [summary for summary in sent if summary != "b1"] == ["a1", "a1", "a1", "a2"]
        assert sent.index("b1") < 2  # b1 went out with a1's first attempt, not after a1's backoff

    @pytest.mark.anyio
    async def test_dropped_is_not_retried_and_the_key_moves_on(self, store: Store, clock: FakeClock) -> None:
        """A 400 is recorded as dropped, logged, sent once only, and the key's next event follows."""
        sender = FakeSender(clock, lambda body, call: INVALID if body["payload"].get("summary") == "bad" else ACCEPTED)
        h = Harness(store, sender, clock)
        bad = await h.outbox.put("a", "trigger", trigger("bad"))
        await h.outbox.put("a", "trigger", trigger("good"))
        with capture_logs() as logs:
            async with h.running():
                await h.until(h.settled)
        assert sender.summaries() == ["bad", "good"]
        dropped = await store.outbox_event(bad)
        assert (dropped.status, dropped.last_error) == ("dropped", INVALID.message)
        [entry] = [entry for entry in logs if entry["event"] == "pagerduty_event_dropped"]
        assert (entry["dedup_key"], entry["reason"], entry["log_level"]) == ("a", INVALID.message, "error")
        assert (h.count("trigger", "dropped"), h.count("trigger", "accepted")) == (1, 1)

    @pytest.mark.anyio
    async def test_retry_backs_off_exponentially(self, store: Store, clock: FakeClock) -> None:
        """Three 500s are retried after 1, 2 and 4 s, counted as retried, then accepted."""
        sender = FakeSender(clock, lambda body, call: SERVER_ERROR if call <= 3 else ACCEPTED)
        h = Harness(store, sender, clock)
        start = clock()
        await h.outbox.put("a", "trigger", trigger("a1"))
        async with h.running():
            await h.until(h.settled)
        assert [at - start for at, _, _ in sender.sent] == [0.0, 1.0, 3.0, 7.0]
        assert (h.count("trigger", "retried"), h.count("trigger", "accepted")) == (3, 1)
        [event] = await store.outbox_events()
        assert (event.attempts, event.last_error) == (4, SERVER_ERROR.message)

    @pytest.mark.anyio
    async def test_rate_limit_honours_retry_after(self, store: Store, clock: FakeClock) -> None:
        """After a 429 with Retry-After 90 the next attempt comes 90 s later."""
        throttled = Delivery("retry", 429, "throttled", retry_after=90.0)
        sender = FakeSender(clock, lambda body, call: throttled if call == 1 else ACCEPTED)
        h = Harness(store, sender, clock)
        await h.outbox.put("a", "resolve", {})
        async with h.running():
            await h.until(h.settled)
        assert sender.sent[1][0] - sender.sent[0][0] == 90.0
        assert h.count("resolve", "retried") == 1

    @pytest.mark.anyio
    async def test_loop_contains_failures(
        self, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A store failure in one iteration is logged and counted, and the loop goes on delivering."""
        h = Harness(store, FakeSender(clock), clock)
        real = store.pending_heads
        failures = iter([True])

        async def flaky(now: float) -> Any:
            if next(failures, False):
                raise OSError("disk hiccup")
            return await real(now)

        monkeypatch.setattr(store, "pending_heads", flaky)
        await h.outbox.put("a", "trigger", trigger("a1"))
        with capture_logs() as logs:
            async with h.running():
                await h.until(h.settled)
        assert h.metrics.registry.get_sample_value("depmon_loop_errors_total", {"loop": "outbox"}) == 1
        assert "outbox_loop_failed" in [entry["event"] for entry in logs]

    @pytest.mark.anyio
    async def test_sender_crash_is_retried(self, store: Store, clock: FakeClock) -> None:
        """A sender that raises does not lose the event: it is retried like a failed delivery."""

        def script(body: Mapping[str, Any], call: int) -> Delivery:
            if call == 1:
                raise RuntimeError("bug")
            return ACCEPTED

        sender = FakeSender(clock, script)
        h = Harness(store, sender, clock)
        await h.outbox.put("a", "trigger", trigger("a1"))
        with capture_logs():
            async with h.running():
                await h.until(h.settled)
        assert sender.summaries() == ["a1", "a1"]

    @pytest.mark.anyio
    async def test_drain_delivers_pending_in_order(self, store: Store, clock: FakeClock) -> None:
        """drain() delivers every pending event, in order per key, ignoring backoff, and reports none left."""
        sender = FakeSender(clock)
        h = Harness(store, sender, clock)
        for summary in ("a1", "a2", "a3"):
            await h.outbox.put("a", "trigger", trigger(summary))
        [first] = await store.pending_heads(clock())
        await store.schedule_retry(first.id, clock() + 600, "HTTP 503")
        with anyio.fail_after(5):
            left = await h.outbox.drain(deadline_seconds=2)
        assert (left, sender.summaries()) == (0, ["a1", "a2", "a3"])

    @pytest.mark.anyio
    async def test_drain_stops_when_nothing_gets_through(self, store: Store, clock: FakeClock) -> None:
        """When PagerDuty keeps failing, drain() tries each head once and returns what is left."""
        sender = FakeSender(clock, lambda body, call: SERVER_ERROR)
        h = Harness(store, sender, clock)
        await h.outbox.put("a", "trigger", trigger("a1"))
        await h.outbox.put("b", "trigger", trigger("b1"))
        with anyio.fail_after(5):
            left = await h.outbox.drain(deadline_seconds=2)
        assert (left, sorted(s for s in sender.summaries() if s)) == (2, ["a1", "b1"])

    @pytest.mark.anyio
    async def test_drain_is_bounded_by_its_deadline(self, store: Store, clock: FakeClock) -> None:
        """A sender that never answers cannot hold drain() past its deadline."""

        class HangingSender(FakeSender):
            async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
                await anyio.sleep_forever()
                raise AssertionError

        h = Harness(store, HangingSender(clock), clock)
        await h.outbox.put("a", "trigger", trigger("a1"))
        with anyio.fail_after(5):
            started = anyio.current_time()
            left = await h.outbox.drain(deadline_seconds=0.2)
            assert anyio.current_time() - started < 1.0
        assert left == 1

    @pytest.mark.anyio
    async def test_dry_run_logs_would_page_and_sends_nothing(self, store: Store, clock: FakeClock) -> None:
        """Without a sender events are marked dry_run and logged as would_page with key, action and summary."""
        h = Harness(store, None, clock)
        assert h.outbox.dry_run
        await h.outbox.put("depmon/test/evss", "trigger", {**trigger("EVSS down"), "routing_key": "K" * 32})
        with capture_logs() as logs:
            async with h.running():
                await h.until(h.settled)
        [event] = await store.outbox_events()
        assert event.status == "dry_run"
        assert "routing_key" not in event.body
        [entry] = [entry for entry in logs if entry["event"] == "would_page"]
        assert (entry["dedup_key"], entry["action"], entry["summary"]) == ("depmon/test/evss", "trigger", "EVSS down")
        assert "K" * 32 not in repr(logs)
        assert h.count("trigger", "accepted") == 0

    @pytest.mark.anyio
    async def test_pending_events_survive_restart(self, tmp_path: Path, clock: FakeClock) -> None:
        """An event left pending by one outbox is delivered once by a new outbox over the same file."""
        path = tmp_path / "depmon.sqlite3"
        async with Store(path, environment="test") as first_store:
            first = Harness(first_store, FakeSender(clock, lambda body, call: SERVER_ERROR), clock)
            await first.outbox.put("a", "trigger", trigger("a1"))
            await first.outbox.drain(deadline_seconds=1)
        async with Store(path, environment="test") as second_store:
            sender = FakeSender(clock)
            second = Harness(second_store, sender, clock)
            async with second.running():
                await second.until(second.settled)
        assert sender.summaries() == ["a1"]


class TestIndependentKeys:
    """Issue 9, items 5 and 9: one key's slow answer holds that key only; retries run on the monotonic clock."""

    @pytest.mark.anyio
    async def test_a_hanging_key_does_not_hold_the_others(self, store: Store, clock: FakeClock) -> None:
        """While key a's delivery hangs, key b's events are delivered; a completes when released."""
        release = anyio.Event()

        class HangingSender(FakeSender):
            async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
                if body["dedup_key"] == "a":
                    await release.wait()
                return await super().send(destination, body)

        sender = HangingSender(clock)
        h = Harness(store, sender, clock)
        await h.outbox.put("a", "trigger", trigger("a1"))
        for summary in ("b1", "b2", "b3"):
            await h.outbox.put("b", "trigger", trigger(summary))
        async with h.running():
            await h.until(lambda: _pending_of(store, "b", 0))
            assert sender.summaries() == ["b1", "b2", "b3"]  # delivered while a still hangs
            release.set()
            await h.until(h.settled)
        assert sender.summaries() == ["b1", "b2", "b3", "a1"]

    @pytest.mark.anyio
    async def test_a_wall_clock_step_back_does_not_delay_a_retry(self, store: Store, clock: FakeClock) -> None:
        """The wall clock jumps back an hour after a 500: the retry still comes 1 s later on the monotonic clock."""
        wall = FakeClock(1_700_000_000.0)
        sender = FakeSender(clock, lambda body, call: SERVER_ERROR if call == 1 else ACCEPTED)
        h = Harness(store, sender, clock)
        h.outbox = Outbox(store, {EVENTS: sender}, h.metrics, clock, MaxJitter(), h.wake, wall_clock=wall)

        original = sender.script

        def step_back(body: Mapping[str, Any], call: int) -> Delivery:
            wall.advance(-3600.0)
            assert original is not None
            return original(body, call)

        sender.script = step_back
        await h.outbox.put("a", "trigger", trigger("a1"))
        async with h.running():
            await h.until(h.settled)
        assert [at for at, _, _ in sender.sent] == [1_000.0, 1_001.0]


class TicketSink:
    """A destination the outbox has never heard of: notes on a ticket, answered from a script."""

    def __init__(self, clock: FakeClock, script: Callable[[str, int], Delivery]) -> None:
        self.clock = clock
        self.script = script
        self.sent: list[tuple[float, str, str]] = []  # (time, ticket, note)

    def can_deliver(self, destination: Destination) -> bool:
        return destination.target != "closed"

    async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
        await anyio.lowlevel.checkpoint()
        self.sent.append((self.clock(), destination.target, str(body["note"])))
        return self.script(str(body["note"]), len(self.sent))


def ticket_kind(metrics: Metrics) -> SinkKind:
    """The new kind, counted in a counter of its own in `metrics`' registry."""
    counter = Counter("depmon_ticket_notes", "Ticket notes", ("action", "outcome"), registry=metrics.registry)
    return SinkKind("ticket", "ticket_note", "ticket_note_skipped", "no ticket system", lambda _: counter)


class TestSinks:
    """Every destination kind is one sink in the mapping; the outbox orders, retries and counts them alike."""

    @pytest.mark.anyio
    async def test_a_new_kind_is_delivered_in_order_with_retries(self, store: Store, clock: FakeClock) -> None:
        """Rows of a kind registered with a fake sink are delivered per dedup key in order, retried after a 500."""
        sink = TicketSink(clock, lambda note, call: SERVER_ERROR if call == 1 else ACCEPTED)
        h = Harness(store, FakeSender(clock), clock, sinks={})
        kind = ticket_kind(h.metrics)
        h.outbox.use_sinks({EVENTS: h.sender, kind: sink})
        start = clock()
        for note in ("n1", "n2", "n3"):
            await store.enqueue("INC-1", "trigger", {"note": note}, at=start, destination="ticket:INC-1")
        with capture_logs() as logs:
            async with h.running():
                await h.until(h.settled)
        assert [(at - start, ticket, note) for at, ticket, note in sink.sent] == [
            (0.0, "INC-1", "n1"),
            (1.0, "INC-1", "n1"),
            (1.0, "INC-1", "n2"),
            (1.0, "INC-1", "n3"),
        ]
        counted = {
            outcome: h.metrics.registry.get_sample_value(
                "depmon_ticket_notes_total", {"action": "trigger", "outcome": outcome}
            )
            for outcome in ("accepted", "retried")
        }
        assert counted == {"accepted": 3.0, "retried": 1.0}
        assert h.count("trigger", "accepted") == 0
        assert [entry["event"] for entry in logs if entry["event"].startswith("ticket_note")] == [
            "ticket_note_retry",
            *["ticket_note_accepted"] * 3,
        ]

    @pytest.mark.anyio
    async def test_what_no_sink_can_deliver_is_dry_run(self, store: Store, clock: FakeClock) -> None:
        """A kind without a sink, a target its sink cannot deliver and an unknown kind are marked dry_run, not sent."""
        sink = TicketSink(clock, lambda note, call: ACCEPTED)
        h = Harness(store, None, clock, sinks={})
        kind = ticket_kind(h.metrics)
        h.outbox.use_sinks({EVENTS: None, kind: sink})
        await store.enqueue("a", "trigger", {"note": "closed"}, at=clock(), destination="ticket:closed")
        await store.enqueue("b", "trigger", {"note": "fax"}, at=clock(), destination="fax:+1555")
        await h.outbox.put("c", "trigger", trigger("EVSS down"))
        await store.enqueue("d", "trigger", {"note": "open"}, at=clock(), destination="ticket:INC-2")
        with capture_logs() as logs:
            async with h.running():
                await h.until(h.settled)
        assert sink.sent == [(clock(), "INC-2", "open")]
        statuses = {event.dedup_key: event.status for event in await store.outbox_events()}
        assert statuses == {"a": "dry_run", "b": "dry_run", "c": "dry_run", "d": "accepted"}
        skipped = {entry["dedup_key"]: (entry["event"], entry["reason"]) for entry in logs if "reason" in entry}
        assert skipped == {
            "a": ("ticket_note_skipped", "no ticket system"),
            "b": ("outbox_event_skipped", "no sink for destination kind 'fax'"),
            "c": ("would_page", "no routing key: logged, not sent"),
        }


class TestPendingGauges:
    @pytest.mark.anyio
    async def test_each_destination_kind_has_its_own_count(self, store: Store, clock: FakeClock) -> None:
        """A Slack backlog counts under `slack` alone: the PagerDuty gauge counts events only; no channel is a label."""
        failing = FakeSender(clock, lambda body, call: SERVER_ERROR)
        h = Harness(store, failing, clock, sinks={})
        h.outbox.use_sinks({EVENTS: failing, SLACK: failing})
        await h.outbox.put("depmon/test/evss", "trigger", trigger("EVSS down"))
        for key, channel in (("k1", "#a"), ("k2", "#a"), ("k3", "#b")):
            await store.enqueue(key, "trigger", {"dedup_key": key}, at=clock(), destination=f"slack:{channel}")

        async def published() -> bool:
            return _pending_samples(h.metrics) == {"pagerduty": 1.0, "slack": 3.0} and h.pending_gauge == 1.0

        async with h.running():
            await h.until(published)


def _pending_samples(metrics: Metrics) -> dict[str, float]:
    """`depmon_outbox_pending`'s values by their `destination` label."""
    return {
        sample.labels["destination"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "depmon_outbox_pending"
        for sample in family.samples
    }


class TestDestination:
    """A row's destination column read into a kind and a target, in one place."""

    @pytest.mark.parametrize(
        ("text", "kind", "target"),
        [
            ("pagerduty", "pagerduty", ""),
            ("slack:#va-mobile-app-alerts", "slack", "#va-mobile-app-alerts"),
            ("x:a:b", "x", "a:b"),
        ],
    )
    def test_parse_and_back(self, text: str, kind: str, target: str) -> None:
        """The kind is before the first colon, the target after it; written back it is the same text."""
        destination = Destination.parse(text)
        assert (destination.kind, destination.target, str(destination)) == (kind, target, text)


async def _pending_of(store: Store, dedup_key: str, count: int) -> bool:
    return len([e for e in await store.outbox_events(dedup_key) if e.status == "pending"]) == count
