"""`depmon postmortem`: the pure draft renderer, the state-file reader and the CLI command."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import monitor.commands.cli
from monitor.commands.postmortem import print_postmortem, render_postmortem
from monitor.config import Config
from monitor.store import PAGERDUTY_REST, SQLiteStore
from tests.helpers import bundled_config

pytestmark = pytest.mark.unit

EVSS_FEATURES = ["claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"]
FIRST_OPENED = datetime(2025, 3, 4, 14, 5, 0, tzinfo=UTC).timestamp()
SECOND_OPENED = datetime(2025, 3, 11, 9, 0, 0, tzinfo=UTC).timestamp()
NOW = datetime(2025, 3, 12, 0, 0, 0, tzinfo=UTC).timestamp()
TEMPLATE_HEADINGS = [
    "## What happened",
    "## Background",
    "## Detection",
    "## Impact",
    "## Root causes",
    "## Resolution",
    "## Documentation links",
    "## Action items",
    "## Lessons learned",
    "## Timeline",
]
PLAYS_ADVICE = "add the incident and the steps to resolve it as a Mobile Incident Response Play"
PLAYS_URL = "Mobile%20Plays%20and%20Postmortems.md"


@pytest.fixture(scope="module")
def config() -> Config:
    return bundled_config()


def _entry(
    action: str, features: list[str], state: str, evidence: list[dict[str, Any]], security: bool = False
) -> dict[str, Any]:
    return {
        "action": action,
        "features": features,
        "state": state,
        "evidence": evidence,
        "security_relevant": security,
        "features_down": features if state == "down" else [],
    }


def _record(
    store: SQLiteStore,
    opened: float,
    *,
    escalate: bool,
    resolve: bool,
    outcome: str = "http_status",
    security: bool = False,
) -> int:
    """One EVSS incident written the way the pager writes it: trigger, then escalate, then resolve."""
    detail = "[STATUS] (503) == 200" if outcome == "http_status" else "certificate has expired"
    failure = {"probe": "base", "outcome": outcome, "detail": detail, "at": opened - 4}
    incident_id = store.open_incident(
        "evss",
        "depmon/production/evss",
        opened,
        features=EVSS_FEATURES,
        summary="EVSS down: 4 app features impacted (Claims, Letters, Direct Deposit Benefits, "
        "Disability Rating) [production]",
        severity="critical",
    )
    store.add_timeline(incident_id, opened, "trigger", _entry("trigger", EVSS_FEATURES, "down", [failure], security))
    if escalate:
        store.update_incident(incident_id, features=EVSS_FEATURES, escalated=True)
        store.add_timeline(incident_id, opened + 1800, "escalate", _entry("escalate", EVSS_FEATURES, "down", [failure]))
    if resolve:
        store.resolve_incident(incident_id, opened + 2700)
        store.add_timeline(incident_id, opened + 2700, "resolve", _entry("resolve", EVSS_FEATURES, "up", []))
    return incident_id


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state file with two EVSS incidents: the first short and resolved, the second escalated and resolved."""
    path = tmp_path / "state" / "depmon.sqlite3"
    with SQLiteStore(path, environment="production") as store:
        _record(store, FIRST_OPENED, escalate=False, resolve=True)
        _record(store, SECOND_OPENED, escalate=True, resolve=True)
    return path


def _draft_of_one(config: Config, tmp_path: Path, opened: float, *, now: float = NOW, **record: Any) -> str:
    """The draft, at `now`, of the one EVSS incident `_record` writes (with `record`) to a fresh state file."""
    with SQLiteStore(tmp_path / "s.sqlite3", environment="production") as store:
        _record(store, opened, **record)
        incident = store.incidents_of("evss")[0]
        timeline = store.timeline(incident.id)
    return render_postmortem(config, "evss", incident, timeline, 0, now)


