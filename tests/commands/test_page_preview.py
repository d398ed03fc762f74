"""`depmon page DEPENDENCY [--json]` (SPEC 11.5): what an outage would send, built by the pager's own code."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from monitor.commands.cli import main
from monitor.commands.page import ROUTING_KEY_SHOWN, SIMULATED_FAILURE, preview_page, run_page
from monitor.config import Config, bundled_config_path, load_config
from monitor.results import Outcome, ProbeResult
from monitor.sim.fake_pagerduty import FakePagerDuty
from tests.clocks import FakeClock
from tests.helpers import published_validator
from tests.paging.test_pager import pager_over

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 in New York
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
WEBHOOKS = {
    "SLACK_WEBHOOK_VA_MOBILE_APP_ALERTS": "https://hooks.slack.com/services/T0/B1/alerts-Secret",
    "SLACK_WEBHOOK_EVSS_PROD": "https://hooks.slack.com/services/T0/B2/evss-Secret",
}
EVSS_FEATURES = ["claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"]
EVENTS_SCHEMA = json.loads((Path(__file__).parents[2] / "monitor" / "schemas" / "events-v2.json").read_text())
PUBLISHED_EVENTS = "#/paths/~1enqueue/post/requestBody/content/application~1json/schema"
BUNDLED_DEPENDENCIES = list(load_config(bundled_config_path(), {}).dependencies)


@pytest.fixture(scope="module")
def bundled() -> Config:
    return load_config(bundled_config_path(), {})


def page_json(capsys: pytest.CaptureFixture[str], dependency: str, environ: dict[str, str]) -> dict[str, Any]:
    """`depmon page DEPENDENCY --json` on the bundled config, parsed."""
    assert main(["page", dependency, "--json", "--config", str(bundled_config_path())], environ=environ) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


class TestPageJson:
    def test_shape(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The document has exactly the SPEC's keys; the routing key is a placeholder; REST writes are none yet."""
        document = page_json(capsys, "evss", {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY, **WEBHOOKS})
        assert list(document) == ["dependency", "at", "pagerduty", "slack", "pagerduty_rest"]
        assert document["dependency"] == "evss"
        assert datetime.fromisoformat(document["at"]).tzinfo is not None
        assert document["pagerduty"]["routing_key"] == ROUTING_KEY_SHOWN == "<routing key>"
        assert [list(post) for post in document["slack"]] == [["channel", "message"]] * 2
        assert document["pagerduty_rest"] == []

    def test_the_escalations_rest_writes_follow_the_trigger(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With escalation configured, EVSS's page lists its responder request and note (SPEC 11.2), as queued."""
        environ = {
            "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "PAGERDUTY_API_TOKEN": "token",
            "PAGERDUTY_FROM_EMAIL": "oncall@example.gov",
            "PAGERDUTY_REQUESTER_ID": "PREQ001",
            "PD_USER_PRODUCT_OWNER": "PPO0001",
        }
        writes = page_json(capsys, "evss", environ)["pagerduty_rest"]
        paths = [(w["method"], w["path"]) for w in writes]
        assert ("POST", "/incidents/{incident_id}/responder_requests") in paths
        assert ("POST", "/incidents/{incident_id}/notes") in paths
        request = next(w["body"] for w in writes if w["path"].endswith("/responder_requests"))
        assert request["responder_request_targets"] == [
            {"responder_request_target": {"id": "PPO0001", "type": "user_reference"}}
        ]

    @pytest.mark.parametrize("dependency", BUNDLED_DEPENDENCIES)
    def test_event_is_valid_for_our_events_v2_schema(self, dependency: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Every bundled dependency's page passes monitor/schemas/events-v2.json, as the fake PagerDuty checks it."""
        event = page_json(capsys, dependency, {})["pagerduty"]
        assert list(jsonschema.Draft202012Validator(EVENTS_SCHEMA).iter_errors(event)) == []

    @pytest.mark.parametrize("dependency", BUNDLED_DEPENDENCIES)
    def test_event_is_valid_for_pagerdutys_published_schema(
        self, dependency: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every bundled dependency's page passes PagerDuty's published Events v2 schema (skipped without it)."""
        validator = published_validator("events-v2.openapi.json", PUBLISHED_EVENTS)
        if validator is None:
            pytest.skip("PagerDuty's published schema is not on this machine (../shared/pagerduty)")
        assert list(validator.iter_errors(page_json(capsys, dependency, {})["pagerduty"])) == []

    def test_evss_page_names_its_features(self, capsys: pytest.CaptureFixture[str]) -> None:
        """EVSS's page on the bundled config: its four features down, sev-1, critical, its dedup key."""
        event = page_json(capsys, "evss", {})["pagerduty"]
        details = event["payload"]["custom_details"]
        assert [(f["id"], f["state"]) for f in details["impacted_features"]] == [(f, "down") for f in EVSS_FEATURES]
        assert (event["dedup_key"], event["payload"]["severity"], details["va_severity"]) == (
            "depmon/production/evss",
            "critical",
            "sev-1",
        )

    def test_a_parent_outage_pages_once_for_the_parent(self, capsys: pytest.CaptureFixture[str]) -> None:
        """SSOe's page names every feature, the children's included; no child is paged beside it."""
        event = page_json(capsys, "ssoe-oauth", {})["pagerduty"]
        features = [f["id"] for f in event["payload"]["custom_details"]["impacted_features"]]
        assert set(EVSS_FEATURES) <= set(features)
        assert event["dedup_key"] == "depmon/production/ssoe-oauth"

    def test_slack_posts_go_to_the_channels_with_a_webhook(self, capsys: pytest.CaptureFixture[str]) -> None:
        """One post per channel of the page that has a webhook, in the pager's order; no webhook URL is shown."""
        document = page_json(capsys, "evss", WEBHOOKS)
        assert [post["channel"] for post in document["slack"]] == ["#va-mobile-app-alerts", "#evss-prod"]
        assert document["slack"][0]["message"]["blocks"][0]["text"]["text"] == "Down: EVSS"
        text = json.dumps(document)
        assert all(url not in text for url in WEBHOOKS.values())
        assert page_json(capsys, "evss", {})["slack"] == []

    def test_no_secret_is_printed(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The routing key and the webhooks stay out of both forms."""
        environ = {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY, **WEBHOOKS}
        for form in (["--json"], []):
            assert main(["page", "evss", *form, "--config", str(bundled_config_path())], environ=environ) == 0
            out = capsys.readouterr().out
            assert all(secret not in out for secret in [ROUTING_KEY, *WEBHOOKS.values()])


class TestSameAsThePager:
    @pytest.mark.anyio
    @pytest.mark.parametrize("dependency", ["evss", "ssoe-oauth", "idme"])
    async def test_preview_equals_what_the_pager_queues(self, dependency: str) -> None:
        """The real pager, given the same outage (every probe of the dependency failing past its threshold),
        queues exactly the preview's event and Slack posts."""
        config = load_config(bundled_config_path(), {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY, **WEBHOOKS})
        preview = preview_page(config, dependency, NOW)
        clock = FakeClock(NOW)
        async with pager_over(config, clock) as (pager, engine, store):
            for dep_id, spec in config.iter_probes():
                if dep_id != dependency:
                    engine.record(dep_id, spec.name, ProbeResult.success("up", at=NOW))
            failure = ProbeResult.failure(Outcome.CONNECT, SIMULATED_FAILURE, at=NOW)
            for spec in config.dependencies[dependency].probes:
                for _ in range(config.timing(spec).failure_threshold):
                    engine.record(dependency, spec.name, failure)
            await pager.reconcile()
            queued = await store.outbox_events()
        events = [e.body for e in queued if e.destination == "pagerduty"]
        posts = [(e.destination.removeprefix("slack:"), e.body) for e in queued if e.destination != "pagerduty"]
        assert preview.pagerduty is not None
        assert events == [{k: v for k, v in preview.pagerduty.items() if k != "routing_key"}]
        assert posts == preview.slack


class TestPageText:
    def test_evss_in_words(self, bundled: Config) -> None:
        """The human form: summary, where it would go, severity, features, playbooks, escalation, Slack."""
        out = io.StringIO()
        assert run_page(bundled, "evss", False, out, out, clock=lambda: NOW) == 0
        assert out.getvalue().splitlines() == [
            "EVSS down: 4 app features impacted (Claims, Letters, Direct Deposit Benefits, Disability Rating) "
            "[production]",
            "  would go to: the outbox only (pagerduty.routing_key is empty: a dry run), "
            "dedup key depmon/production/evss",
            "  severity: critical (VA sev-1), class connect",
            "  impacted features: Claims (down), Letters (down), Direct Deposit Benefits (down), "
            "Disability Rating (down)",
            "  playbooks: Mobile Incident Response Playbook, Postmortem Repository and Template",
            "  escalation: notify Product Owner (Ryan Thurlwell, DSVA Slack); postmortem required",
            "    criterion met: Occurs for a significant portion of the userbase",
            "  Slack: none (no channel of this page has a webhook)",
            "nothing was sent: a preview at 2026-11-30 14:00 UTC from the config alone "
            "(no maintenance window, silence or earlier incident taken into account)",
        ]

    def test_slack_channels_and_pagerduty_named(self) -> None:
        """With a routing key and webhooks, the lines say PagerDuty and name the channels."""
        config = load_config(bundled_config_path(), {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY, **WEBHOOKS})
        out = io.StringIO()
        run_page(config, "evss", False, out, out, clock=lambda: NOW)
        lines = out.getvalue().splitlines()
        assert lines[1] == "  would go to: PagerDuty, dedup key depmon/production/evss"
        assert "  Slack: #va-mobile-app-alerts, #evss-prod" in lines

    def test_an_outage_that_pages_nobody_says_so(self, tmp_path: Path) -> None:
        """A dependency whose probes are all non-critical is degraded by an outage, never paged: no event."""
        path = tmp_path / "depmon.yaml"
        path.write_text(
            "monitor: {environment: unit}\n"
            "dependencies:\n"
            "  docs-site: {name: Docs, probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9, critical: false}]}\n"
        )
        config = load_config(path, {})
        assert preview_page(config, "docs-site", NOW).as_json()["pagerduty"] is None
        out = io.StringIO()
        assert run_page(config, "docs-site", False, out, out, clock=lambda: NOW) == 0
        assert out.getvalue() == (
            "an outage of Docs [docs-site] pages nobody: none of its probes is critical (it is degraded, never down)\n"
        )


class TestPageCli:
    def test_unknown_dependency_is_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown id: exit 2, one line naming it and the known ones, nothing on stdout."""
        assert main(["page", "evs", "--config", str(bundled_config_path())], environ={}) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            "depmon page: unknown dependency 'evs' (known: caseflow, dslogon, evss, idme, lighthouse, mhv, "
            "ssoe-oauth, va-profile, vanotify, vaos, vetext)\n"
        )

    def test_a_bidi_override_in_the_id_is_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """DEPENDENCY with a bidirectional-format character is refused before anything is read."""
        assert main(["page", "ev\u202ess"], environ={}) == 2
        assert capsys.readouterr().err == (
            "depmon page: DEPENDENCY: control, bidirectional-format and non-UTF-8 characters are not allowed "
            "(U+202E at character 3)\n"
        )

    def test_nothing_reaches_pagerduty(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With a routing key and PagerDuty on loopback, the command sends nothing: the fake has no event
        after it, and takes one sent directly afterwards (it was listening)."""
        with FakePagerDuty() as fake:
            environ = {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "PAGERDUTY_EVENTS_URL": fake.events_url}
            document = page_json(capsys, "evss", environ)
            assert fake.events == []
            event = {**document["pagerduty"], "routing_key": ROUTING_KEY}
            assert httpx.post(f"{fake.events_url}/v2/enqueue", json=event).status_code == 202
            assert len(fake.events) == 1
