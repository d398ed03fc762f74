"""`depmon maintenance open/close` (SPEC 10.2) against the fake PagerDuty on loopback, and the page's helpers."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta

import pytest

from monitor.commands.cli import main
from monitor.config import Config, bundled_config_path, load_config
from monitor.maintenance.records import ServiceStatus
from monitor.paging.decisions import Action, Decision
from monitor.paging.event_content import (
    USER_MESSAGE_PREFIX,
    WINDOW_DESCRIPTION_LIMIT,
    EventContext,
    build_event,
    maintenance_command,
    maintenance_message,
    owning_team_sentence,
)
from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.state.impact import FeatureHealth, FeatureState
from tests.helpers import StartPagerDuty, bundled_config
from tests.probes.http_loopback import threaded_forward_proxy

pytestmark = pytest.mark.integration

TOKEN = "tok-Secret-9f2c41d7e8"  # a test value that must never be printed
FROM = "oncall@example.gov"
EVSS = "PZKWB6Y"
EVSS_FEATURES = "Claims, Letters, Direct Deposit Benefits, Disability Rating"
NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def fake(start_pagerduty: StartPagerDuty) -> FakePagerDuty:
    """A fake PagerDuty with this module's API token that knows EVSS's service."""
    return start_pagerduty(api_token=TOKEN, services={EVSS: "EVSS"})


def environ(fake: FakePagerDuty, **overrides: str) -> dict[str, str]:
    """The bundled config pointed at the fake, with a From address."""
    return {
        "PAGERDUTY_API_URL": fake.api_url,
        "PAGERDUTY_API_TOKEN": TOKEN,
        "PAGERDUTY_FROM_EMAIL": FROM,
        **overrides,
    }


def depmon(fake: FakePagerDuty, capsys: pytest.CaptureFixture[str], *args: str, **env: str) -> tuple[int, str, str]:
    """Run `depmon maintenance ARGS` on the bundled config; (exit status, stdout, stderr)."""
    status = main(["maintenance", *args], environ=environ(fake, **env))
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    return status, captured.out, captured.err


@pytest.fixture
def config() -> Config:
    return bundled_config()


class TestThroughAProxy:
    def test_the_commands_follow_the_shells_proxy_variables(
        self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`open` and the listing reach PagerDuty through HTTP_PROXY, as the daemon does."""
        with threaded_forward_proxy() as proxy:
            opened, _, _ = depmon(
                fake, capsys, "open", "evss", "--for", "1h", "--message", "Claims down|EVSS", HTTP_PROXY=proxy.proxy_url
            )
            listed, out, _ = depmon(fake, capsys, HTTP_PROXY=proxy.proxy_url)
        assert (opened, listed) == (0, 0)
        assert "evss" in out
        sent = [(r.method, r.target.split("?")[0]) for r in proxy.requests]
        assert sent[0] == ("POST", f"{fake.api_url}/maintenance_windows")
        assert set(sent[1:]) == {("GET", f"{fake.api_url}/maintenance_windows")}  # one query per page or service

    def test_an_unusable_proxy_variable_is_exit_2(
        self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A proxy variable the command cannot use is named, with exit 2 and nothing sent."""
        status, _, err = depmon(fake, capsys, HTTPS_PROXY="socks5://fwd:1080")
        assert (status, err) == (2, "environment: HTTPS_PROXY: must be an http:// or https:// URL (a forward proxy)\n")
        assert fake.rest_requests == []


class TestOpen:
    def test_opens_a_window_and_names_the_features(
        self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`open` creates a USER_MESSAGE window on the dependency's service and prints its id and the features."""
        status, out, _ = depmon(fake, capsys, "open", "evss", "--for", "2h", "--message", "Claims down|EVSS is down")
        assert status == 0
        [window] = fake.windows
        assert window.description == "USER_MESSAGE:Claims down|EVSS is down"
        assert window.service_ids == (EVSS,)
        assert abs(window.end - window.start - timedelta(hours=2)) < timedelta(seconds=2)
        assert out.splitlines()[0].startswith(f"maintenance window {window.id} opened on {EVSS} for 2h")
        assert f"depmon's feature graph puts in maintenance: {EVSS_FEATURES}" in out
        # SPEC 11.1: vets-api's graph has no EVSS node today, and the output says so plainly.
        assert "the app shows Veterans NO downtime banner: vets-api's ServiceGraph has no node for it" in out

    def test_pagerduty_refusal_is_exit_1_with_its_reason(
        self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A service PagerDuty does not know is exit 1 with PagerDuty's reason, and no secret."""
        status, out, err = depmon(fake, capsys, "open", "mhv", "--for", "1h", "--message", "A|B")
        assert (status, out) == (1, "")
        assert "PagerDuty refused: PagerDuty REST API answered HTTP 400" in err
        assert "Service PP2ZZ2V not found" in err

    def test_wrong_token_is_exit_1_naming_the_setting(
        self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refused token is exit 1 naming pagerduty.api_token, never printing either token."""
        status, _, err = depmon(
            fake, capsys, "open", "evss", "--for", "1h", "--message", "A|B", PAGERDUTY_API_TOKEN="other-Secret-77"
        )
        assert status == 1
        assert "check pagerduty.api_token" in err
        assert "other-Secret-77" not in err

    @pytest.mark.parametrize(
        ("args", "env", "said"),
        [
            (("evss", "--for", "1h", "--message", "A|B"), {"PAGERDUTY_FROM_EMAIL": ""}, "set PAGERDUTY_FROM_EMAIL"),
            (("evss", "--for", "1h", "--message", "A|B"), {"PAGERDUTY_API_TOKEN": ""}, "set PAGERDUTY_API_TOKEN"),
            (("nope", "--for", "1h", "--message", "A|B"), {}, "unknown dependency 'nope'"),
            (("vetext", "--for", "1h", "--message", "A|B"), {}, "vetext has no pagerduty_service"),
            (("evss", "--for", "soon", "--message", "A|B"), {}, "--for: must be a duration like"),
            (("evss", "--for", "91d", "--message", "A|B"), {}, "--for: must be at most 90 days (got 91d)"),
            (("evss", "--for", "99999999d", "--message", "A|B"), {}, "--for: must be at most 90 days (got 99999999d)"),
            (("evss", "--for", "1h", "--message", "no bar"), {}, '"TITLE|BODY"'),
            (("evss", "--for", "1h", "--message", "A|"), {}, '"TITLE|BODY"'),
            (("evss", "--for", "1h", "--message", "A|B\nC"), {}, "--message: control, bidirectional-format"),
            (("evss", "--for", "1h", "--message", "A|\u202eB"), {}, "(U+202E at character 3)"),
            (("ev\x1bss", "--for", "1h", "--message", "A|B"), {}, "DEPENDENCY|WINDOW_ID: control"),
            (("evss", "--for", "1h", "--message", "A|" + "b" * 241), {}, "at most 242"),
            (("evss", "--message", "A|B"), {}, "give DEPENDENCY --for DURATION"),
        ],
        ids=[
            "no-from",
            "no-token",
            "unknown",
            "no-service",
            "duration",
            "91-days",
            "99999999-days",
            "no-bar",
            "no-body",
            "newline",
            "bidi",
            "escape-in-dependency",
            "long",
            "no-for",
        ],
    )
    def test_bad_input_is_exit_2_and_nothing_is_sent(
        self,
        fake: FakePagerDuty,
        capsys: pytest.CaptureFixture[str],
        args: tuple[str, ...],
        env: dict[str, str],
        said: str,
    ) -> None:
        """Bad input, an unknown or service-less dependency, or a missing From or token is exit 2 before any request."""
        status, _, err = depmon(fake, capsys, "open", *args, **env)
        assert status == 2
        assert said in err
        assert fake.rest_request_count == 0

    def test_longest_message_fits(self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]) -> None:
        """A message of exactly vets-api's room (255 with the prefix) is accepted."""
        message = "A|" + "b" * (WINDOW_DESCRIPTION_LIMIT - len(USER_MESSAGE_PREFIX) - 2)
        assert depmon(fake, capsys, "open", "evss", "--for", "1h", "--message", message)[0] == 0


class TestClose:
    def test_close_ends_an_open_window(self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]) -> None:
        """`close` ends the window `open` created, and says so."""
        depmon(fake, capsys, "open", "evss", "--for", "2h", "--message", "A|B")
        [opened] = fake.windows
        status, out, _ = depmon(fake, capsys, "close", opened.id)
        assert (status, out) == (0, f"maintenance window {opened.id} ended\n")
        [ended] = fake.windows
        assert ended.end < opened.end

    def test_unknown_window_is_exit_1(self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]) -> None:
        """A window PagerDuty does not know is exit 1 with its 404."""
        status, _, err = depmon(fake, capsys, "close", "PNOSUCH")
        assert status == 1
        assert "HTTP 404" in err

    @pytest.mark.parametrize("window_id", [None, "../services/X", "P 1"])
    def test_bad_window_id_is_exit_2(
        self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str], window_id: str | None
    ) -> None:
        """A missing or malformed window id is exit 2 before any request."""
        status, _, err = depmon(fake, capsys, "close", *([window_id] if window_id else []))
        assert status == 2
        assert "WINDOW_ID" in err
        assert fake.rest_request_count == 0