def _render(config: Config, path: Path, number: int) -> str:
    with SQLiteStore(path, environment="production") as store:
        incident = store.incidents_of("evss")[number - 1]
        timeline = store.timeline(incident.id)
    return render_postmortem(config, "evss", incident, timeline, number - 1, NOW)


def _section(draft: str, heading: str) -> str:
    """The text of one `## ` section, up to the next one."""
    start = draft.index(f"## {heading}\n")
    end = draft.find("\n## ", start + 1)
    return draft[start : end if end != -1 else None]


class TestRenderPostmortem:
    """render_postmortem: the VA template fields filled from an incident and its timeline."""

    def test_template_headings_in_order(self, config: Config, state: Path) -> None:
        """Every heading of the VA template is present, in the template's order."""
        draft = _render(config, state, 2)
        positions = [draft.index(f"{heading}\n") for heading in TEMPLATE_HEADINGS]
        assert positions == sorted(positions)
        assert draft.index("## Timeline\n") < draft.index("## Escalation\n") < draft.index("## Recurrence\n")

    def test_header_fields(self, config: Config, state: Path) -> None:
        """Date is the UTC opening date, Authors the on-call placeholder and Status Draft."""
        draft = _render(config, state, 2)
        assert "- **Date:** 2025-03-11 (UTC)" in draft
        assert "- **Authors:** TBD (on-call)" in draft
        assert "- **Status:** Draft" in draft

    def test_what_happened_and_resolution_times(self, config: Config, state: Path) -> None:
        """The summary, opening and resolution times and the duration are stated."""
        draft = _render(config, state, 2)
        happened = _section(draft, "What happened")
        assert "EVSS down: 4 app features impacted" in happened
        assert "2025-03-11 09:00:00 UTC" in happened
        assert "resolved it at 2025-03-11 09:45:00 UTC, after 45m" in happened
        assert "Resolved at 2025-03-11 09:45:00 UTC" in _section(draft, "Resolution")

    def test_open_incident_says_still_open(self, config: Config, tmp_path: Path) -> None:
        """An incident not yet resolved is reported open for the time until now."""
        draft = _draft_of_one(config, tmp_path, SECOND_OPENED, escalate=False, resolve=False, now=SECOND_OPENED + 3900)
        assert "still open (1h 5m as of 2025-03-11 10:05:00 UTC)" in draft
        assert "Still open at 2025-03-11 10:05:00 UTC" in _section(draft, "Resolution")

    def test_detection_names_probe_and_first_evidence(self, config: Config, state: Path) -> None:
        """Detection names the depmon probe and the time and detail of the first failing result."""
        detection = _section(_render(config, state, 2), "Detection")
        assert "`evss/base`" in detection
        assert "2025-03-11 08:59:56 UTC: outcome `http_status` (`[STATUS] (503) == 200`)" in detection

    def test_impact_lists_features_with_userbase_estimate(self, config: Config, state: Path) -> None:
        """Impact lists each feature with its share of monthly users, and the severity."""
        impact = _section(_render(config, state, 2), "Impact")
        assert "Severity: **critical**" in impact
        assert "about 30% of monthly users use Claims" in impact
        assert "about 20% of monthly users use Letters" in impact
        assert "about 10% of monthly users use Direct Deposit Benefits" in impact
        assert "about 25% of monthly users use Disability Rating" in impact

    def test_root_causes_and_links(self, config: Config, state: Path) -> None:
        """Root causes cite the evidence and the owning channel; links hold playbook, docs and PagerDuty."""
        draft = _render(config, state, 2)
        causes = _section(draft, "Root causes")
        assert "`evss/base`: outcome `http_status`" in causes
        assert "to be confirmed with #evss-prod" in causes
        links = _section(draft, "Documentation links")
        assert "[Mobile Incident Response Playbook](" in links
        assert "EVSS.1887240213.html" in links
        assert "https://dsva.pagerduty.com/service-directory/PZKWB6Y" in links

    def test_timeline_table_in_order(self, config: Config, state: Path) -> None:
        """The timeline table has one row per entry, in time order, with UTC times."""
        rows = [line for line in _section(_render(config, state, 2), "Timeline").splitlines() if line.startswith("| 2")]
        assert [row.split(" | ")[0] for row in rows] == [
            "| 2025-03-11 09:00:00",
            "| 2025-03-11 09:30:00",
            "| 2025-03-11 09:45:00",
        ]
        assert [row.split(" | ")[1].split(":")[0] for row in rows] == ["Triggered", "Escalated", "Resolved"]
        assert "features impacted: Claims, Letters" in rows[0]

    def test_recurrence_of_second_incident_advises_a_play(self, config: Config, state: Path) -> None:
        """The second incident counts one earlier incident and gives the seed's Plays advice with its link."""
        recurrence = _section(_render(config, state, 2), "Recurrence")
        assert "Recurrence: 1 earlier incident of EVSS" in recurrence
        assert PLAYS_ADVICE in recurrence
        assert PLAYS_URL in recurrence

    def test_recurrence_of_first_incident_has_no_advice(self, config: Config, state: Path) -> None:
        """The first incident counts no earlier incident and gives no Plays advice."""
        draft = _render(config, state, 1)
        assert "Recurrence: 0 earlier incidents of EVSS" in draft
        assert PLAYS_ADVICE not in draft
        assert PLAYS_URL not in draft

    def test_escalation_criteria_held(self, config: Config, state: Path) -> None:
        """The escalated incident holds userbase, duration and coordination; not a specific playbook, not security."""
        escalation = _section(_render(config, state, 2), "Escalation")
        assert "| Incident requires the use of a playbook | no |" in escalation
        assert "| Occurs for a significant portion of the userbase | yes |" in escalation
        assert "| Persists for a significant period of time | yes |" in escalation
        assert "| Involves the security of a system or a Veteran's data | no |" in escalation
        assert "| Requires out-of-team coordination to fix | yes |" in escalation
        assert "| Requires an out-of-band deployment | TBD (responder decides) |" in escalation
        assert "Notify: Product Owner (Ryan Thurlwell, DSVA Slack)." in escalation

    def test_short_incident_did_not_persist(self, config: Config, state: Path) -> None:
        """An incident never escalated does not hold the significant-period criterion."""
        escalation = _section(_render(config, state, 1), "Escalation")
        assert "| Persists for a significant period of time | no |" in escalation

    def test_a_security_relevant_failure_is_a_security_criterion(self, config: Config, tmp_path: Path) -> None:
        """The page's security fact holds the criterion, links the Security Incident Procedure and notifies the ISO."""
        draft = _draft_of_one(
            config, tmp_path, FIRST_OPENED, escalate=False, resolve=True, outcome="tls", security=True
        )
        assert "| Involves the security of a system or a Veteran's data | yes |" in draft
        assert "[Security Incident Procedure](" in _section(draft, "Documentation links")
        assert "Information System Owner (ISO) (Chris Johnston, DSVA Slack)" in _section(draft, "Escalation")

    def test_a_tls_handshake_failure_without_the_security_flag_is_not_security(
        self, config: Config, tmp_path: Path
    ) -> None:
        """A `tls` outcome the probe did not flag (wrong version number) names no ISO: one rule for page and draft."""
        draft = _draft_of_one(
            config, tmp_path, FIRST_OPENED, escalate=False, resolve=True, outcome="tls", security=False
        )
        assert "| Involves the security of a system or a Veteran's data | no |" in draft
        assert "Information System Owner" not in draft


