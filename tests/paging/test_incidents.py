"""Incident decisions and PagerDuty event content (SPEC section 7)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import Config, bundled_config_path, load_config
from monitor.maintenance.records import MaintenanceWindow
from monitor.paging.decisions import Action, Decision, OpenIncident, Policy, Situation, decide
from monitor.paging.event_content import (
    EVENT_BYTES_LIMIT,
    EventContext,
    IncidentFacts,
    build_event,
    escalation_criteria,
    event_size,
    paged_severity,
    postmortem_required,
    severity,
    summary,
    va_severity,
)
from monitor.results import Outcome, ProbeResult
from monitor.state.health import DependencyHealth, DependencyState
from monitor.state.impact import FeatureHealth, FeatureState, evaluate_features, needs_from_config
from tests.helpers import bundled_config, published_validator, repo_schema

pytestmark = pytest.mark.unit

SCHEMA = repo_schema("events-v2.json")
PUBLISHED_EVENTS_POINTER = "#/paths/~1enqueue/post/requestBody/content/application~1json/schema"
EVSS_FEATURES = ("claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating")

UP = DependencyHealth(DependencyState.UP, DependencyState.UP)
DOWN = DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, failing=True)
UNKNOWN = DependencyHealth(DependencyState.UNKNOWN, DependencyState.UNKNOWN)
MAINT_DOWN = DependencyHealth(DependencyState.MAINTENANCE, DependencyState.DOWN, failing=True)


@pytest.fixture(scope="module")
def config() -> Config:
    return bundled_config()


def states(config: Config, **overrides: DependencyHealth) -> dict[str, DependencyHealth]:
    result = {dep: UP for dep in config.dependencies}
    for dep, state in overrides.items():
        result[dep.replace("_", "-")] = state
    return result


def features(config: Config, deps: dict[str, DependencyHealth]) -> dict[str, FeatureHealth]:
    return evaluate_features(needs_from_config(config.features), deps)


def run(
    config: Config,
    open_incidents: dict[str, OpenIncident],
    now: float = 100.0,
    hold: float = 0.0,
    since: dict[str, float] | None = None,
    confirm: dict[str, float] | None = None,
    last_result: dict[str, float] | None = None,
    last_failure: dict[str, float] | None = None,
    recheck: dict[str, float] | None = None,
    silenced: frozenset[str] = frozenset(),
    **deps: DependencyHealth,
) -> list[Decision]:
    dep_states = states(config, **deps)
    situation = Situation(
        dep_states,
        features(config, dep_states),
        since or {},
        config.ancestors(),
        confirm or {},
        last_result or {},
        last_failure or {},
        recheck or {},
        silenced,
    )
    return decide(Policy("production", 1800.0, hold), open_incidents, situation, now)


def key(dep: str) -> str:
    return f"depmon/production/{dep}"


EVSS_OPEN = OpenIncident("evss", key("evss"), 50.0, EVSS_FEATURES, id=7)
RESOLVE_EVSS = Decision(Action.RESOLVE, "evss", key("evss"), EVSS_FEATURES)
PARENT_FAILING = DependencyHealth(DependencyState.UP, DependencyState.UP, failing=True)  # a first, unconfirmed failure
CHILD_OF_SSOE = DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, cause="ssoe-oauth", failing=True)


class TestDecide:
    """The incident rules, one table row each (SPEC 7 and 10.1, issue 9)."""

    def test_a_root_cause_down_triggers_once_with_its_features(self, config: Config) -> None:
        """A dependency down outside maintenance with no down parent triggers one page naming its features."""
        decisions = run(config, {}, evss=DOWN)
        assert decisions == [Decision(Action.TRIGGER, "evss", key("evss"), EVSS_FEATURES)]

    def test_an_open_incident_is_not_triggered_again(self, config: Config) -> None:
        """A dependency still down with the same features needs no event."""
        assert run(config, {"evss": EVSS_OPEN}, evss=DOWN) == []

    def test_children_of_a_down_parent_are_not_paged(self, config: Config) -> None:
        """With SSOe OAuth down, dependencies needing its token are down with a cause and get no page."""
        decisions = run(config, {}, ssoe_oauth=DOWN, evss=CHILD_OF_SSOE, va_profile=CHILD_OF_SSOE, vaos=CHILD_OF_SSOE)
        assert [d.dependency for d in decisions] == ["ssoe-oauth"]
        assert set(decisions[0].features) == set(config.features)  # every feature needs authentication

    def test_maintenance_pages_nobody(self, config: Config) -> None:
        """A dependency failing inside its maintenance window is not a root cause."""
        assert run(config, {}, mhv=MAINT_DOWN) == []

    def test_recovery_resolves(self, config: Config) -> None:
        """With no resolve hold, an open incident whose dependency is up again is resolved."""
        assert run(config, {"evss": EVSS_OPEN}) == [replace(RESOLVE_EVSS)]

    def test_unknown_after_restart_keeps_the_incident_open(self, config: Config) -> None:
        """A restarted daemon does not resolve before it has evidence."""
        assert run(config, {"evss": EVSS_OPEN}, evss=UNKNOWN) == []

    def test_changed_features_send_an_update(self, config: Config) -> None:
        """When more features are impacted, the trigger is re-sent with the new list."""
        incident = replace(EVSS_OPEN, features=("claims",))
        decisions = run(config, {"evss": incident}, evss=DOWN)
        assert decisions == [Decision(Action.UPDATE, "evss", key("evss"), EVSS_FEATURES)]

    def test_significant_duration_escalates_once(self, config: Config) -> None:
        """An incident open past significant_duration is escalated once, then left alone."""
        incident = replace(EVSS_OPEN, opened_at=0.0)
        first = run(config, {"evss": incident}, now=1800.0, evss=DOWN)
        assert first == [Decision(Action.ESCALATE, "evss", key("evss"), EVSS_FEATURES, escalated=True)]
        escalated = replace(incident, escalated=True)
        assert run(config, {"evss": escalated}, now=4000.0, evss=DOWN) == []

    def test_removed_dependency_is_resolved_with_a_note(self, config: Config) -> None:
        """An incident of a dependency no longer in the config (after a reload) is resolved, saying why."""
        incident = OpenIncident("gone", key("gone"), 0.0, ())
        [decision] = run(config, {"gone": incident})
        assert (decision.action, decision.note) == (Action.RESOLVE, "the dependency was removed from the config")


class TestMaintenanceOnAnOpenIncident:
    """Issue 9, item 3: a window opening on an open incident sends nothing while it holds."""

    def test_no_update_while_the_window_holds(self, config: Config) -> None:
        """The features move to `maintenance` (0 impacted) but no update goes out."""
        incident = replace(EVSS_OPEN, features=("claims",))
        assert run(config, {"evss": incident}, evss=MAINT_DOWN) == []

    def test_no_escalation_while_the_window_holds(self, config: Config) -> None:
        """Past significant_duration inside a window: no escalation to the Product Owner."""
        incident = replace(EVSS_OPEN, opened_at=0.0)
        assert run(config, {"evss": incident}, now=5000.0, evss=MAINT_DOWN) == []

    def test_ordinary_rules_once_the_window_ends(self, config: Config) -> None:
        """The same incident outside the window escalates as usual."""
        incident = replace(EVSS_OPEN, opened_at=0.0)
        [decision] = run(config, {"evss": incident}, now=5000.0, evss=DOWN)
        assert decision.action is Action.ESCALATE

    def test_recovery_inside_the_window_still_resolves(self, config: Config) -> None:
        """Resolve is the default, always: up again inside a window resolves."""
        up_in_window = DependencyHealth(DependencyState.MAINTENANCE, DependencyState.UP)
        assert run(config, {"evss": EVSS_OPEN}, evss=up_in_window) == [RESOLVE_EVSS]


class TestSilences:
    """SPEC 10.2: a silenced dependency sends no page; one still down when the silence ends pages."""

    def test_a_silenced_dependency_does_not_page(self, config: Config) -> None:
        """EVSS down under a silence: no trigger; the same states without it: one."""
        assert run(config, {}, silenced=frozenset({"evss"}), evss=DOWN) == []
        assert [d.action for d in run(config, {}, evss=DOWN)] == [Action.TRIGGER]

    def test_an_open_incident_under_a_silence_sends_no_update_or_escalation_but_resolves(self, config: Config) -> None:
        """Silenced during an incident: no update, no escalation; up again, it still resolves."""
        silenced = frozenset({"evss"})
        changed = replace(EVSS_OPEN, features=("claims",), opened_at=0.0)
        assert run(config, {"evss": changed}, now=5000.0, silenced=silenced, evss=DOWN) == []
        assert run(config, {"evss": EVSS_OPEN}, silenced=silenced) == [RESOLVE_EVSS]


class TestResolveHold:
    """SPEC 10.1 `resolve_hold`: resolve only after the dependency stayed up that long."""

    def test_up_again_starts_the_hold_without_an_event(self, config: Config) -> None:
        """The first up verdict records the start of the hold and sends nothing."""
        [decision] = run(config, {"evss": EVSS_OPEN}, now=200.0, hold=120.0)
        assert (decision.action, decision.up_since, decision.action.sends) == (Action.HOLD, 200.0, False)

    def test_still_up_inside_the_hold_waits(self, config: Config) -> None:
        """Before the hold has run out nothing happens."""
        held = replace(EVSS_OPEN, up_since=200.0)
        assert run(config, {"evss": held}, now=319.0, hold=120.0) == []

    def test_up_for_the_whole_hold_resolves(self, config: Config) -> None:
        """Once the hold has run out the incident is resolved."""
        held = replace(EVSS_OPEN, up_since=200.0)
        [decision] = run(config, {"evss": held}, now=320.0, hold=120.0)
        assert decision.action is Action.RESOLVE

    def test_down_inside_the_hold_continues_the_incident_as_flapping(self, config: Config) -> None:
        """A failure inside the hold is no new trigger: the same incident goes on, marked flapping."""
        held = replace(EVSS_OPEN, up_since=200.0)
        [decision] = run(config, {"evss": held}, now=250.0, hold=120.0, evss=DOWN)
        assert (decision.action, decision.flapping, decision.up_since) == (Action.FLAP, True, None)
        assert not decision.action.sends

    def test_flapping_is_carried_into_later_events(self, config: Config) -> None:
        """An update of a flapping incident keeps the flag, which the event shows."""
        flapping = replace(EVSS_OPEN, features=("claims",), flapping=True)
        [decision] = run(config, {"evss": flapping}, evss=DOWN)
        assert (decision.action, decision.flapping) == (Action.UPDATE, True)


class TestSimultaneousFailures:
    """Issue 9, item 8: a parent and a child failing at the same moment page once, for the parent."""

    def test_child_waits_for_an_ancestor_with_an_unconfirmed_failure(self, config: Config) -> None:
        """EVSS down while SSOe has a first failure: no page yet."""
        decisions = run(
            config, {}, now=105.0, since={"evss": 100.0}, confirm={"ssoe-oauth": 10.0},
            evss=DOWN, ssoe_oauth=PARENT_FAILING,
        )  # fmt: skip
        assert decisions == []

    def test_the_wait_is_bounded_by_the_ancestors_confirmation_time(self, config: Config) -> None:
        """Past the ancestor's confirmation time, the child pages on its own."""
        decisions = run(
            config, {}, now=110.0, since={"evss": 100.0}, confirm={"ssoe-oauth": 10.0},
            evss=DOWN, ssoe_oauth=PARENT_FAILING,
        )  # fmt: skip
        assert [d.action for d in decisions] == [Action.TRIGGER]

    def test_child_waits_for_an_ancestor_not_probed_since_its_failure_began(self, config: Config) -> None:
        """EVSS went down at 100 (its streak began at 98); SSOe's latest result is from 95: wait for it."""
        waiting = run(
            config, {}, now=101.0, since={"evss": 100.0}, confirm={"evss": 2.0, "ssoe-oauth": 10.0},
            last_result={"ssoe-oauth": 95.0}, evss=DOWN,
        )  # fmt: skip
        fresh = run(
            config, {}, now=101.0, since={"evss": 100.0}, confirm={"evss": 2.0, "ssoe-oauth": 10.0},
            last_result={"ssoe-oauth": 99.0}, evss=DOWN,
        )  # fmt: skip
        assert (waiting, [d.action for d in fresh]) == ([], [Action.TRIGGER])

    def test_a_child_down_from_before_its_parent_recovered_waits_for_fresh_evidence(self, config: Config) -> None:
        """SSOe came back at 200; EVSS's last failure (170) was SSOe's: no page until EVSS is re-checked."""
        kwargs = {"since": {"evss": 150.0, "ssoe-oauth": 200.0}, "recheck": {"evss": 40.0}}
        early = run(config, {}, now=210.0, last_failure={"evss": 170.0}, evss=DOWN, **kwargs)  # type: ignore[arg-type]
        fresh = run(config, {}, now=210.0, last_failure={"evss": 205.0}, evss=DOWN, **kwargs)  # type: ignore[arg-type]
        late = run(config, {}, now=241.0, last_failure={"evss": 170.0}, evss=DOWN, **kwargs)  # type: ignore[arg-type]
        assert early == []
        assert [d.action for d in fresh] == [Action.TRIGGER]  # a failure after the recovery counts
        assert [d.action for d in late] == [Action.TRIGGER]  # bounded by the re-check time

    def test_a_child_page_is_resolved_when_its_parent_goes_down(self, config: Config) -> None:
        """An open child incident is resolved with a note naming the parent's incident; the parent pages."""
        decisions = run(config, {"evss": EVSS_OPEN}, ssoe_oauth=DOWN, evss=CHILD_OF_SSOE)
        by_dep = {d.dependency: d for d in decisions}
        assert by_dep["ssoe-oauth"].action is Action.TRIGGER
        assert by_dep["evss"].action is Action.RESOLVE
        assert by_dep["evss"].note == f"superseded: ssoe-oauth is down and its incident {key('ssoe-oauth')} is the page"


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
        assert details["playbooks"] == ["Mobile Incident Response Playbook", "Postmortem Repository and Template"]
        assert details["va_severity"] == "sev-1"
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
        facts = IncidentFacts("lighthouse", ("immunizations",), ("immunizations",))
        assert severity(config, facts) == "error"

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

    def test_trigger_is_valid_against_the_published_schema(self, config: Config) -> None:
        """The same trigger passes our copy of the schema, and PagerDuty's published one when it is at hand."""
        event = {**trigger(config), "routing_key": "x" * 32}
        jsonschema.validate(event, SCHEMA)
        published = published_validator("events-v2.openapi.json", PUBLISHED_EVENTS_POINTER)
        if published is not None:  # the shared folder is beside the repository
            assert list(published.iter_errors(event)) == []


