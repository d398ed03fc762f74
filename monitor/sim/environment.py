"""A simulated VA environment: every bundled dependency on loopback, a fake PagerDuty, a config for the real daemon.

    with SimulatedEnvironment(workdir) as env:
        # depmon run --config env.config_dir --state env.state_path
        env.upstream("evss").fail_with(503)
        env.pagerduty.wait_for(lambda events: ...)

`start()` reads the bundled configuration (with every `${VAR:-default}` at its default, whatever
the caller's environment holds), starts one `SimulatedUpstream` per dependency and a
`FakePagerDuty` that knows every configured service id, and writes `config_dir/depmon.yaml`: the
bundled document with each probe pointed at its upstream (URLs, token URLs, TLS hosts, ports and
`ca_file` rewritten; OAuth2 client credentials set to the simulator's), second-scale timing, and
PagerDuty pointed at the fake with a 32-character routing key and the fake's API token. The
written file is validated with `load_config` before `start()` returns, so a schema change shows
up here and not as a daemon that refuses to start.

Each upstream serves exactly the paths the probes call, answering what their `expect` asks for
(`{"status": "pass"}` by default, with the values of any `json` conditions filled in: VA
Notify's `/_status?simple=1` gets `{"status": "ok"}`). http probes with `bearer_from` present
the token of the named oauth2 probe, and their endpoints accept only tokens that endpoint issued.

Escalation (SPEC 11.2): REST writes are made as `SIM_REQUESTER_ID` from `SIM_FROM_EMAIL` (unless
the source sets its own), and each contact named in `people` is given a PagerDuty user and a Slack
member id, so that a page meeting the escalation criteria requests them as responders at the
fake PagerDuty's incident and mentions them in the fake Slack's posts (the demo names the
Product Owner: `DEMO_PEOPLE`).

Traffic signals (SPEC 11.3): the `datadog` probes of the dependencies named in `traffic` are
enabled and pointed at a simulated Datadog (`FakeDatadog`), where vets-api's calls to each one's
breaker service (read from its query's `service:` tag) start with none failing;
`set_traffic_failures` changes that share. Every other signal probe is written disabled.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import yaml

from monitor.config import (
    Config,
    DatadogProbeSpec,
    DnsProbeSpec,
    Expect,
    HttpProbeSpec,
    OAuth2ProbeSpec,
    SignalProbeBase,
    TcpProbeSpec,
    Timing,
    TlsProbeSpec,
    bundled_config_path,
    format_duration,
    load_config,
)
from monitor.paging.decisions import dedup_key
from monitor.sim.fake_datadog import FakeDatadog
from monitor.sim.fake_pagerduty import FakePagerDuty
from monitor.sim.fake_slack import FakeSlack
from monitor.sim.lifecycle import Started
from monitor.sim.loopback import LOOPBACK_HOST
from monitor.sim.upstreams import HEALTH_PASS, CertificateAuthority, SimulatedUpstream, TokenIssuer

__all__ = [
    "CLIENT_ID",
    "DEMO_PEOPLE",
    "DEMO_TIMING",
    "ROUTING_KEY",
    "SIM_FROM_EMAIL",
    "SIM_REQUESTER_ID",
    "Person",
    "SimulatedEnvironment",
]

DEMO_RESOLVE_HOLD = 1.0  # seconds up before a resolve: the demo's timeline is second-scale
DEMO_TIMING = Timing(interval=1.0, timeout=0.5, failure_threshold=2, success_threshold=2, confirm_interval=0.25)
"""Second-scale probe timing: an outage is confirmed in about a second."""

ROUTING_KEY = "depmonsimulatorroutingkey0000001"
SIM_REQUESTER_ID = "PSIMREQ"  # the PagerDuty user the simulated responder requests are made as
SIM_FROM_EMAIL = "depmon-demo@example.gov"  # PagerDuty's `From` header for the simulated REST writes
CLIENT_ID = "depmon-simulator"
_CLIENT_SECRET = "simulated-ssoe-client-secret"  # noqa: S105 - the simulated SSOe's, not a secret
_TOKEN_LIFETIME_SECONDS = 5.0
_CALLS_PER_POINT = 50  # vets-api's simulated calls to a traffic-watched upstream per Datadog point
# Loopback needs no proxy and plain HTTP no TLS options; the simulator's timing is everyone's.
_DROPPED_PROBE_KEYS = (
    "proxy",
    "client_cert",
    "client_key",
    "ca_file",
    "expect_addresses",
    *Timing.model_fields,
)
_CONFIG_HEADER = """\
# Written by depmon's simulator (monitor/sim/environment.py): the bundled VA mobile configuration
# pointed at simulated upstreams and a simulated PagerDuty on 127.0.0.1, with second-scale timing.
"""


@dataclass(frozen=True, slots=True)
class Person:
    """The ids a simulated contact is known by: a PagerDuty user and a Slack member."""

    pagerduty_user: str
    slack_user: str


DEMO_PEOPLE = {"product-owner": Person("PSIMPO1", "U0SIMPO01")}
"""The demo's Product Owner, paged and mentioned when a page meets the escalation criteria."""


