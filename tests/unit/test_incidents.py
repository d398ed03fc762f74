"""Incident decisions and PagerDuty event content (SPEC section 7)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from monitor.config import Config, bundled_config_path, load_config
from monitor.health import DependencyHealth, DependencyState
from monitor.impact import FeatureHealth, FeatureState, evaluate_features, needs_from_config
from monitor.incidents import (
    Action,
    Decision,
    EventContext,
    OpenIncident,
    build_event,
    decide,
    severity,
    summary,
)
from monitor.results import Outcome, ProbeResult

SCHEMA = json.loads((Path(__file__).parents[2] / "monitor" / "schemas" / "events-v2.json").read_text())
PUBLISHED = Path(__file__).parents[3] / "shared" / "pagerduty" / "events-v2.openapi.json"
EVSS_FEATURES = ("claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating")

UP = DependencyHealth(DependencyState.UP, DependencyState.UP)
DOWN = DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, failing=True)
UNKNOWN = DependencyHealth(DependencyState.UNKNOWN, DependencyState.UNKNOWN)
MAINT_DOWN = DependencyHealth(DependencyState.MAINTENANCE, DependencyState.DOWN, failing=True)


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(bundled_config_path(), environ={})


def states(config: Config, **overrides: DependencyHealth) -> dict[str, DependencyHealth]:
    result = {dep: UP for dep in config.dependencies}
    for dep, state in overrides.items():
        result[dep.replace("_", "-")] = state
    return result


def features(config: Config, deps: dict[str, DependencyHealth]) -> dict[str, FeatureHealth]:
    return evaluate_features(needs_from_config(config.features), deps)


def run(config: Config, open_incidents: dict[str, OpenIncident], now: float = 100.0, **deps: DependencyHealth):
    dep_states = states(config, **deps)
    return decide("production", open_incidents, dep_states, features(config, dep_states), now, 1800.0)


class TestDecide:
    def test_a_root_cause_down_triggers_once_with_its_features(self, config: Config) -> None:
        """A dependency down outside maintenance with no down parent triggers one page naming its features."""
        decisions = run(config, {}, evss=DOWN)
        assert decisions == [Decision(Action.TRIGGER, "evss", "depmon/production/evss", EVSS_FEATURES)]

    def test_an_open_incident_is_not_triggered_again(self, config: Config) -> None:
        """A dependency still down with the same features needs no event."""
        incident = OpenIncident("evss", "depmon/production/evss", 50.0, EVSS_FEATURES)
        assert run(config, {"evss": incident}, evss=DOWN) == []

    def test_children_of_a_down_parent_are_not_paged(self, config: Config) -> None:
        """With SSOe OAuth down, dependencies needing its token are down with a cause and get no page."""
        child = DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, cause="ssoe-oauth", failing=True)
        decisions = run(config, {}, ssoe_oauth=DOWN, evss=child, va_profile=child, vaos=child)
        assert [d.dependency for d in decisions] == ["ssoe-oauth"]
        assert set(decisions[0].features) == set(config.features)  # every feature needs authentication

    def test_maintenance_pages_nobody(self, config: Config) -> None:
        """A dependency failing inside its maintenance window is not a root cause."""
        assert run(config, {}, mhv=MAINT_DOWN) == []

    def test_recovery_resolves(self, config: Config) -> None:
        """An open incident whose dependency is up again is resolved."""
        incident = OpenIncident("evss", "depmon/production/evss", 50.0, EVSS_FEATURES)
        assert run(config, {"evss": incident}) == [
            Decision(Action.RESOLVE, "evss", "depmon/production/evss", EVSS_FEATURES)
        ]

    def test_unknown_after_restart_keeps_the_incident_open(self, config: Config) -> None:
        """A restarted daemon does not resolve before it has evidence."""
        incident = OpenIncident("evss", "depmon/production/evss", 50.0, EVSS_FEATURES)
        assert run(config, {"evss": incident}, evss=UNKNOWN) == []

    def test_changed_features_send_an_update(self, config: Config) -> None:
        """When more features are impacted, the trigger is re-sent with the new list."""
        incident = OpenIncident("evss", "depmon/production/evss", 50.0, ("claims",))
        decisions = run(config, {"evss": incident}, evss=DOWN)
        assert decisions == [Decision(Action.UPDATE, "evss", "depmon/production/evss", EVSS_FEATURES)]

    def test_significant_duration_escalates_once(self, config: Config) -> None:
        """An incident open past significant_duration is escalated once, then left alone."""
        incident = OpenIncident("evss", "depmon/production/evss", 0.0, EVSS_FEATURES)
        first = run(config, {"evss": incident}, now=1800.0, evss=DOWN)
        assert first == [Decision(Action.ESCALATE, "evss", "depmon/production/evss", EVSS_FEATURES, escalated=True)]
        escalated = OpenIncident("evss", "depmon/production/evss", 0.0, EVSS_FEATURES, escalated=True)
        assert run(config, {"evss": escalated}, now=4000.0, evss=DOWN) == []

    def test_removed_dependency_is_resolved(self, config: Config) -> None:
        """An incident of a dependency no longer in the config (after a reload) is resolved."""
        incident = OpenIncident("gone", "depmon/production/gone", 0.0, ())
        assert [d.action for d in run(config, {"gone": incident})] == [Action.RESOLVE]


def evidence(outcome: Outcome = Outcome.HTTP_STATUS, security: bool = False) -> list[tuple[str, ProbeResult]]:
    detail = "certificate expired 3 days ago (2026-11-24)" if security else "HTTP 503 from /healthcheck"
    return [("healthcheck", ProbeResult.failure(outcome, detail, at=1000.0, security_relevant=security))]


def trigger(config: Config, dep: str = "evss", feats: tuple[str, ...] = EVSS_FEATURES, **kw: object) -> dict:
    dep_states = states(config, **{dep.replace("-", "_"): DOWN})
    ctx = EventContext(config, features(config, dep_states), kw.pop("ev", evidence()), 1000.0)  # type: ignore[arg-type]
    return build_event(Decision(Action.TRIGGER, dep, f"depmon/production/{dep}", feats, **kw), ctx)  # type: ignore[arg-type]


class TestEventContent:
    def test_summary_names_the_features_and_environment(self, config: Config) -> None:
        """The summary reads like the SPEC example."""
        assert summary(config, "evss", EVSS_FEATURES) == (
            "EVSS down: 4 app features impacted (Claims, Letters, Direct Deposit Benefits, Disability Rating) "
            "[production]"
        )

    def test_summary_is_cut_to_1024_characters(self, config: Config) -> None:
        """However many features, the summary stays within PagerDuty's limit."""
        assert len(summary(config, "ssoe-oauth", tuple(config.features) * 40)) <= 1024

    def test_trigger_carries_payload_links_and_escalation(self, config: Config) -> None:
        """A trigger has the SPEC's payload fields, playbooks first in links, and the escalation facts."""
        event = trigger(config)
        payload = event["payload"]
        assert payload["source"] == "depmon/production"
        assert payload["component"] == "evss"
        assert payload["group"] == "va-mobile-app"
        assert payload["class"] == "http_status"
        assert payload["severity"] == "critical"  # claims is used by more than 15% of users
        details = payload["custom_details"]
        assert [f["id"] for f in details["impacted_features"]] == list(EVSS_FEATURES)
        assert details["evidence"][0]["detail"] == "HTTP 503 from /healthcheck"
        assert details["playbooks"] == ["Mobile Incident Response Playbook"]
        assert details["owning_team_channel"] == "#evss-prod"
        assert details["escalation"]["postmortem_required"] is True
        assert "Occurs for a significant portion of the userbase" in details["escalation"]["criteria_met"]
        assert details["escalation"]["notify"][0].startswith("Product Owner")
        assert event["links"][0]["text"] == "Mobile Incident Response Playbook"
        hrefs = [link["href"] for link in event["links"]]
        assert any(h.endswith("/service-directory/PZKWB6Y") for h in hrefs)
        assert "routing_key" not in event

    def test_tls_failure_is_security_relevant(self, config: Config) -> None:
        """An expired certificate adds the Security Incident Procedure and the ISO, and is critical."""
        event = trigger(config, "lighthouse", ("immunizations",), ev=evidence(Outcome.TLS, security=True))
        assert event["payload"]["severity"] == "critical"
        titles = [link["text"] for link in event["links"]]
        assert "Security Incident Procedure" in titles
        notify = event["payload"]["custom_details"]["escalation"]["notify"]
        assert any(n.startswith("Information System Owner") for n in notify)

    def test_low_share_features_give_severity_error(self, config: Config) -> None:
        """Features used by fewer than 15% of users, without a security issue, page as `error`."""
        assert severity(config, ["immunizations"], security=False) == "error"

    def test_resolve_is_minimal(self, config: Config) -> None:
        """A resolve carries the action and dedup key only."""
        ctx = EventContext(config, {}, [], 0.0)
        event = build_event(Decision(Action.RESOLVE, "evss", "depmon/production/evss"), ctx)
        assert event == {"event_action": "resolve", "dedup_key": "depmon/production/evss"}

    @pytest.mark.parametrize("dep", ["evss", "ssoe-oauth", "vaos", "lighthouse", "vanotify"])
    def test_every_trigger_is_schema_valid(self, config: Config, dep: str) -> None:
        """Each trigger validates against the project's Events v2 schema (with a routing key added)."""
        dep_states = states(config, **{dep.replace("-", "_"): DOWN})
        feats = tuple(f for f, h in features(config, dep_states).items() if h.state is FeatureState.DOWN)
        event = {**trigger(config, dep, feats), "routing_key": "x" * 32}
        jsonschema.validate(event, SCHEMA)
        assert len(event["payload"]["summary"]) <= 1024

    @pytest.mark.skipif(not PUBLISHED.exists(), reason="../shared/pagerduty is not on this machine")
    def test_trigger_is_valid_against_the_published_schema(self, config: Config) -> None:
        """The same trigger passes PagerDuty's published request schema."""
        spec = json.loads(PUBLISHED.read_text())
        body = spec["paths"]["/enqueue"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        schema = {**body, "components": spec["components"]}
        jsonschema.validate({**trigger(config), "routing_key": "x" * 32}, schema)