def window(i: int, description: str) -> MaintenanceWindow:
    start = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(hours=i)
    return MaintenanceWindow(f"PW{i:05d}", start, start + timedelta(hours=1), description, ("PZKWB6Y",))


class TestEventSize:
    """SPEC 10.5: an event never exceeds PagerDuty's 512 KB; long lists are cut and the cut is said."""

    def test_a_huge_list_of_upcoming_windows_is_cut_and_said(self, config: Config) -> None:
        """5,000 upcoming windows with long descriptions fit after the cut, which custom_details names."""
        windows = [window(i, "USER_MESSAGE:Planned work|" + "x" * 400) for i in range(5000)]
        deps = states(config, evss=DOWN)
        ctx = EventContext(config, features(config, deps), evidence(), 1000.0, windows)
        event = build_event(Decision(Action.TRIGGER, "evss", key("evss"), EVSS_FEATURES), ctx)
        details = event["payload"]["custom_details"]
        assert event_size(event) <= EVENT_BYTES_LIMIT - 1024
        shown = len(details["upcoming_maintenance"])
        assert 0 < shown < 5000
        assert details["truncated"] == f"upcoming_maintenance: {shown} of 5000 shown"
        jsonschema.validate({**event, "routing_key": "r" * 32}, SCHEMA)

    def test_a_small_event_is_not_cut(self, config: Config) -> None:
        """An ordinary trigger carries no `truncated` note."""
        assert "truncated" not in trigger(config)["payload"]["custom_details"]


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=3000)


