"""Outbox -> events sink -> EventsSender -> the real `pagerduty` package -> the fake PagerDuty on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from monitor.metrics import Metrics
from monitor.pagerduty.clients import EventsSender
from monitor.paging.outbox import Backoff, Outbox
from monitor.paging.sinks.pagerduty_events import EVENTS, PagerDutyEventsSink
from monitor.sim.fake_pagerduty import FakePagerDuty, event_errors
from monitor.store import Store
from tests.helpers import until

pytestmark = pytest.mark.integration

ROUTING_KEY = "R0UT1NGK3Y" + "x" * 22
DEDUP_KEY = "depmon/test/evss"
# Fast enough for tests, same shape as production's 1 s / 5 min / 30 s.
FAST = Backoff(base=0.02, cap=0.2, rate_limited=0.05)
SEND_TIMEOUT = 0.5


def trigger_body(summary: str = "EVSS down: 4 app features impacted [test]") -> dict[str, Any]:
    return {
        "payload": {
            "summary": summary,
            "source": "depmon/test",
            "severity": "critical",
            "component": "evss",
            "group": "va-mobile-app",
            "class": "http_status",
            "custom_details": {"dependency": "evss", "impacted_features": [{"id": "claims", "state": "down"}]},
        },
        "links": [{"href": "https://example.gov/playbook", "text": "Mobile Incident Response Playbook"}],
        "client": "depmon",
        "client_url": "http://127.0.0.1:9464/status",
    }


@pytest.fixture
def fake(pagerduty: FakePagerDuty) -> FakePagerDuty:
    """The fake PagerDuty this module's tests deliver to."""
    return pagerduty


class Rig:
    """A store, a sender and an outbox pointed at the fake, with helpers to wait on them."""

    def __init__(self, store: Store, fake: FakePagerDuty) -> None:
        self.store = store
        self.fake = fake
        self.metrics = Metrics()
        self.sender = EventsSender(fake.events_url, SecretStr(ROUTING_KEY), timeout=SEND_TIMEOUT)
        self.outbox = Outbox(store, {EVENTS: PagerDutyEventsSink(self.sender)}, self.metrics, backoff=FAST)

    def count(self, outcome: str, action: str = "trigger") -> float:
        value = self.metrics.registry.get_sample_value(
            "depmon_pagerduty_events_total", {"action": action, "outcome": outcome}
        )
        return value or 0.0

    async def until(self, condition: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0) -> None:
        """Wait for `condition` (tests.helpers.until)."""
        await until(condition, seconds)

    async def settled(self) -> bool:
        return await self.store.pending_count() == 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.outbox.run)
                yield
                tg.cancel_scope.cancel()
        finally:
            self.sender.close()


@asynccontextmanager
async def rig(fake: FakePagerDuty, path: str | Path = ":memory:") -> AsyncIterator[Rig]:
    async with Store(path, environment="test") as store:
        built = Rig(store, fake)
        async with built.running():
            yield built


class TestEventsSender:
    """Construction rules of the sender."""

    def test_plain_http_only_to_loopback(self) -> None:
        """An http:// events URL is refused unless it is a loopback address (the key would travel in clear)."""
        with pytest.raises(ValueError, match="loopback"):
            EventsSender("http://events.example.com", SecretStr(ROUTING_KEY))

    def test_empty_routing_key_refused(self) -> None:
        """Without a routing key there is no sender: the outbox runs dry instead."""
        with pytest.raises(ValueError, match="dry run"):
            EventsSender("https://events.pagerduty.com", SecretStr(""))


