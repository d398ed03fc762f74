"""Slack through the outbox (issue 13): Slack's answers, order through an outage (the message: unit/test_slack.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from monitor.metrics import Metrics
from monitor.paging.outbox import Backoff, Outbox
from monitor.paging.sinks.slack import SLACK, SlackSink
from monitor.sim.fake_slack import FakeSlack
from monitor.store import Store

pytestmark = pytest.mark.integration

ALERTS = "#va-mobile-app-alerts"
FAST = Backoff(base=0.02, cap=0.1, rate_limited=0.05)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


class TestSender:
    """SlackSink against the fake's webhooks: Slack's answer decides."""

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("status", "body", "expected"),
        [
            (404, "channel_not_found", "dropped"),  # Slack says the hook is wrong: final
            (400, "invalid_payload", "dropped"),
            (403, "Forbidden by proxy", "retry"),  # not Slack's words: a proxy, retried
            (500, "server_error", "retry"),
            (429, "rate_limited", "retry"),
        ],
    )
    async def test_answers(self, slack: FakeSlack, status: int, body: str, expected: str) -> None:
        """Only a 4xx with one of Slack's error codes is final; the URL never appears in the message."""
        url = slack.webhook_url(ALERTS)
        slack.fail_with(status, times=1, body=body)
        sender = SlackSink({ALERTS: url}, timeout=5.0)
        try:
            with anyio.fail_after(10):
                delivery = await sender.send(SLACK.at(ALERTS), {"text": "x"})
                again = await sender.send(SLACK.at(ALERTS), {"text": "y"})
        finally:
            await sender.aclose()
        assert (delivery.status, delivery.http_status) == (expected, status)
        assert url not in delivery.message
        assert (delivery.retry_after == 1.0) is (status == 429)
        assert again.status == "accepted"
        assert [p.text for p in slack.posts] == ["y"]


class TestThroughTheOutbox:
    """Messages are durable like pages: ordered per channel and key, retried through an outage."""

    @pytest.mark.anyio
    async def test_messages_arrive_in_order_through_a_slack_outage(self, slack: FakeSlack, tmp_path: Path) -> None:
        """Three messages queued while Slack answers 500: all arrive, in order, once it is back."""
        sender = SlackSink({ALERTS: slack.webhook_url(ALERTS)})
        slack.fail_with(500, times=4)
        metrics = Metrics()
        async with Store(tmp_path / "s.sqlite3", environment="test") as store:
            outbox = Outbox(store, {SLACK: sender}, metrics, backoff=FAST)
            for text in ("trigger", "update", "resolve"):
                action = "resolve" if text == "resolve" else "trigger"
                await store.enqueue("depmon/t/evss", action, {"text": text}, at=1.0, destination=f"slack:{ALERTS}")
            with anyio.fail_after(15):
                async with anyio.create_task_group() as tg:
                    await tg.start(outbox.run)
                    while len(slack.posts) < 3:
                        await anyio.sleep(0.01)
                    tg.cancel_scope.cancel()
            await sender.aclose()
        assert [p.text for p in slack.posts] == ["trigger", "update", "resolve"]
        assert metrics.registry.get_sample_value(
            "depmon_slack_messages_total", {"action": "trigger", "outcome": "retried"}
        )

    @pytest.mark.anyio
    @pytest.mark.parametrize("webhooks", [None, {ALERTS: "https://hooks.slack.invalid/x"}])
    async def test_a_channel_without_a_webhook_is_skipped_cleanly(
        self, tmp_path: Path, webhooks: dict[str, str] | None
    ) -> None:
        """A message for a channel without a webhook (none at all, or others' only) is marked dry_run and
        logged skipped, never sent, retried or counted."""
        metrics = Metrics()
        sink = None if webhooks is None else SlackSink(webhooks)
        async with Store(tmp_path / "s.sqlite3", environment="test") as store:
            outbox = Outbox(store, {SLACK: sink}, metrics, backoff=FAST)
            event_id = await store.enqueue("k", "trigger", {"text": "x"}, at=1.0, destination="slack:#gone")
            with capture_logs() as logs:
                left = await outbox.drain(2.0)
            event = await store.outbox_event(event_id)
        if sink is not None:
            await sink.aclose()
        assert (left, event.status) == (0, "dry_run")
        [entry] = [entry for entry in logs if entry["event"] == "slack_message_skipped"]
        assert (entry["destination"], entry["reason"]) == ("slack:#gone", "no webhook for the channel")
        assert (
            metrics.registry.get_sample_value(
                "depmon_slack_messages_total", {"action": "trigger", "outcome": "dropped"}
            )
            is None
        )