@st.composite
def _trigger_inputs(draw: st.DrawFn) -> tuple[str, list[tuple[str, ProbeResult]], list[MaintenanceWindow], bool]:
    dep = draw(st.sampled_from(sorted(_BUNDLED.dependencies)))
    outcomes = [o for o in Outcome if o is not Outcome.OK]
    results = draw(
        st.lists(
            st.builds(
                lambda outcome, detail, security: ProbeResult.failure(
                    outcome, detail or "x", at=1000.0, security_relevant=security
                ),
                st.sampled_from(outcomes),
                _text,
                st.booleans(),
            ),
            max_size=8,
        )
    )
    evidence = [(f"probe-{i}", r) for i, r in enumerate(results)]
    windows = [window(i, d) for i, d in enumerate(draw(st.lists(_text, max_size=draw(st.sampled_from([3, 400])))))]
    return dep, evidence, windows, draw(st.booleans())


_BUNDLED = load_config(bundled_config_path(), environ={})
_EXAMPLES = int(os.environ.get("DEPMON_HYPOTHESIS_EXAMPLES", "60"))


class TestEveryEventFits:
    """Property: any trigger depmon can build validates against Events v2 and stays under 512 KB."""

    @settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_trigger_inputs())
    def test_any_trigger_is_schema_valid_and_small(
        self, inputs: tuple[str, list[tuple[str, ProbeResult]], list[MaintenanceWindow], bool]
    ) -> None:
        """Random evidence, windows and escalation: schema-valid, at most 512 KB, summary at most 1024."""
        dep, evidence_, windows, escalated = inputs
        deps = states(_BUNDLED, **{dep.replace("-", "_"): DOWN})
        feats = features(_BUNDLED, deps)
        impacted = tuple(f for f, h in feats.items() if h.impacted)
        ctx = EventContext(_BUNDLED, feats, evidence_, 1000.0, windows)
        event = build_event(Decision(Action.TRIGGER, dep, key(dep), impacted, escalated=escalated), ctx)
        full = {**event, "routing_key": "r" * 32}
        jsonschema.validate(full, SCHEMA)
        assert event_size(full) <= EVENT_BYTES_LIMIT
        assert len(event["payload"]["summary"]) <= 1024


