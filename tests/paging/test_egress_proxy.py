"""PagerDuty and Slack through a forward proxy (SPEC 11.5): CONNECT for https, absolute form for http.

The proxy is the tests' real one on loopback (`http_loopback.ForwardProxy`); the https servers
behind it are loopback TLS servers with a trustme CA the clients are told to trust.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import trustme
from pydantic import SecretStr

from monitor.config import Config, ConfigError
from monitor.daemon import Daemon, Runtime
from monitor.metrics import Metrics
from monitor.pagerduty.clients import Delivery, EventsSender, MaintenanceClient
from monitor.paging.sinks.pagerduty_events import EVENTS
from monitor.paging.sinks.slack import SLACK, SlackSink
from monitor.proxies import Link, ProxyEnvironment
from monitor.sim.daemon import simulation_environ
from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.sim.fake_slack import FakeSlack
from monitor.state.self_watch import LoopLagMonitor
from tests.probes.http_loopback import (
    ForwardProxy,
    Handler,
    RawHttpServer,
    reply,
    reply_json,
    routes,
    server_tls,
)

pytestmark = pytest.mark.integration

ROUTING_KEY = "R0UT1NGK3Y" + "x" * 22
EVSS = "PZKWB6Y"
FROM = "oncall@example.gov"
ALERTS = "#va-mobile-app-alerts"
EVENT = {"payload": {"summary": "EVSS down [test]", "source": "depmon/test", "severity": "critical"}}
TRIGGER = {**EVENT, "event_action": "trigger", "dedup_key": "depmon/test/evss"}


@pytest.fixture
def fake() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as running:
        running.add_service(EVSS)
        yield running


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as running:
        yield running


@pytest.fixture
def trust(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the tests' CA (and nothing else)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def tls_server(ca: trustme.CA, table: dict[str, Handler]) -> AsyncIterator[RawHttpServer]:
    async with RawHttpServer(routes(table), tls=server_tls(ca, "127.0.0.1")) as server:
        yield server


def sender(url: str, link: Link) -> EventsSender:
    return EventsSender(url, SecretStr(ROUTING_KEY), timeout=2.0, deadline=4.0, link=link)


def rest_client(url: str, token: str, link: Link) -> MaintenanceClient:
    return MaintenanceClient(url, SecretStr(token), timeout=2.0, deadline=4.0, link=link)


async def send_through_a_tunnel(
    ca: trustme.CA, trust: ssl.SSLContext, answer: Handler
) -> tuple[Delivery, RawHttpServer, ForwardProxy]:
    """One event sent to an https Events API that answers `answer`, through a proxy."""
    async with (
        tls_server(ca, {"/v2/enqueue": answer}) as server,
        ForwardProxy() as proxy,
        sender(server.url(""), Link(proxy.proxy_url, trust)) as events,
    ):
        with anyio.fail_after(10):
            return await events.send(TRIGGER), server, proxy


ACCEPTED = reply_json({"status": "success", "message": "Event processed", "dedup_key": "depmon/test/evss"}, 202)
NO_WINDOWS = reply_json({"maintenance_windows": [], "limit": 100, "offset": 0, "more": False, "total": None})


class TestPagerDutyThroughAProxy:
    """EventsSender and MaintenanceClient built with a proxy send every request through it."""

    @pytest.mark.anyio
    async def test_an_event_to_an_http_url_goes_in_absolute_form(self, fake: FakePagerDuty) -> None:
        """To http (loopback), the proxy is asked `POST http://host:port/v2/enqueue` and PagerDuty gets the event."""
        async with ForwardProxy() as proxy, sender(fake.events_url, Link(proxy.proxy_url)) as events:
            with anyio.fail_after(10):
                delivery = await events.send(TRIGGER)
        assert delivery.status == "accepted"
        assert [(r.method, r.target) for r in proxy.requests] == [("POST", f"{fake.events_url}/v2/enqueue")]
        assert [e.body["routing_key"] for e in fake.events] == [ROUTING_KEY]

    @pytest.mark.anyio
    async def test_an_event_to_an_https_url_goes_through_a_connect_tunnel(
        self, ca: trustme.CA, trust: ssl.SSLContext
    ) -> None:
        """To https, the proxy is asked to CONNECT and sees no request: TLS runs end to end, to the real server."""
        delivery, server, proxy = await send_through_a_tunnel(ca, trust, ACCEPTED)
        assert delivery.status == "accepted"
        assert [(r.method, r.target) for r in proxy.requests] == [("CONNECT", f"127.0.0.1:{server.port}")]
        assert [(r.method, r.target) for r in server.requests] == [("POST", "/v2/enqueue")]
        assert json.loads(server.requests[0].body)["routing_key"] == ROUTING_KEY

    @pytest.mark.anyio
    async def test_the_size_cap_holds_through_the_proxy(self, ca: trustme.CA, trust: ssl.SSLContext) -> None:
        """An answer longer than the transport's cap is refused (and retried) through a tunnel too."""
        huge = reply(202, b"x" * (1024 * 1024 + 1))
        delivery, _, proxy = await send_through_a_tunnel(ca, trust, huge)
        assert (delivery.status, delivery.message) == (
            "retry",
            "no answer from the PagerDuty Events API (AnswerTooLarge)",
        )
        assert [r.method for r in proxy.requests] == ["CONNECT"]

    @pytest.mark.anyio
    async def test_maintenance_window_writes_go_in_absolute_form(self, fake: FakePagerDuty) -> None:
        """Opening and ending a window are REST calls the proxy forwards; PagerDuty holds, then ends, the window."""
        now = datetime.now(UTC)
        async with ForwardProxy() as proxy, rest_client(fake.api_url, fake.api_token, Link(proxy.proxy_url)) as client:
            with anyio.fail_after(10):
                window = await client.create_window(EVSS, now, now + timedelta(hours=1), "USER_MESSAGE:x|y", FROM)
                await client.end_window(window.id, FROM)
        assert [(r.method, r.target) for r in proxy.requests] == [
            ("POST", f"{fake.api_url}/maintenance_windows"),
            ("DELETE", f"{fake.api_url}/maintenance_windows/{window.id}"),
        ]
        assert all(r.headers["from"] == FROM for r in proxy.requests)

    @pytest.mark.anyio
    async def test_maintenance_window_reads_go_through_a_connect_tunnel(
        self, ca: trustme.CA, trust: ssl.SSLContext
    ) -> None:
        """The poller's query reaches an https REST API through CONNECT."""
        async with (
            tls_server(ca, {"/maintenance_windows": NO_WINDOWS}) as server,
            ForwardProxy() as proxy,
            rest_client(server.url(""), "t0ken", Link(proxy.proxy_url, trust)) as client,
        ):
            with anyio.fail_after(10):
                result = await client.open_windows([EVSS])
        assert result.windows == []
        assert [r.method for r in proxy.requests] == ["CONNECT"]
        assert [r.target.split("?")[0] for r in server.requests] == ["/maintenance_windows"]