class TestPrintPostmortem:
    """print_postmortem: choosing the incident from the state file, and the exit status."""

    def test_latest_incident_by_default(self, config: Config, state: Path) -> None:
        """Without --incident the latest incident is printed and the status is 0."""
        out = io.StringIO()
        assert print_postmortem(config, "evss", None, str(state), out) == 0
        assert "- **Date:** 2025-03-11 (UTC)" in out.getvalue()
        assert "Recurrence: 1 earlier incident" in out.getvalue()

    def test_incident_number_selects(self, config: Config, state: Path) -> None:
        """--incident 1 prints the first incident of the dependency."""
        out = io.StringIO()
        assert print_postmortem(config, "evss", 1, str(state), out) == 0
        assert "- **Date:** 2025-03-04 (UTC)" in out.getvalue()
        assert "Recurrence: 0 earlier incidents" in out.getvalue()

    @pytest.mark.parametrize("number", [0, 3, -1])
    def test_incident_number_out_of_range(self, config: Config, state: Path, number: int) -> None:
        """An --incident outside 1..count is reported and the status is 1."""
        out, err = io.StringIO(), io.StringIO()
        assert print_postmortem(config, "evss", number, str(state), out, err=err) == 1
        assert out.getvalue() == ""
        assert f"--incident {number}: out of range (evss has 2 recorded incidents, 1 to 2)" in err.getvalue()

    def test_missing_state_file_is_not_created(self, config: Config, tmp_path: Path) -> None:
        """A missing state file is reported, the status is 1 and no file is created."""
        path = tmp_path / "absent" / "depmon.sqlite3"
        err = io.StringIO()
        assert print_postmortem(config, "evss", None, str(path), io.StringIO(), err=err) == 1
        assert "no state file" in err.getvalue()
        assert not path.exists()
        assert not path.parent.exists()

    def test_no_incident_of_dependency(self, config: Config, state: Path) -> None:
        """A dependency without recorded incidents is reported and the status is 1."""
        err = io.StringIO()
        assert print_postmortem(config, "vaos", None, str(state), io.StringIO(), err=err) == 1
        assert "no incident of vaos is recorded" in err.getvalue()

    def test_unknown_dependency_names_known_ids(self, config: Config, state: Path) -> None:
        """An unknown dependency id is reported with the known ids and the status is 1."""
        err = io.StringIO()
        assert print_postmortem(config, "nope", None, str(state), io.StringIO(), err=err) == 1
        assert "unknown dependency: nope (known: ssoe-oauth, idme" in err.getvalue()
        assert "evss" in err.getvalue()

    def test_not_a_state_file(self, config: Config, tmp_path: Path) -> None:
        """A file that is not a depmon state file is reported and the status is 1."""
        path = tmp_path / "junk.sqlite3"
        path.write_bytes(b"not sqlite at all, just text" * 10)
        err = io.StringIO()
        assert print_postmortem(config, "evss", None, str(path), io.StringIO(), err=err) == 1
        assert "cannot read the state file" in err.getvalue()