class SimulatedEnvironment(Started):
    """Simulated upstreams for every dependency of a config, a fake PagerDuty, and the config to run against them.

    `workdir` holds the written config, the certificates and the daemon's state file (a
    temporary directory, removed on `stop()`, when not given). `source` is the config to
    simulate (the bundled one by default). `service_overrides` replaces dependencies'
    `pagerduty_service` in the written config; an override the fake does not know is a bad
    service id (the fake knows the source config's ids only). `token_lifetime` is the
    `expires_in` of the simulated SSOe tokens. `people`: contact id -> the PagerDuty user and
    Slack member id it is given (contacts the source does not have are ignored).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        environment: str = "demo",
        timing: Timing = DEMO_TIMING,
        maintenance_poll_interval: float = 1.0,
        resolve_hold: float = DEMO_RESOLVE_HOLD,
        token_lifetime: float = _TOKEN_LIFETIME_SECONDS,
        service_overrides: Mapping[str, str] | None = None,
        source: Path | None = None,
        traffic: Collection[str] = (),
        people: Mapping[str, Person] | None = None,
    ) -> None:
        self._workdir = workdir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self.environment = environment
        self.timing = timing
        self.maintenance_poll_interval = maintenance_poll_interval
        self.resolve_hold = resolve_hold
        self.token_lifetime = token_lifetime
        self._service_overrides = dict(service_overrides or {})
        self._source = source
        self._upstreams: dict[str, SimulatedUpstream] = {}
        self._pagerduty: FakePagerDuty | None = None
        self._slack: FakeSlack | None = None
        self._config: Config | None = None
        self._traffic = set(traffic)
        self._people = dict(people or {})
        self._datadog: FakeDatadog | None = None
        self._breakers: dict[str, str] = {}  # dependency -> the breaker service its traffic probe counts

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every upstream and the fake PagerDuty, then write and validate the config."""
        if self._workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="depmon-sim-")
            self._workdir = Path(self._tempdir.name)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        source = load_config(self._source or bundled_config_path(), {})
        unknown = set(self._service_overrides) - set(source.dependencies)
        if unknown:
            raise ValueError(f"service_overrides names unknown dependencies: {sorted(unknown)}")
        authority = CertificateAuthority(self.workdir / "certs")
        self._pagerduty = FakePagerDuty()
        for service_id, owners in source.service_owners().items():
            names = [
                source.dependencies[o].name if o in source.dependencies else source.features[o].name for o in owners
            ]
            self._pagerduty.add_service(service_id, " / ".join(names))
        self._pagerduty.start()
        self._slack = FakeSlack().__enter__()
        self._datadog = FakeDatadog().start()

        document = source.model_dump(mode="json", by_alias=True, exclude_unset=True)
        issuers = self._build_upstreams(source, authority)
        self._point_bearers_at_issuers(source, issuers)
        for upstream in self._upstreams.values():
            upstream.start()
        self._rewrite_targets(source, document, authority)
        self._set_monitor_and_pagerduty(document)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            _CONFIG_HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        self._config = load_config(self.config_dir, {})

    def stop(self) -> None:
        """Stop every server and remove the temporary directory (if this environment made it)."""
        for upstream in self._upstreams.values():
            upstream.stop()
        if self._pagerduty is not None:
            self._pagerduty.stop()
        if self._slack is not None:
            self._slack.__exit__(None, None, None)
        if self._datadog is not None:
            self._datadog.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    # -- what the daemon and the caller need --------------------------------------------------------

    @property
    def workdir(self) -> Path:
        """The directory holding the config, the certificates and the state file."""
        if self._workdir is None:
            raise RuntimeError("the simulated environment has not started")
        return self._workdir

    @property
    def config_dir(self) -> Path:
        """The config directory to run the daemon with (`--config`)."""
        return self.workdir / "config"

    @property
    def config_file(self) -> Path:
        """The one YAML file in `config_dir`."""
        return self.config_dir / "depmon.yaml"

    @property
    def state_path(self) -> Path:
        """The daemon's SQLite state file (`--state`)."""
        return self.workdir / "state.sqlite3"

    @property
    def config(self) -> Config:
        """The written config, as the daemon loads it."""
        if self._config is None:
            raise RuntimeError("the simulated environment has not started")
        return self._config

    @property
    def pagerduty(self) -> FakePagerDuty:
        """The fake PagerDuty (Events API v2 and REST maintenance windows)."""
        if self._pagerduty is None:
            raise RuntimeError("the simulated environment has not started")
        return self._pagerduty

    @property
    def slack(self) -> FakeSlack:
        """The fake Slack: the team's alerts channel and each owning team's channel have a webhook."""
        if self._slack is None:
            raise RuntimeError("the environment is not started")
        return self._slack

    @property
    def datadog(self) -> FakeDatadog:
        """The simulated Datadog the enabled traffic probes ask."""
        if self._datadog is None:
            raise RuntimeError("the environment is not started")
        return self._datadog

    def set_traffic_failures(self, dependency: str, failure_ratio: float) -> None:
        """The share of vets-api's simulated calls to `dependency` that fail, from the next point on."""
        self.datadog.set_traffic(self._breakers[dependency], _CALLS_PER_POINT, failure_ratio)

    @property
    def upstreams(self) -> dict[str, SimulatedUpstream]:
        """Dependency id -> its simulated upstream."""
        return dict(self._upstreams)

    def upstream(self, dependency: str) -> SimulatedUpstream:
        """The simulated upstream of a dependency."""
        return self._upstreams[dependency]

    def dedup_key(self, dependency: str) -> str:
        """The dedup key the daemon pages a dependency under."""
        return dedup_key(self.environment, dependency)

    def service_id(self, dependency: str) -> str:
        """The PagerDuty service id of a dependency in the written config; ValueError when it has none."""
        service = self.config.dependencies[dependency].pagerduty_service
        if service is None:
            raise ValueError(f"{dependency} has no pagerduty_service")
        return service

    def open_maintenance(self, dependency: str, seconds: float = 600.0, description: str = "") -> str:
        """Open a maintenance window on a dependency's service now, for `seconds`; returns its id."""
        now = datetime.now(UTC)
        return self.pagerduty.add_window(
            [self.service_id(dependency)],
            now - timedelta(seconds=1),
            now + timedelta(seconds=seconds),
            description or f"Simulated {self.config.dependencies[dependency].name} maintenance",
        )

    def clear_faults(self) -> None:
        """Undo every fault of every upstream and of both sides of the fake PagerDuty."""
        for upstream in self._upstreams.values():
            upstream.clear_faults()
        self.pagerduty.clear_faults()
        self.pagerduty.rest_clear_faults()

    # -- building --------------------------------------------------------------------------------

    def _build_upstreams(self, source: Config, authority: CertificateAuthority) -> dict[str, TokenIssuer]:
        """One upstream per dependency with its token endpoints and TLS endpoint; oauth2 ref -> issuer."""
        issuers: dict[str, TokenIssuer] = {}
        for dep_id, dependency in source.dependencies.items():
            upstream = SimulatedUpstream(dep_id, dependency.name)
            self._upstreams[dep_id] = upstream
            tls_hosts = [probe.host for probe in dependency.probes if isinstance(probe, TlsProbeSpec)]
            if tls_hosts:
                upstream.serve_tls(authority, tls_hosts)
            for probe in dependency.probes:
                if isinstance(probe, OAuth2ProbeSpec):
                    path = urlsplit(probe.token_url).path or "/"
                    issuers[f"{dep_id}/{probe.name}"] = upstream.serve_tokens(
                        path, CLIENT_ID, _CLIENT_SECRET, self.token_lifetime
                    )
        return issuers

    def _point_bearers_at_issuers(self, source: Config, issuers: Mapping[str, TokenIssuer]) -> None:
        """Serve every http probe's path, behind the issuer its `bearer_from` names."""
        for dep_id, probe in source.iter_probes():
            if isinstance(probe, HttpProbeSpec):
                tokens = issuers[probe.bearer_from] if probe.bearer_from else None
                status = probe.expect.status[0] if probe.expect.status else 200
                self._upstreams[dep_id].serve_health(
                    urlsplit(probe.url).path or "/",
                    _healthy_body(probe.expect),
                    status=status,
                    method=probe.method,
                    tokens=tokens,
                )

    def _rewrite_targets(self, source: Config, document: dict[str, Any], authority: CertificateAuthority) -> None:
        for dep_id, dependency in source.dependencies.items():
            upstream = self._upstreams[dep_id]
            written = document["dependencies"][dep_id]
            if dep_id in self._service_overrides:
                written["pagerduty_service"] = self._service_overrides[dep_id]
            for spec, probe in zip(dependency.probes, written["probes"], strict=True):
                for key in _DROPPED_PROBE_KEYS:
                    probe.pop(key, None)
                if "max_latency" in probe.get("expect", {}):
                    probe["expect"]["max_latency"] = format_duration(probe["expect"]["max_latency"])
                if isinstance(spec, HttpProbeSpec):
                    probe["url"] = _on(upstream.url, spec.url)
                elif isinstance(spec, OAuth2ProbeSpec):
                    probe["token_url"] = _on(upstream.url, spec.token_url)
                    probe["client_id"] = CLIENT_ID
                    probe["client_secret"] = _CLIENT_SECRET
                elif isinstance(spec, TlsProbeSpec):
                    assert upstream.tls is not None
                    probe.update(host=LOOPBACK_HOST, port=upstream.tls.port, ca_file=str(authority.ca_file))
                elif isinstance(spec, TcpProbeSpec):
                    probe.update(host=LOOPBACK_HOST, port=upstream.http.port)
                elif isinstance(spec, DnsProbeSpec):
                    probe["host"] = "localhost"
                elif isinstance(spec, SignalProbeBase):
                    self._point_signal_at_datadog(dep_id, spec, probe)

    def _point_signal_at_datadog(self, dep_id: str, spec: SignalProbeBase, probe: dict[str, Any]) -> None:
        """A traffic probe of `traffic` asks the simulated Datadog; any other signal probe is disabled."""
        service = re.search(r"service:([^,}]+)", spec.query)
        if dep_id not in self._traffic or not isinstance(spec, DatadogProbeSpec) or service is None:
            probe["enabled"] = False
            return
        self._breakers[dep_id] = service.group(1)
        self.set_traffic_failures(dep_id, 0.0)
        probe.update(
            enabled=True,
            url=self.datadog.url,
            api_key=self.datadog.api_key,
            app_key=self.datadog.app_key,
            window=format_duration(spec.window),
        )

    def _set_monitor_and_pagerduty(self, document: dict[str, Any]) -> None:
        monitor = document["monitor"]
        monitor.update(
            environment=self.environment,
            listen=f"{LOOPBACK_HOST}:0",
            state_path=str(self.state_path),
            defaults={
                "interval": format_duration(self.timing.interval),
                "timeout": format_duration(self.timing.timeout),
                "failure_threshold": self.timing.failure_threshold,
                "success_threshold": self.timing.success_threshold,
                "confirm_interval": format_duration(self.timing.confirm_interval),
            },
            resolve_hold=format_duration(self.resolve_hold),
        )
        if "significant_duration" in monitor:
            monitor["significant_duration"] = format_duration(monitor["significant_duration"])
        assert self._slack is not None
        channels = ["#va-mobile-app-alerts", *(d.get("channel") for d in document["dependencies"].values())]
        document["slack"] = {
            "webhooks": {channel: self._slack.webhook_url(channel) for channel in dict.fromkeys(channels) if channel}
        }
        pagerduty = document.setdefault("pagerduty", {})
        pagerduty.update(
            routing_key=ROUTING_KEY,
            events_url=self.pagerduty.events_url,
            api_token=self.pagerduty.api_token,
            api_url=self.pagerduty.api_url,
            # PagerDuty's From header for `depmon maintenance open` and the escalation writes.
            from_email=pagerduty.get("from_email") or SIM_FROM_EMAIL,
            requester_id=pagerduty.get("requester_id") or SIM_REQUESTER_ID,
            maintenance_poll_interval=format_duration(self.maintenance_poll_interval),
        )
        contacts = document.get("contacts") or {}
        for contact_id, person in self._people.items():
            if contact_id in contacts:
                contacts[contact_id].update(pagerduty_user=person.pagerduty_user, slack_user=person.slack_user)


def _on(base: str, url: str) -> str:
    """`url`'s path and query on the simulator's `base` (`http://127.0.0.1:PORT`)."""
    parts = urlsplit(url)
    return base + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _healthy_body(expect: Expect) -> dict[str, Any]:
    """`{"status": "pass"}` with the value of every `json` condition set at its dotted path."""
    body: dict[str, Any] = dict(HEALTH_PASS)
    for condition in expect.json_conditions:
        node = body
        *parents, leaf = condition.path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = condition.equals
    if expect.body_contains is not None:
        body["output"] = expect.body_contains
    return body
