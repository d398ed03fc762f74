"""Escalation that reaches people (SPEC 11.2): which REST writes an incident needs, pure."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import Config, bundled_config_path, load_config
from monitor.paging.escalation import (
    escalation_writes,
    slack_mentions,
    trigger_rest_writes,
    written_keys,
)
from monitor.paging.event_content import IncidentFacts
from monitor.paging.slack import slack_message

pytestmark = pytest.mark.unit

SCHEMA = json.loads((Path(__file__).parents[2] / "monitor" / "schemas" / "rest-incidents.json").read_text())
EVSS_FEATURES = ("claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating")
PEOPLE = {
    "PAGERDUTY_API_TOKEN": "token",
    "PAGERDUTY_FROM_EMAIL": "oncall@example.gov",
    "PAGERDUTY_REQUESTER_ID": "PREQ001",
    "PD_USER_PRODUCT_OWNER": "PPO0001",
    "PD_USER_ENGINEERING_LEAD": "PENG001",  # not among the notified: never requested
    "SLACK_USER_PRODUCT_OWNER": "U0PRODOWN",
    "PD_POLICY_EVSS": "P0EVSS1",
}
_BODY_DEFS = {"responders": "ResponderRequest", "note": "Note", "urgency": "IncidentUpdate"}


def _config(**environ: str) -> Config:
    return load_config(bundled_config_path(), environ=environ)


@pytest.fixture(scope="module")
def config() -> Config:
    return _config(**PEOPLE)


def _evss(escalated: bool = False, security: bool = False) -> IncidentFacts:
    return IncidentFacts("evss", EVSS_FEATURES, EVSS_FEATURES, security, escalated)


def _valid(step: str, body: dict[str, object]) -> bool:
    schema = {**SCHEMA, "$ref": f"#/$defs/{_BODY_DEFS[step]}"}
    return jsonschema.Draft202012Validator(schema).is_valid(body)


class TestEscalationWrites:
    def test_a_criterion_at_the_trigger_gives_one_request_per_contact_with_a_user_and_one_note(
        self, config: Config
    ) -> None:
        """EVSS's page meets a criterion: the Product Owner (who has a pagerduty_user) is requested once, one note."""
        writes = escalation_writes(config, _evss())
        assert [w.step for w in writes] == ["responders", "note"]
        targets = writes[0].body["responder_request_targets"]
        assert targets == [{"responder_request_target": {"id": "PPO0001", "type": "user_reference"}}]
        assert writes[0].body["requester_id"] == "PREQ001"
        assert writes[0].path == "/incidents/{incident_id}/responder_requests"
        assert "Occurs for a significant portion of the userbase" in writes[1].body["note"]["content"]

    def test_every_body_is_valid_for_the_schema_in_the_wrapped_form(self, config: Config) -> None:
        """Each body validates against depmon's trimmed schema; the published bare {type, id} target does not."""
        writes = escalation_writes(config, _evss(escalated=True))
        assert {w.step for w in writes} == {"responders", "note", "urgency"}
        for write in writes:
            assert _valid(write.step, write.body), write
        bare = {
            "requester_id": "PREQ001",
            "message": "m",
            "responder_request_targets": [{"id": "P1", "type": "user_reference"}],
        }
        assert not _valid("responders", bare)

    def test_no_criterion_no_write(self, config: Config) -> None:
        """Caseflow (Appeals, low frequency, degraded only) meets no criterion: nothing is written."""
        facts = IncidentFacts("caseflow", ("appeals",), ())
        assert escalation_writes(config, facts) == []

    def test_writes_already_queued_are_not_made_again(self, config: Config) -> None:
        """The keys the queued rows cover (read back after a restart) make the same facts need nothing."""
        first = escalation_writes(config, _evss())
        done = written_keys([w.row() for w in first])
        assert escalation_writes(config, _evss(), done) == []

    def test_criteria_that_become_true_later_give_the_policy_a_note_and_the_urgency(self, config: Config) -> None:
        """Past significant_duration: the owning policy, a new note and urgency high; the Product Owner
        is not requested twice."""
        done = written_keys([w.row() for w in escalation_writes(config, _evss())])
        later = escalation_writes(config, _evss(escalated=True), done)
        assert [w.step for w in later] == ["responders", "note", "urgency"]
        assert later[0].body["responder_request_targets"] == [
            {"responder_request_target": {"id": "P0EVSS1", "type": "escalation_policy_reference"}}
        ]
        note = later[1].body["note"]["content"]
        assert "New: Persists for a significant period of time; Requires out-of-team coordination to fix." in note
        assert later[2].method == "PUT"
        assert later[2].body == {"incident": {"type": "incident_reference", "urgency": "high"}}

    def test_without_requester_id_no_responder_requests(self) -> None:
        """No requester_id: the note and the urgency still go, no responder request."""
        config = _config(**{**PEOPLE, "PAGERDUTY_REQUESTER_ID": ""})
        assert [w.step for w in escalation_writes(config, _evss(escalated=True))] == ["note", "urgency"]

    @pytest.mark.parametrize("missing", ["PAGERDUTY_FROM_EMAIL", "PAGERDUTY_API_TOKEN"])
    def test_without_from_email_or_api_token_no_rest_write(self, missing: str) -> None:
        """No From header or no token: PagerDuty would refuse every write, so none is made."""
        config = _config(**{**PEOPLE, missing: ""})
        assert escalation_writes(config, _evss(escalated=True)) == []

    def test_security_notifies_the_iso_too(self) -> None:
        """A security-relevant failure requests the security contacts that have a pagerduty_user."""
        config = _config(**{**PEOPLE, "PD_USER_ISO": "PISO001"})
        writes = escalation_writes(config, _evss(security=True))
        ids = [
            w.body["responder_request_targets"][0]["responder_request_target"]["id"]
            for w in writes
            if w.step == "responders"
        ]
        assert ids == ["PPO0001", "PISO001"]

    def test_trigger_rest_writes_lists_method_path_and_body(self, config: Config) -> None:
        """What `depmon page --json` shows as `pagerduty_rest`."""
        listed = trigger_rest_writes(config, _evss())
        assert [(w["method"], w["path"]) for w in listed] == [
            ("POST", "/incidents/{incident_id}/responder_requests"),
            ("POST", "/incidents/{incident_id}/notes"),
        ]

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=6))
    def test_each_write_is_made_once_per_incident(self, steps: list[tuple[bool, bool]]) -> None:
        """Whatever the facts do over an incident's life, no key is ever written twice."""
        config = _config(**{**PEOPLE, "PD_USER_ISO": "PISO001"})
        done: set[str] = set()
        seen: list[str] = []
        escalated = False
        for escalate, security in steps:
            escalated = escalated or escalate  # escalation never goes back
            for write in escalation_writes(config, _evss(escalated, security), frozenset(done)):
                if write.step != "note":
                    seen.extend(write.covers)
                done.update(write.covers)
        assert len(seen) == len(set(seen))


class TestSlackMentions:
    def test_notified_contacts_with_a_slack_user_are_mentioned(self, config: Config) -> None:
        """`<@U...>` for each notified contact with a slack_user, in depmon's own markup."""
        assert slack_mentions(config, _evss()) == ["U0PRODOWN"]
        event = {
            "payload": {"summary": "s", "severity": "critical", "custom_details": {"escalation": {"notify": ["PO"]}}}
        }
        message = slack_message("trigger", "EVSS", event, ["U0PRODOWN"])
        assert "<@U0PRODOWN>" in json.dumps(message)

    def test_nobody_is_mentioned_without_a_criterion(self, config: Config) -> None:
        """No criterion, nobody notified, nobody mentioned."""
        assert slack_mentions(config, IncidentFacts("caseflow", ("appeals",), ())) == []
