"""What a Slack message says and where it goes (issue 13): pure, from the page's event and the config."""

from __future__ import annotations

import json
from typing import Any

from monitor.config import Config, bundled_config_path, load_config
from monitor.health import DependencyHealth, DependencyState
from monitor.impact import evaluate_features, needs_from_config
from monitor.incidents import Action, Decision, EventContext, build_event
from monitor.results import Outcome, ProbeResult
from monitor.slack import slack_channels, slack_message

ALERTS = "#va-mobile-app-alerts"


def bundled(webhooks: dict[str, str]) -> Config:
    config = load_config(bundled_config_path(), environ={})
    return config.model_copy(update={"slack": config.slack.model_validate({"webhooks": webhooks})})


def evss_trigger(config: Config) -> dict[str, Any]:
    states = {d: DependencyHealth(DependencyState.UP, DependencyState.UP) for d in config.dependencies}
    states["evss"] = DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, failing=True)
    features = evaluate_features(needs_from_config(config.features), states)
    impacted = tuple(f for f, h in features.items() if h.impacted)
    evidence = [("health", ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health <secret-ish>", at=1.0))]
    ctx = EventContext(config, features, evidence, 1000.0)
    return build_event(Decision(Action.TRIGGER, "evss", "depmon/production/evss", impacted), ctx)


class TestMessage:
    """What a Slack message says, and where it goes."""

    def test_a_trigger_carries_the_pages_facts_and_no_evidence(self) -> None:
        """Features, VA severity, postmortem, notify and playbook links; never the upstream's words."""
        config = bundled({})
        message = slack_message("trigger", "EVSS", evss_trigger(config))
        text = json.dumps(message)
        assert message["blocks"][0]["text"]["text"] == "Down: EVSS"
        assert "Claims" in text
        assert "sev-1" in text
        assert "*Postmortem required:* yes" in text
        assert "Mobile Incident Response Playbook" in text
        assert "HTTP 503" not in text  # evidence (upstream text) stays in PagerDuty
        assert message["text"].startswith("EVSS down: 4 app features impacted")

    def test_a_resolve_names_the_dependency(self) -> None:
        """A resolve has no payload: the message says the dependency is up again."""
        message = slack_message("resolve", "EVSS", {"event_action": "resolve", "dedup_key": "k"})
        assert message["text"] == "Resolved: EVSS is up again; its PagerDuty incident is resolved"

    def test_channels_are_the_ones_with_a_webhook(self) -> None:
        """Escalation channels and the owning team's channel, each only with a webhook; none without."""
        assert slack_channels(bundled({}), "evss") == []
        config = bundled({ALERTS: "https://hooks.slack.com/services/T/B/x", "#evss-prod": "https://hooks.slack.com/x"})
        assert slack_channels(config, "evss") == [ALERTS, "#evss-prod"]
        assert slack_channels(config, "caseflow") == [ALERTS]

    def test_a_webhook_url_is_a_secret(self) -> None:
        """The URL is redacted like every other secret of the config."""
        url = "https://hooks.slack.com/services/T000/B000/verysecrettoken"
        assert url in bundled({ALERTS: url}).secret_values()
