"""`depmon demo` end to end: the scripted timeline against the real daemon, from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

DURATION = 30  # seconds of timeline; the run adds the daemon's start and stop


class TestDemoCommand:
    def test_the_scripted_timeline_produces_the_expected_pages_and_exits_0(self) -> None:
        """A short demo run ends with every page matching the script, each page's VA severity and postmortem as
        the script says (Caseflow sev-2 without one, EVSS and SSOe sev-1 naming the Product Owner), the EVSS page
        in Slack mentioning the Product Owner, who is requested as a responder on its PagerDuty incident with a
        note, MHV's window opened and closed with `depmon maintenance`, and exit 0."""
        env = {key: value for key, value in os.environ.items() if key != "DEPMON_CONFIG"}
        result = subprocess.run(
            [sys.executable, "-m", "monitor.commands.cli", "demo", "--duration", str(DURATION)],
            capture_output=True,
            text=True,
            timeout=DURATION + 70,
            env=env,
        )
        output = result.stdout
        assert result.returncode == 0, output + result.stderr
        assert "/status" in output
        assert "/metrics" in output
        assert "[step 8/8," in output
        timeline = output[: output.index("Summary:")]
        # The EVSS page's Slack message, then MHV's window opened and closed with the real CLI (issue 13).
        assert "Slack     posted to #va-mobile-app-alerts and #evss-prod: Down: EVSS" in timeline
        assert "Features impacted: Claims, Letters, Direct Deposit Benefits, Disability Rating" in timeline
        # Escalation that reaches people (issue 23): the Product Owner requested on EVSS's PagerDuty incident,
        # a note naming the criteria met, the Slack mention; each narrated before the check that saw it.
        assert "the Product Owner is PagerDuty user PSIMPO1 and Slack member U0SIMPO01" in output
        assert "Attention: <@U0SIMPO01>" in timeline
        request = re.search(
            r"RESPONDER REQUEST on (PINC\d+) \(depmon/demo/evss\): PSIMPO1 \(user_reference\), requested by PSIMREQ",
            timeline,
        )
        assert request is not None, timeline
        note = timeline.index(f"NOTE on {request.group(1)} (depmon/demo/evss)")
        assert "depmon: escalation criteria met: Occurs for a significant portion of the userbase." in timeline[note:]
        assert note < timeline.index("ok: the Product Owner requested as a responder on EVSS's PagerDuty incident")
        # The traffic signal (issue 24): VA Notify's health path passes while 40% of its calls fail.
        assert "40% of vets-api's calls to VANotify fail (simulated Datadog)" in timeline
        assert "VANotify page evidence: [VALUE] 0.4 > fail_above 0.25" in timeline
        assert "disagreement: traffic failing (traffic), probes passing (status)" in timeline
        assert '$ depmon maintenance open mhv --for 1h --message "Secure Messaging unavailable|MHV maintenance"' in (
            timeline
        )
        opened = re.search(r"maintenance window (\w+) opened on \w+ for 1h", timeline)
        assert opened is not None, timeline
        assert "depmon's feature graph puts in maintenance: Secure Messaging" in timeline
        assert "the app shows a downtime banner on: secure_messaging, rx_refill" in timeline
        assert f"$ depmon maintenance close {opened.group(1)}" in timeline
        assert f"maintenance window {opened.group(1)} ended" in timeline
        summary = output[output.index("Summary:") :]
        for line in (
            "depmon/demo/evss        1 / 1     1 / 1     ok",
            "depmon/demo/caseflow    1 / 1     1 / 1     ok",
            "depmon/demo/ssoe-oauth  1 / 1     1 / 1     ok",
            "depmon/demo/mhv         0 / 0     0 / 0     ok",
            "depmon/demo/va-profile  0 / 0     0 / 0     ok",
            "depmon/demo/vaos        0 / 0     0 / 0     ok",
            "depmon/demo/vanotify    1 / 1     1 / 1     ok",
        ):
            assert line in summary
        escalation = summary[summary.index("Pages at their trigger:") : summary.index("Checks")]
        for line in (
            "depmon/demo/evss        sev-1     required      Product Owner (Ryan Thurlwell, DSVA Slack)",
            "depmon/demo/caseflow    sev-2     not required  -",
            "depmon/demo/ssoe-oauth  sev-1     required      Product Owner (Ryan Thurlwell, DSVA Slack)",
        ):
            assert line in escalation
        for check in (
            "ok    EVSS page: sev-1, postmortem required, the Product Owner named",
            "ok    Caseflow page: sev-2, no postmortem required",
            "ok    SSOe OAuth page: sev-1, postmortem required, the Product Owner named",
            "ok    EVSS page posted to Slack (#va-mobile-app-alerts, #evss-prod), naming its features",
            "ok    EVSS page reached the Product Owner: one responder request (PSIMPO1), one note, the Slack mention "
            "<@U0SIMPO01>",
            "ok    MHV window opened with `depmon maintenance open`, honoured, ended with `close`",
        ):
            assert check in summary
        assert "FAIL" not in summary
        assert "MISMATCH" not in summary
        assert "Result: PASS" in summary
        assert "Traceback" not in output + result.stderr