async def post(webhook: str, link: Link) -> Delivery:
    """One Slack message posted to `webhook` by a SlackSink that reaches it through `link`."""
    sink = SlackSink({ALERTS: webhook}, timeout=5.0, link_for=lambda _: link)
    try:
        with anyio.fail_after(10):
            return await sink.send(SLACK.at(ALERTS), {"text": "EVSS down"})
    finally:
        await sink.aclose()


class TestSlackThroughAProxy:
    """SlackSink posts through the proxy its `link_for` names."""

    @pytest.mark.anyio
    async def test_a_post_to_an_http_webhook_goes_in_absolute_form(self, slack: FakeSlack) -> None:
        """To http (loopback), the proxy forwards the POST and Slack gets the message."""
        url = slack.webhook_url(ALERTS)
        async with ForwardProxy() as proxy:
            delivery = await post(url, Link(proxy.proxy_url))
        assert delivery.status == "accepted"
        assert [(r.method, r.target) for r in proxy.requests] == [("POST", url)]
        assert [p.text for p in slack.posts] == ["EVSS down"]

    @pytest.mark.anyio
    async def test_a_post_to_an_https_webhook_goes_through_a_connect_tunnel(
        self, ca: trustme.CA, trust: ssl.SSLContext
    ) -> None:
        """To https, the proxy only sees CONNECT; the webhook gets the message over TLS."""
        async with tls_server(ca, {"/services/T0/B0/x": reply(200, b"ok")}) as server, ForwardProxy() as proxy:
            delivery = await post(server.url("/services/T0/B0/x"), Link(proxy.proxy_url, trust))
        assert delivery.status == "accepted"
        assert [(r.method, r.target) for r in proxy.requests] == [("CONNECT", f"127.0.0.1:{server.port}")]
        assert json.loads(server.requests[0].body) == {"text": "EVSS down"}


def _config(
    fake: FakePagerDuty, slack: FakeSlack, pagerduty_proxy: str | None = None, slack_proxy: str | None = None
) -> Config:
    """A config that pages `fake` and posts to `slack`, through their own proxies when given."""
    return Config.model_validate(
        {
            "monitor": {"environment": "test"},
            "pagerduty": {
                "routing_key": ROUTING_KEY,
                "events_url": fake.events_url,
                "api_token": fake.api_token,
                "api_url": fake.api_url,
                "proxy": pagerduty_proxy,
            },
            "slack": {"webhooks": {ALERTS: slack.webhook_url(ALERTS)}, "proxy": slack_proxy},
            "dependencies": {
                "evss": {"name": "EVSS", "probes": [{"name": "p", "kind": "tcp", "host": "h", "port": 1}]}
            },
        }
    )


