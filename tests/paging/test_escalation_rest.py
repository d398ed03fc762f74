"""Escalation's REST writes (SPEC 11.2): store -> outbox -> pagerduty_rest sink -> the real `pagerduty`
package -> the fake PagerDuty on loopback, which creates incidents a moment after a trigger."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from monitor.config import bundled_config_path, load_config
from monitor.metrics import Metrics
from monitor.pagerduty.clients import EventsSender
from monitor.pagerduty.incidents import IncidentsClient
from monitor.paging.escalation import escalation_writes
from monitor.paging.event_content import IncidentFacts
from monitor.paging.outbox import Backoff, Outbox
from monitor.paging.sinks.pagerduty_events import EVENTS, PagerDutyEventsSink
from monitor.paging.sinks.pagerduty_rest import REST, PagerDutyRestSink
from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.store import IncidentWrite, SQLiteStore, Store

ROUTING_KEY = "R0UT1NGK3Y" + "x" * 22
KEY = "depmon/test/evss"
FAST = Backoff(base=0.02, cap=0.2, rate_limited=0.05)
FROM = "oncall@example.gov"
EVSS = ("claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating")
ENVIRON = {
    "PAGERDUTY_API_TOKEN": "sim-api-token",
    "PAGERDUTY_FROM_EMAIL": FROM,
    "PAGERDUTY_REQUESTER_ID": "PREQ001",
    "PD_USER_PRODUCT_OWNER": "PPO0001",
    "PD_POLICY_EVSS": "P0EVSS1",
}
TRIGGER = {"payload": {"summary": "EVSS down [test]", "source": "depmon/test", "severity": "critical"}}


def _rows(escalated: bool) -> list[dict[str, Any]]:
    config = load_config(bundled_config_path(), environ=ENVIRON)
    facts = IncidentFacts("evss", EVSS, EVSS, False, escalated)
    return [{"incident_key": KEY, "opened_at": 1.0, **w.row()} for w in escalation_writes(config, facts)]


@pytest.fixture
def fake() -> Iterator[FakePagerDuty]:
    with FakePagerDuty(incident_delay=0.3) as running:
        yield running


class Rig:
    """A store, both PagerDuty sinks and an outbox pointed at the fake."""

    def __init__(self, store: Store, fake: FakePagerDuty, find_within: float = 120.0) -> None:
        self.store = store
        self.metrics = Metrics()
        self.sender = EventsSender(fake.events_url, SecretStr(ROUTING_KEY), timeout=0.5)
        self.client = IncidentsClient(fake.api_url, SecretStr(fake.api_token), timeout=0.5, deadline=0.8)
        self.rest = PagerDutyRestSink(self.client, FROM, find_within=find_within)
        self.outbox = Outbox(
            store, {EVENTS: PagerDutyEventsSink(self.sender), REST: self.rest}, self.metrics, backoff=FAST
        )

    def count(self, step: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("depmon_escalations_total", {"step": step, "outcome": outcome})
        return value or 0.0

    async def page(self, escalated: bool = False) -> int:
        write = IncidentWrite(
            dependency="evss",
            dedup_key=KEY,
            at=1.0,
            kind="trigger",
            timeline={"action": "trigger"},
            event=("trigger", {"event_action": "trigger", "dedup_key": KEY, **TRIGGER}),
            rest_writes=_rows(escalated),
        )
        (incident_id,) = await self.store.apply_all([write])
        self.outbox.queued()
        return incident_id

    async def settled(self, seconds: float = 10.0) -> None:
        with anyio.fail_after(seconds):
            while await self.store.pending_count():
                await anyio.sleep(0.01)


@pytest.fixture
async def rig(tmp_path: Path, fake: FakePagerDuty) -> AsyncIterator[Rig]:
    async with Store(SQLiteStore(tmp_path / "state.sqlite3", environment="test")) as store:
        made = Rig(store, fake)
        async with anyio.create_task_group() as tg:
            await tg.start(made.outbox.run)
            yield made
            tg.cancel_scope.cancel()
        made.sender.close()
        made.client.close()


pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class TestEscalationDelivery:
    async def test_writes_reach_the_incident_pagerduty_opens_a_moment_after_the_trigger(
        self, rig: Rig, fake: FakePagerDuty
    ) -> None:
        """The responder requests, the note and the urgency land on the incident, in order, each with From."""
        await rig.page(escalated=True)
        await rig.settled()
        [incident] = fake.incidents_of(KEY)
        targets = [r["responder_request_targets"][0]["responder_request_target"] for r in incident.responder_requests]
        assert targets == [
            {"id": "PPO0001", "type": "user_reference"},
            {"id": "P0EVSS1", "type": "escalation_policy_reference"},
        ]
        assert len(incident.notes) == 1
        assert incident.urgency == "high"
        assert [w[0] for w in incident.writes] == ["POST", "POST", "POST", "PUT"]
        assert {w[2] for w in incident.writes} == {FROM}
        assert (rig.count("responders", "accepted"), rig.count("note", "accepted")) == (2.0, 1.0)

    @pytest.mark.parametrize("fault", ["500", "429", "timeout", "down"])
    async def test_a_rest_outage_delays_the_writes_but_never_loses_them(
        self, rig: Rig, fake: FakePagerDuty, fault: str
    ) -> None:
        """500s, 429s, hung requests or a closed port: retried, then every write lands once."""
        if fault == "timeout":
            fake.rest_hang()
        elif fault == "down":
            fake.rest_go_down()
        else:
            fake.rest_fail_with(int(fault))
        await rig.page()
        with anyio.fail_after(10):
            while rig.count("responders", "retried") < 2:
                await anyio.sleep(0.01)
        if fault == "down":
            fake.rest_come_back()
        fake.rest_clear_faults()
        await rig.settled()
        [incident] = fake.incidents_of(KEY)
        assert (len(incident.responder_requests), len(incident.notes)) == (1, 1)

    async def test_an_incident_pagerduty_does_not_open_in_time_is_not_found(self, tmp_path: Path) -> None:
        """PagerDuty has no incident for the key within the search time: each write is dropped as not_found."""
        with FakePagerDuty(incident_delay=3600.0) as late:
            async with Store(SQLiteStore(tmp_path / "s.sqlite3", environment="test")) as store:
                rig = Rig(store, late, find_within=0.3)
                async with anyio.create_task_group() as tg:
                    await tg.start(rig.outbox.run)
                    await rig.page()
                    await rig.settled()
                    tg.cancel_scope.cancel()
                rig.sender.close()
                rig.client.close()
                rest = [e for e in await store.outbox_events(KEY) if e.destination == "pagerduty_rest"]
            assert {e.status for e in rest} == {"dropped"}
            assert all((e.last_error or "").startswith("not_found") for e in rest)
            assert (rig.count("responders", "not_found"), rig.count("note", "not_found")) == (1.0, 1.0)
            assert late.incidents_of(KEY)[0].writes == ()