def facts(
    dep: str = "caseflow",
    features: tuple[str, ...] = ("appeals",),
    down: tuple[str, ...] = (),
    security: bool = False,
    escalated: bool = False,
    earlier: int = 0,
) -> IncidentFacts:
    return IncidentFacts(dep, features, down, security, escalated, earlier)


def held(config: Config, f: IncidentFacts) -> dict[str, bool | None]:
    return {c.text: c.holds for c in escalation_criteria(config, f)}


PLAYBOOK = "Incident requires the use of a playbook"
USERBASE = "Occurs for a significant portion of the userbase"
PERSISTS = "Persists for a significant period of time"
SECURITY = "Involves the security of a system or a Veteran's data"
OUT_OF_TEAM = "Requires out-of-team coordination to fix"
OUT_OF_BAND = "Requires an out-of-band deployment"


class TestEscalationCriteria:
    """Issue 12: each seed criterion is a fact about this incident, shown where it holds and where it does not."""

    @pytest.mark.parametrize(
        ("case", "criterion", "holds"),
        [
            (facts(), PLAYBOOK, False),  # Caseflow's playbooks are the general ones
            (facts("vaos", ("appointments",)), PLAYBOOK, True),  # Appointments names the VAOS playbook
            (facts(security=True), PLAYBOOK, True),  # the Security Incident Procedure
            (facts(), USERBASE, False),  # Appeals: below 15%
            (facts("evss", ("claims",)), USERBASE, True),
            (facts(), PERSISTS, False),
            (facts(escalated=True), PERSISTS, True),
            (facts(), SECURITY, False),
            (facts(security=True), SECURITY, True),
            (facts(), OUT_OF_TEAM, False),  # a blip: the owning team need not be engaged
            (facts(escalated=True), OUT_OF_TEAM, True),  # it lasts: Caseflow's team must be engaged
            (facts(escalated=True), OUT_OF_BAND, None),  # never guessed
        ],
    )
    def test_table(self, config: Config, case: IncidentFacts, criterion: str, holds: bool | None) -> None:
        """The criterion holds exactly when the incident's facts say so."""
        assert held(config, case)[criterion] is holds

    def test_a_self_recovering_blip_of_a_small_feature_needs_no_postmortem(self, config: Config) -> None:
        """Appeals degraded by Caseflow for two minutes: the seed's 'use your best judgement' case."""
        assert not postmortem_required(config, facts(down=("appeals",)))


