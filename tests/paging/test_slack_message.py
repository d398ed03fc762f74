"""What a Slack message says and where it goes (issue 13): pure, from the page's event and the config."""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import Config
from monitor.paging.decisions import Action, Decision
from monitor.paging.event_content import EventContext, build_event, build_self_event
from monitor.paging.slack import Mrkdwn, escape, link, mrkdwn, slack_channels, slack_message
from monitor.results import Outcome, ProbeResult
from monitor.state.health import DependencyHealth, DependencyState
from monitor.state.impact import evaluate_features, needs_from_config
from monitor.state.self_watch import ScheduleFigures, judge
from tests.helpers import bundled_config

pytestmark = pytest.mark.unit

ALERTS = "#va-mobile-app-alerts"


@functools.cache
def no_webhooks() -> Config:
    """The bundled config, loaded once for the property's many examples."""
    return bundled({})


def bundled(webhooks: dict[str, str]) -> Config:
    config = bundled_config()
    return config.model_copy(update={"slack": config.slack.model_validate({"webhooks": webhooks})})


def evss_trigger(config: Config, upstream: str = "<secret-ish>") -> dict[str, Any]:
    """EVSS's page; `upstream` is in every probe detail: a reason phrase, a certificate subject, a health output."""
    states = {d: DependencyHealth(DependencyState.UP, DependencyState.UP) for d in config.dependencies}
    states["evss"] = DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, failing=True)
    features = evaluate_features(needs_from_config(config.features), states)
    impacted = tuple(f for f, h in features.items() if h.impacted)
    evidence = [
        ("health", ProbeResult.failure(Outcome.HTTP_STATUS, f"HTTP 503 {upstream} from /health", at=1.0)),
        ("tls", ProbeResult.failure(Outcome.TLS, f"certificate of CN={upstream} has expired", at=1.0)),
        ("json", ProbeResult.failure(Outcome.HTTP_STATUS, f"health status 'fail': {upstream}", at=1.0)),
    ]
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


HOSTILE = "<!channel> <https://evil.example|re-login here> & <@U0EVIL> <!here>"
EXAMPLES = int(os.environ.get("DEPMON_HYPOTHESIS_EXAMPLES", "200"))
_ENTITY = re.compile(r"&(amp|lt|gt);")


def self_page(canary_detail: str) -> dict[str, Any]:
    """depmon's own page for a canary down with this failure detail, as the self watch words it."""
    verdict = judge(ScheduleFigures(1.0, 1.0, 0.0, warmed_up=True), 0.0, {"egress": canary_detail}, {}, 0)
    decision = Decision(Action.TRIGGER, "self", "depmon/production/self")
    return build_self_event(decision, "production", str(verdict.condition), verdict.reason)


def poisoned(value: Any, upstream: str) -> Any:
    """The event with `upstream` appended to every text in it but the links' addresses."""
    if isinstance(value, dict):
        return {k: v if k == "href" else poisoned(v, upstream) for k, v in value.items()}
    if isinstance(value, list):
        return [poisoned(item, upstream) for item in value]
    return value + upstream if isinstance(value, str) else value


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere in a message's JSON, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def outside_links(text: str, event: dict[str, Any]) -> str:
    """The text without the links depmon made from the config's addresses (its own markup)."""
    for item in event.get("links") or []:
        text = re.sub(rf"<{re.escape(escape(item['href']))}\|[^<>]*>", "", text)
    return text


def assert_no_live_upstream_markup(message: dict[str, Any], event: dict[str, Any]) -> None:
    """No `<`, `>` but depmon's own links, no bare `&`, no control or format character, in any field."""
    for text in strings(json.loads(json.dumps(message))):
        rest = outside_links(text, event)
        assert not re.search("[<>]", rest), text
        assert "&" not in _ENTITY.sub("", rest), text
        assert not [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")], text


class TestUpstreamText:
    """No upstream text in any Slack field, and no text of any origin becomes markup (SPEC 11.4)."""

    def test_no_field_carries_a_probes_words(self) -> None:
        """A canary's health output, a reason phrase, a certificate subject holding markup: in no field of any post."""
        pages = [
            (self_page(f"HTTP 503 from /health; health status 'fail': {HOSTILE}"), "depmon"),
            (evss_trigger(bundled({}), HOSTILE), "EVSS"),
        ]
        for event, name in pages:
            assert HOSTILE in json.dumps(event)  # PagerDuty keeps the evidence
            message = slack_message("trigger", name, event)
            for text in strings(message):
                assert not re.search(r"evil\.example|<!|<http://|U0EVIL|re-login", text), text
            assert_no_live_upstream_markup(message, event)

    def test_the_self_pages_post_says_depmons_condition(self) -> None:
        """depmon cannot see out: the fallback text says so in depmon's words, not the canary's failure."""
        message = slack_message("trigger", "depmon", self_page(f"HTTP 503 from /health: {HOSTILE}"))
        assert message["text"] == (
            "Down: depmon cannot see out: its canaries or its own network fail, not the dependencies [production]"
        )
        assert message["blocks"][0]["text"]["text"] == "Down: depmon"

    def test_every_text_is_escaped_whatever_field_it_lands_in(self) -> None:
        """Markup in any of the event's texts, the summary and the name included, is escaped in every field."""
        event = poisoned(evss_trigger(bundled({})), HOSTILE)
        message = slack_message("escalate", "EVSS" + HOSTILE, event)
        assert_no_live_upstream_markup(message, event)
        assert message["text"].endswith(
            "&lt;!channel&gt; &lt;https://evil.example|re-login here&gt; &amp; &lt;@U0EVIL&gt; &lt;!here&gt;"
        )
        assert "<https://" in json.dumps(message)  # the config's playbook links stay links

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.text())
    def test_no_angle_bracket_from_upstream_survives(self, upstream: str) -> None:
        """Whatever an upstream sends, in a probe detail or anywhere in the event, none of its `<` `>` is posted."""
        config = no_webhooks()
        for event, name in (
            (self_page(upstream), "depmon"),
            (evss_trigger(config, upstream), "EVSS"),
            (poisoned(evss_trigger(config), upstream), "EVSS" + upstream),
            (poisoned(self_page(upstream), upstream), "depmon"),
        ):
            assert_no_live_upstream_markup(slack_message("trigger", name, event), event)


class TestMarkup:
    """depmon's own markup is kept; every value put into it is text."""

    def test_a_template_keeps_its_markup_and_escapes_its_values(self) -> None:
        """A mention depmon writes stays a mention; a value, even one shaped like markup, is shown as text."""
        notified = mrkdwn("*Notify:* <@{}> ({})", "U0123ABCD", "<!channel> & co")
        assert notified == "*Notify:* <@U0123ABCD> (&lt;!channel&gt; &amp; co)"
        assert mrkdwn("*Links:* {}", Mrkdwn("<https://x.example|x>")) == "*Links:* <https://x.example|x>"

    def test_a_link_whose_address_could_end_early_is_its_text(self) -> None:
        """An address with `|`, `>` or a space, or not https, gives the escaped text and no link."""
        for href in ("https://a.example/|evil", "https://a.example/>", "https://a .example", "javascript:x"):
            assert link(href, "Playbook <1>") == "Playbook &lt;1&gt;"
        assert link("https://a.example/?a=1&b=2", "A") == "<https://a.example/?a=1&amp;b=2|A>"

    def test_control_and_format_characters_do_not_survive(self) -> None:
        """A newline or a bidirectional override in a text cannot start a line or reverse one."""
        assert escape("a\nb\u202ec\u2028d") == "a bc d"