class TestDelivery:
    """End-to-end delivery through the real `pagerduty` package to the fake on loopback."""

    @pytest.mark.anyio
    async def test_trigger_accepted_schema_valid(self, fake: FakePagerDuty) -> None:
        """A trigger reaches the fake once, schema-valid, with the routing key added and every field kept."""
        async with rig(fake) as r:
            await r.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await r.until(r.settled)
            [stored] = await r.store.outbox_events()
        [received] = fake.events
        assert event_errors(received.body) == []
        expected = {**trigger_body(), "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": DEDUP_KEY}
        assert received.body == expected
        assert stored.status == "accepted"
        assert r.count("accepted") == 1

    @pytest.mark.anyio
    async def test_trigger_then_resolve_in_order(self, fake: FakePagerDuty) -> None:
        """A trigger and its resolve arrive in order and close the alert."""
        async with rig(fake) as r:
            await r.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await r.outbox.put(DEDUP_KEY, "resolve", {})
            await r.until(r.settled)
        assert [event.action for event in fake.events_for(DEDUP_KEY)] == ["trigger", "resolve"]
        alert = fake.alert(DEDUP_KEY)
        assert alert is not None
        assert alert.status == "resolved"

    @pytest.mark.anyio
    async def test_server_error_then_accepted_once(self, fake: FakePagerDuty) -> None:
        """After a 500 the event is retried by the outbox (not the package) and delivered once."""
        fake.fail_with(500, times=1)
        async with rig(fake) as r:
            await r.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await r.until(r.settled)
        assert (fake.enqueue_requests, len(fake.events)) == (2, 1)
        assert (r.count("retried"), r.count("accepted")) == (1, 1)

    @pytest.mark.anyio
    async def test_delivery_soon_after_an_outage_clears(self, fake: FakePagerDuty) -> None:
        """During a 500 outage the event keeps retrying; once it clears it is delivered within the backoff cap."""
        fake.fail_with(503)
        async with rig(fake) as r:
            await r.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await r.until(lambda: fake.enqueue_requests >= 4)
            cleared = time.monotonic()
            fake.clear_faults()
            await r.until(lambda: len(fake.events) == 1)
            recovery = time.monotonic() - cleared
            await r.until(r.settled)
        assert recovery < FAST.cap + SEND_TIMEOUT
        assert len(fake.events) == 1

    @pytest.mark.anyio
    async def test_rate_limited_three_times_then_accepted(self, fake: FakePagerDuty) -> None:
        """Three 429s are each retried once by the outbox, at least the rate-limit floor apart, then accepted."""
        fake.fail_with(429, times=3)
        async with rig(fake) as r:
            put_at = time.time()
            await r.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await r.until(r.settled)
        assert (fake.enqueue_requests, len(fake.events)) == (4, 1)
        assert fake.events[0].received_at - put_at >= 3 * FAST.rate_limited
        assert (r.count("retried"), r.count("accepted")) == (3, 1)

    @pytest.mark.anyio
    async def test_hang_is_bounded_by_the_timeout(self, fake: FakePagerDuty) -> None:
        """A PagerDuty that never answers costs one timeout per attempt, then a retry; the event arrives once."""
        fake.hang()
        async with rig(fake) as r:
            started = time.monotonic()
            await r.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await r.until(lambda: r.count("retried") >= 1)
            assert time.monotonic() - started < SEND_TIMEOUT + 1.0
            [timed_out] = await r.store.outbox_events()
            fake.go_down()  # held requests are dropped unanswered, as a timed-out request may be
            fake.clear_faults()  # and back up, answering again
            await r.until(r.settled)
        assert "ReadTimeout" in (timed_out.last_error or "")
        assert len(fake.events) == 1

    @pytest.mark.anyio
    async def test_down_then_back_delivers_once(self, fake: FakePagerDuty) -> None:
        """Connection refused is retried until PagerDuty is back, then the event is delivered exactly once."""
        fake.go_down()
        async with rig(fake) as r:
            await r.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await r.until(lambda: r.count("retried") >= 2)
            fake.come_back()
            await r.until(r.settled)
            [stored] = await r.store.outbox_events()
        assert "ConnectError" in (stored.last_error or "")
        assert len(fake.events) == 1

    @pytest.mark.anyio
    async def test_invalid_event_dropped_never_retried(self, fake: FakePagerDuty) -> None:
        """An event the API refuses (400) is dropped with PagerDuty's reason, sent once, and the key moves on."""
        with capture_logs() as logs:
            async with rig(fake) as r:
                bad = await r.outbox.put(DEDUP_KEY, "trigger", trigger_body(summary="x" * 2000))
                await r.outbox.put(DEDUP_KEY, "resolve", {})
                await r.until(r.settled)
                # A later event on the same key: a wrong retry of the dropped one would come before it.
                await r.outbox.put(DEDUP_KEY, "resolve", {})
                await r.until(lambda: r.count("accepted", "resolve") == 2)
                dropped = await r.store.outbox_event(bad)
        assert (fake.enqueue_requests, len(fake.rejected_events), len(fake.events)) == (3, 1, 2)
        assert dropped.status == "dropped"
        assert dropped.last_error is not None
        assert "HTTP 400" in dropped.last_error
        assert "Event object is invalid" in dropped.last_error
        assert (r.count("dropped"), r.count("retried")) == (1, 0)
        assert "pagerduty_event_dropped" in [entry["event"] for entry in logs]
        assert ROUTING_KEY not in repr(logs)
        assert ROUTING_KEY not in dropped.last_error

    @pytest.mark.anyio
    async def test_restart_delivers_pending_exactly_once(self, fake: FakePagerDuty, tmp_path: Path) -> None:
        """An event pending when the daemon stops is delivered exactly once by the next daemon over the same file."""
        path = tmp_path / "depmon.sqlite3"
        fake.go_down()
        async with rig(fake, path) as first:
            await first.outbox.put(DEDUP_KEY, "trigger", trigger_body())
            await first.until(lambda: first.count("retried") >= 1)
        fake.come_back()
        async with rig(fake, path) as second:
            await second.until(second.settled)
            # A later event on the same key: a second delivery of the trigger would come before it.
            await second.outbox.put(DEDUP_KEY, "resolve", {})
            await second.until(lambda: second.count("accepted", "resolve") == 1)
        assert [event.action for event in fake.events] == ["trigger", "resolve"]
        assert second.count("accepted") == 1
        for state_file in tmp_path.iterdir():
            assert ROUTING_KEY.encode() not in state_file.read_bytes()