def _queue_write(store: SQLiteStore, at: float, step: str, target: str) -> int:
    """One escalation row in the outbox, as the pager queues it (its body: `RestWrite.row()` and the incident)."""
    body = {"incident_key": "depmon/production/evss", "step": step, "target": target, "method": "POST"}
    return store.enqueue("depmon/production/evss", "trigger", body, at, destination=PAGERDUTY_REST)


@pytest.fixture
def escalated_state(tmp_path: Path) -> Path:
    """Two EVSS incidents: the first with one accepted write, the second with one write of each outcome."""
    path = tmp_path / "state" / "depmon.sqlite3"
    owner, policy = "Product Owner (PPO0001)", "EVSS team (P0EVSS1)"
    persists = "Persists for a significant period of time"
    with SQLiteStore(path, environment="production") as store:
        first = _record(store, FIRST_OPENED, escalate=False, resolve=True)
        store.add_timeline(first, FIRST_OPENED, "trigger", {"escalation": [{"step": "responders", "target": owner}]})
        store.mark_accepted(_queue_write(store, FIRST_OPENED, "responders", owner), FIRST_OPENED + 2)

        second = _record(store, SECOND_OPENED, escalate=True, resolve=False)
        queued = [("responders", owner), ("note", "Occurs for a significant portion of the userbase")]
        store.add_timeline(
            second,
            SECOND_OPENED,
            "trigger",
            {"escalation": [dict(zip(("step", "target"), w, strict=True)) for w in queued]},
        )
        accepted, not_found = (_queue_write(store, SECOND_OPENED, *write) for write in queued)
        store.mark_accepted(accepted, SECOND_OPENED + 3)
        store.mark_dropped(not_found, "not_found: PagerDuty has no open incident depmon/production/evss after 120 s")
        later = [("responders", policy), ("note", persists), ("urgency", "high")]
        at = SECOND_OPENED + 1800
        store.add_timeline(
            second, at, "escalate", {"escalation": [dict(zip(("step", "target"), w, strict=True)) for w in later]}
        )
        dropped, _, _ = (_queue_write(store, at, *write) for write in later)
        store.mark_dropped(dropped, "PagerDuty REST API answered HTTP 400: Invalid Input Provided")
        store.cancel_rest_writes("depmon/production/evss", "the incident resolved")
        store.resolve_incident(second, SECOND_OPENED + 2700)
    return path