class TestVaSeverity:
    """SPEC 10.5: sev-1 high impact and high frequency, sev-2 one of them, sev-3 neither."""

    @pytest.mark.parametrize(
        ("case", "expected"),
        [
            (facts("evss", ("claims",), down=("claims",)), "sev-1"),  # down + frequent
            (facts("evss", ("claims",), security=True), "sev-1"),  # security + frequent
            (facts("evss", ("claims",)), "sev-2"),  # frequent, only degraded
            (facts(down=("appeals",)), "sev-2"),  # down, infrequent
            (facts(security=True), "sev-2"),  # security, infrequent
            (facts(), "sev-3"),  # degraded, infrequent
        ],
    )
    def test_every_combination(self, config: Config, case: IncidentFacts, expected: str) -> None:
        """Impact (a feature down, or security) x frequency (a feature used by 15% or more)."""
        assert va_severity(config, case) == expected


def _at(local: str) -> float:
    return datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("America/New_York")).timestamp()


class TestUrgency:
    """SPEC 10.5: full urgency in business hours; outside them only sev-1 stays critical."""

    @pytest.mark.parametrize(
        ("moment", "case", "expected"),
        [
            (_at("2026-11-30T10:00"), facts(down=("appeals",)), "error"),  # Monday morning, sev-2
            (_at("2026-11-30T21:00"), facts(down=("appeals",)), "warning"),  # Monday night, sev-2
            (_at("2026-11-28T10:00"), facts(down=("appeals",)), "warning"),  # Saturday
            (_at("2026-11-30T21:00"), facts("evss", ("claims",), down=("claims",)), "critical"),  # sev-1 at night
            (_at("2026-11-30T21:00"), facts("evss", ("claims",)), "warning"),  # sev-2 critical, at night
            # The DST change of 2026-03-08: 08:30 EDT is before 09:00, 09:30 EDT after it.
            (_at("2026-03-09T08:30"), facts(down=("appeals",)), "warning"),
            (_at("2026-03-09T09:30"), facts(down=("appeals",)), "error"),
            (_at("2026-11-02T08:59"), facts(down=("appeals",)), "warning"),  # the day after the change back
            (_at("2026-11-02T09:00"), facts(down=("appeals",)), "error"),
        ],
    )
    def test_table(self, config: Config, moment: float, case: IncidentFacts, expected: str) -> None:
        """The sent severity follows VA business hours in New York time, DST included."""
        assert paged_severity(config, case, moment) == expected