class TestListing:
    def test_no_action_still_lists(self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]) -> None:
        """`depmon maintenance` without an action lists the windows as before."""
        fake.add_window([EVSS], datetime.now(UTC), datetime.now(UTC) + timedelta(hours=1), "EVSS upgrade")
        for service in load_config(bundled_config_path(), {}).service_owners():
            fake.add_service(service)
        status, out, _ = depmon(fake, capsys)
        assert status == 0
        assert "EVSS upgrade" in out


class TestPageHelpers:
    def test_the_page_command_runs_as_printed(self, fake: FakePagerDuty, capsys: pytest.CaptureFixture[str]) -> None:
        """The page's maintenance command, split as a shell would, opens a window naming the impacted features."""
        config = load_config(bundled_config_path(), {})
        features = ["claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"]
        command = maintenance_command(config, "evss", features)
        assert command is not None
        argv = shlex.split(command)
        assert argv[:4] == ["depmon", "maintenance", "open", "evss"]
        status, _, _ = depmon(fake, capsys, *argv[2:])
        assert status == 0
        [window] = fake.windows
        assert (
            window.description
            == f"USER_MESSAGE:{EVSS_FEATURES} unavailable|EVSS is down; these features may not work until it is back"
        )

    def test_no_command_without_a_service(self, config: Config) -> None:
        """A dependency without a PagerDuty service gets no command."""
        assert maintenance_command(config, "vetext", ["claims"]) is None

    def test_many_features_still_fit(self, config: Config) -> None:
        """Every feature impacted: the names that do not fit become `and N more`, within vets-api's limit."""
        message = maintenance_message(config, "ssoe-oauth", list(config.features))
        assert len(USER_MESSAGE_PREFIX + message) <= WINDOW_DESCRIPTION_LIMIT
        assert " more unavailable|SSOe OAuth is down" in message

    @pytest.mark.parametrize(
        ("status", "sentence"),
        [
            (None, "VAOS's own PagerDuty service (PFDNA11) has not been read yet"),
            (ServiceStatus("active", None, False, NOW), "no incident open on the owning team's service"),
            (
                ServiceStatus("critical", NOW - 5280, False, NOW),
                "VAOS's own PagerDuty service is critical (since 12:32 UTC): the owning team has a high-urgency",
            ),
            (ServiceStatus("maintenance", NOW - 60, True, NOW), "is maintenance (seen so since 13:59 UTC)"),
            (ServiceStatus("warning", NOW - 86400, False, NOW), "is warning (since 2026-11-29 14:00 UTC)"),
            (ServiceStatus("disabled", None, False, NOW), "VAOS's own PagerDuty service is disabled: it pages nobody"),
        ],
    )
    def test_owning_team_sentence(self, config: Config, status: ServiceStatus | None, sentence: str) -> None:
        """The page says what the owning team's own service says, and since when."""
        assert sentence in owning_team_sentence(config, "vaos", status, NOW)

    def test_owning_team_sentence_without_a_service(self, config: Config) -> None:
        """A dependency without a PagerDuty service says its owners' status is unknown."""
        assert "has no PagerDuty service" in owning_team_sentence(config, "vetext", None, NOW)

    def test_the_page_carries_both_details(self, config: Config) -> None:
        """A trigger's custom_details hold the owning team's sentence from the context and the command."""
        critical = ServiceStatus("critical", NOW - 5280, False, NOW)
        ctx = EventContext(
            config, {"appointments": FeatureHealth(FeatureState.DOWN)}, [], NOW, now=NOW, owning_team_status=critical
        )
        event = build_event(Decision(Action.TRIGGER, "vaos", "depmon/production/vaos", ("appointments",)), ctx)
        details = event["payload"]["custom_details"]
        assert details["owning_team_status"].startswith("VAOS's own PagerDuty service is critical (since 12:32 UTC)")
        assert details["maintenance_command"] == (
            'depmon maintenance open vaos --for 2h --message "Appointments unavailable|VAOS is down; these features '
            'may not work until it is back"'
        )