class TestEscalationWrites:
    """The postmortem lists the incident's escalation writes with each one's outcome (SPEC 11.2)."""

    def test_each_write_with_when_it_was_queued_and_how_it_ended(self, config: Config, escalated_state: Path) -> None:
        """Who was requested, the notes and the urgency, each with its outbox outcome: accepted, not_found,
        dropped, cancelled; only this incident's."""
        out = io.StringIO()
        assert print_postmortem(config, "evss", None, str(escalated_state), out) == 0
        section = _section(out.getvalue(), "Escalation")
        table = section[section.index("### Writes to PagerDuty's incident") :]
        rows = [line for line in table.splitlines() if line.startswith("| 2025")]
        assert rows == [
            "| 2025-03-11 09:00:00 | Responder request | Product Owner (PPO0001) | accepted at 2025-03-11 09:00:03 |",
            "| 2025-03-11 09:00:00 | Note | Occurs for a significant portion of the userbase | not_found "
            "(`not_found: PagerDuty has no open incident depmon/production/evss after 120 s`) |",
            "| 2025-03-11 09:30:00 | Responder request | EVSS team (P0EVSS1) | dropped "
            "(`PagerDuty REST API answered HTTP 400: Invalid Input Provided`) |",
            "| 2025-03-11 09:30:00 | Note | Persists for a significant period of time | cancelled "
            "(`the incident resolved`) |",
            "| 2025-03-11 09:30:00 | Urgency | high | cancelled (`the incident resolved`) |",
        ]

    def test_the_timeline_says_what_each_decision_queued(self, config: Config, escalated_state: Path) -> None:
        """The timeline row of the escalation names the writes it queued."""
        out = io.StringIO()
        assert print_postmortem(config, "evss", None, str(escalated_state), out) == 0
        timeline = _section(out.getvalue(), "Timeline")
        assert (
            "escalation queued: Responder request: EVSS team (P0EVSS1); Note: Persists for a significant period "
            "of time; Urgency: high"
        ) in timeline

    def test_an_incident_without_writes_says_so(self, config: Config, state: Path) -> None:
        """No escalation row: one sentence instead of the table."""
        out = io.StringIO()
        assert print_postmortem(config, "evss", None, str(state), out) == 0
        section = _section(out.getvalue(), "Escalation")
        assert "depmon queued no responder request, note or urgency change for this incident." in section
        assert "| Queued (UTC) |" not in section