class TestBundledPages:
    """Issue 12 on the bundled config: what the demo's pages say."""

    def test_caseflow_pages_as_sev_2_without_a_postmortem(self, config: Config) -> None:
        """A Caseflow outage (Appeals down, low frequency) is sev-2, no postmortem, nobody notified."""
        details = trigger(config, "caseflow", ("appeals",))["payload"]["custom_details"]
        assert details["va_severity"] == "sev-2"
        assert details["escalation"]["postmortem_required"] is False
        assert details["escalation"]["notify"] == []
        assert "Postmortem Repository and Template" not in details["playbooks"]

    @pytest.mark.parametrize("dep", ["evss", "ssoe-oauth"])
    def test_evss_and_ssoe_page_as_sev_1_naming_the_product_owner(self, config: Config, dep: str) -> None:
        """EVSS (Claims) and SSOe (every feature) are sev-1 with a postmortem and the Product Owner named."""
        deps = states(config, **{dep.replace("-", "_"): DOWN})
        feats = features(config, deps)
        impacted = tuple(f for f, h in feats.items() if h.impacted)
        ctx = EventContext(config, feats, evidence(), 1000.0)
        details = build_event(Decision(Action.TRIGGER, dep, key(dep), impacted), ctx)["payload"]["custom_details"]
        assert details["va_severity"] == "sev-1"
        assert details["escalation"]["postmortem_required"] is True
        assert details["escalation"]["notify"][0].startswith("Product Owner (Ryan Thurlwell")

    def test_a_recurrence_attaches_the_plays(self, config: Config) -> None:
        """A dependency that paged before gets the Mobile Incident Response Plays link."""
        deps = states(config, caseflow=DOWN)
        ctx = EventContext(config, features(config, deps), evidence(), 1000.0, earlier_incidents=2)
        event = build_event(Decision(Action.TRIGGER, "caseflow", key("caseflow"), ("appeals",)), ctx)
        assert "Mobile Incident Response Plays" in event["payload"]["custom_details"]["playbooks"]