@asynccontextmanager
async def runtime(config: Config, environ: Mapping[str, str]) -> AsyncIterator[Runtime]:
    metrics = Metrics()
    built = Runtime.build(config, metrics, LoopLagMonitor(metrics), None, ProxyEnvironment.from_environ(environ))
    try:
        yield built
    finally:
        built.close()
        if built.slack is not None:
            await built.slack.aclose()


async def send_all(built: Runtime) -> None:
    """One event, one window query and one Slack post, through the runtime's own clients."""
    events, slack_sink = built.sinks[EVENTS], built.sinks[SLACK]
    assert events is not None
    assert slack_sink is not None
    assert built.maintenance is not None
    with anyio.fail_after(10):
        assert (await events.send(EVENTS.at(), TRIGGER)).status == "accepted"
        await built.maintenance.open_windows([EVSS])
        assert (await slack_sink.send(SLACK.at(ALERTS), {"text": "EVSS down"})).status == "accepted"


class TestTheDaemonsRoutes:
    """`Runtime.build` follows the daemon's proxy variables, and the config's own proxies over them."""

    @pytest.mark.anyio
    async def test_http_proxy_carries_pagerduty_and_slack(self, fake: FakePagerDuty, slack: FakeSlack) -> None:
        """With HTTP_PROXY set, the event, the REST query and the Slack post all reach the proxy."""
        async with ForwardProxy() as proxy, runtime(_config(fake, slack), {"HTTP_PROXY": proxy.proxy_url}) as built:
            await send_all(built)
        assert [r.target.split("?")[0] for r in proxy.requests] == [
            f"{fake.events_url}/v2/enqueue",
            f"{fake.api_url}/maintenance_windows",
            slack.webhook_url(ALERTS),
        ]

    @pytest.mark.anyio
    async def test_no_proxy_sends_listed_hosts_direct(self, fake: FakePagerDuty, slack: FakeSlack) -> None:
        """A host in NO_PROXY is reached directly although HTTP_PROXY is set: delivered, and the proxy saw nothing."""
        async with ForwardProxy() as proxy:
            environ = {"HTTP_PROXY": proxy.proxy_url, "NO_PROXY": "example.gov, 127.0.0.1"}
            async with runtime(_config(fake, slack), environ) as built:
                await send_all(built)
        assert (len(fake.events), len(slack.posts)) == (1, 1)
        assert proxy.requests == []

    @pytest.mark.anyio
    async def test_the_configured_proxies_win_over_the_variables(self, fake: FakePagerDuty, slack: FakeSlack) -> None:
        """`pagerduty.proxy` and `slack.proxy` carry their traffic even for hosts NO_PROXY lists."""
        async with ForwardProxy() as pd_proxy, ForwardProxy() as slack_proxy:
            config = _config(fake, slack, pd_proxy.proxy_url, slack_proxy.proxy_url)
            async with runtime(config, {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}) as built:
                await send_all(built)
        assert [r.method for r in pd_proxy.requests] == ["POST", "GET"]
        assert [r.target for r in slack_proxy.requests] == [slack.webhook_url(ALERTS)]


class TestUnusableProxyVariables:
    """A proxy variable depmon cannot use stops the daemon before it starts, naming the variable."""

    def test_the_daemon_refuses_an_unusable_https_proxy(self, tmp_path: Path) -> None:
        """`environment: HTTPS_PROXY: ...`, without the value (it may hold a password)."""
        config = Config.model_validate(
            {"monitor": {"environment": "test"}, "dependencies": {"evss": {"name": "EVSS", "probes": [_PROBE]}}}
        )
        with pytest.raises(ConfigError) as caught:
            Daemon(tmp_path / "depmon.yaml", config, ":memory:", {"HTTPS_PROXY": "socks5://u:s3cret@proxy:1080"})
        assert [str(issue) for issue in caught.value.issues] == [
            "environment: HTTPS_PROXY: must be an http:// or https:// URL (a forward proxy)"
        ]

    def test_depmon_run_exits_2(self, tmp_path: Path) -> None:
        """`depmon run` prints the issue and exits 2, no traceback."""
        path = tmp_path / "depmon.yaml"
        path.write_text(
            "monitor: {environment: test}\n"
            "dependencies: {evss: {name: EVSS, probes: [{name: p, kind: tcp, host: h, port: 1}]}}\n",
            encoding="utf-8",
        )
        argv = ["run", "--config", str(path), "--listen", "127.0.0.1:0", "--state", str(tmp_path / "state.sqlite3")]
        done = subprocess.run(
            [sys.executable, "-m", "monitor.entry", *argv],
            env=simulation_environ({"HTTP_PROXY": "http://proxy.example:99999"}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stderr) == (2, "environment: HTTP_PROXY: has an invalid port (1 to 65535)\n")


_PROBE = {"name": "p", "kind": "tcp", "host": "h", "port": 1}