class TestPostmortemCommand:
    """`depmon postmortem` through the real CLI with the bundled config."""

    def test_prints_latest_draft(self, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The command prints the latest incident's draft and exits 0."""
        assert monitor.commands.cli.main(["postmortem", "evss", "--state", str(state)], environ={}) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("# Postmortem (draft): EVSS down")
        assert "Recurrence: 1 earlier incident of EVSS" in printed

    def test_incident_option(self, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--incident 1 prints the first incident."""
        assert (
            monitor.commands.cli.main(["postmortem", "evss", "--incident", "1", "--state", str(state)], environ={}) == 0
        )
        assert "- **Date:** 2025-03-04 (UTC)" in capsys.readouterr().out

    def test_missing_state_exits_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing state file exits 1 with a message on stderr and creates nothing."""
        path = tmp_path / "none.sqlite3"
        assert monitor.commands.cli.main(["postmortem", "evss", "--state", str(path)], environ={}) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "no state file" in captured.err
        assert not path.exists()

    def test_unknown_dependency_exits_1(self, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown dependency exits 1 naming the known ids."""
        assert monitor.commands.cli.main(["postmortem", "nope", "--state", str(state)], environ={}) == 1
        assert "known: ssoe-oauth" in capsys.readouterr().err


def _draft_with_detail(config: Config, tmp_path: Path, detail: str) -> str:
    """The draft of one EVSS incident whose only evidence has this detail."""
    path = tmp_path / "depmon.sqlite3"
    with SQLiteStore(path, environment="production") as store:
        failure = {"probe": "base", "outcome": "condition", "detail": detail, "at": FIRST_OPENED}
        incident_id = store.open_incident("evss", "depmon/production/evss", FIRST_OPENED, features=EVSS_FEATURES)
        store.add_timeline(incident_id, FIRST_OPENED, "trigger", _entry("trigger", EVSS_FEATURES, "down", [failure]))
    return _render(config, path, 1)


HOSTILE = "[click](https://evil.example) <img src=x onerror=alert(1)> ![i](https://evil.example/i.png) `x` | **b**"


class TestUpstreamText:
    """Text from upstreams (probe details, health `output`) cannot plant Markdown or HTML in the draft."""

    @pytest.fixture
    def hostile_draft(self, config: Config, tmp_path: Path) -> str:
        """A draft whose evidence detail is the hostile string, for a failure with a newline in it too."""
        return _draft_with_detail(config, tmp_path, HOSTILE + "\nline two")

    def test_detail_is_one_code_span_wherever_it_appears(self, hostile_draft: str) -> None:
        """Each occurrence of the detail sits in a double-backtick code span, on one line."""
        span = f"``{HOSTILE} line two``"
        assert hostile_draft.count("evil.example/i.png") == hostile_draft.count(span) + hostile_draft.count(
            span.replace("|", "\\|")
        )
        assert hostile_draft.count(span) >= 2  # Detection and Root causes
        assert span.replace("|", "\\|") in _section(hostile_draft, "Timeline")  # the table cell escapes the pipe

    def test_github_renders_no_link_image_or_html(self, hostile_draft: str) -> None:
        """GitHub's Markdown (cmark-gfm, raw HTML allowed) renders the detail as code: no link, image or tag."""
        cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm renders GitHub Markdown (pip install cmarkgfm)")
        from cmarkgfm.cmark import Options

        html = cmarkgfm.github_flavored_markdown_to_html(hostile_draft, options=Options.CMARK_OPT_UNSAFE)
        assert 'href="https://evil.example' not in html
        assert "<img" not in html
        assert "<strong>b</strong>" not in html
        assert "<code>[click](https://evil.example) &lt;img src=x onerror=alert(1)&gt;" in html
        assert html.count("| **b** line two</code>") >= 3  # the table cell's pipe is literal inside the code

    def test_backticks_in_the_detail_cannot_close_the_span(self, config: Config, tmp_path: Path) -> None:
        """A detail with a run of backticks gets a longer fence, and one starting with a backtick is padded."""
        draft = _draft_with_detail(config, tmp_path, "``[x](https://evil.example)")
        assert "(``` ``[x](https://evil.example) ```)" in draft
