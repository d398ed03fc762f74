"""The configuration's models: frozen pydantic models, unknown keys refused, values checked as
they are read (durations, ids, URLs, `HOST:PORT`, time zones). The rules that span several keys
are `monitor.config.references`; reading the files is `monitor.config.loading`.

The probe kinds are the members of `AnyProbeSpec`, each chosen by its `kind`: `PROBE_KINDS` is
derived from it, and so is the probe registry (`probes.prober_for`).
"""

from __future__ import annotations

import re
import socket
import zoneinfo
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from monitor.proxies import check_proxy_url
from monitor.state.graph import ancestors
from monitor.text import DURATION_PATTERN, parse_duration, parse_host_port
from monitor.urls import LOOPBACK, check_postgresql_url, check_url, conninfo_passwords, url_passwords

# What a duration is written as: `30s` and the like, or a number of seconds (the JSON Schema says so).
_DurationInput = Annotated[str, Field(pattern=DURATION_PATTERN)] | Annotated[float, Field(gt=0)]
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=_DurationInput)]
# A switch `${VAR:-false}` may set: true or false, written as YAML's booleans or as the words.
Switch = Annotated[bool, BeforeValidator(lambda value: value, json_schema_input_type=bool | Literal["true", "false"])]
_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_URL_PATTERN = r"^https?://"
_ENVIRONMENT_PATTERN = r"^[A-Za-z0-9._-]+$"
Id = Annotated[str, Field(pattern=_ID_PATTERN, max_length=64)]
_SECURE_URL = f"an https:// URL (http:// only to a loopback address: {LOOPBACK})"
_PROXY_URL = "an http://, https://, socks5:// or socks5h:// URL"
_STATE_URL = "a postgresql:// URL (or null for the SQLite file at state_path)"


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


# Optional ids that `${VAR:-}` may leave empty (empty is none): the JSON Schema allows either.
_SLACK_USER = r"^[UW][A-Z0-9]{2,}$"
_Blank = Annotated[str, Field(max_length=0)]
SlackUserId = Annotated[
    Annotated[str, Field(pattern=_SLACK_USER)] | None,
    BeforeValidator(_empty_is_none, json_schema_input_type=Annotated[str, Field(pattern=_SLACK_USER)] | _Blank | None),
]


def _secure_url(value: str) -> str:
    # Keys, tokens and webhook URLs travel in these requests: clear text only on this machine.
    check_url(value, ("https", "http"), _SECURE_URL, clear_text=("http",))
    return value


def _secure_secret_url(value: SecretStr) -> SecretStr:
    if value.get_secret_value():  # empty: that channel is skipped
        _secure_url(value.get_secret_value())
    return value


def _proxy_url(value: str | None) -> str | None:
    if value is not None:
        check_url(value, ("http", "https", "socks5", "socks5h"), _PROXY_URL, userinfo=True)
    return value


# A URL that carries a credential (in itself, or in the requests sent to it).
SecureUrl = Annotated[str, AfterValidator(_secure_url)]
SecureSecretUrl = Annotated[SecretStr, AfterValidator(_secure_secret_url)]
ProxyUrl = Annotated[str | None, AfterValidator(_proxy_url)]
# PagerDuty's and Slack's own proxy (SPEC 11.5): their clients tunnel through http(s) proxies only.
DestinationProxyUrl = Annotated[str | None, AfterValidator(lambda v: v if v is None else check_proxy_url(v))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ---------------------------------------------------------------------------------------------
# Probe specs: one model per kind, chosen by `kind`


class Timing(_Model):
    """The scheduling and threshold settings a probe inherits from `monitor.defaults`."""

    interval: Duration = 30.0
    timeout: Duration = 10.0
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=2, ge=1)
    confirm_interval: Duration = 2.0


class JsonCondition(_Model):
    """`{path: "status", equals: "pass"}`: a dotted path into the JSON body and its expected value."""

    path: str = Field(min_length=1)
    equals: Any


class Expect(_Model):
    """What an http probe's answer must look like."""

    status: list[Annotated[int, Field(ge=100, le=599)]] | None = None  # None: any 2xx
    max_latency: Duration | None = None
    body_contains: str | None = None
    json_conditions: list[JsonCondition] = Field(default_factory=list, alias="json")
    health_json: bool = False

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _ProbeBase(_Model):
    name: Id
    # A disabled probe is shown (`disabled` in /status) but never run and counted nowhere (SPEC 11.3);
    # it may leave its required fields empty.
    enabled: Switch = True
    critical: bool = True
    interval: Duration | None = None
    timeout: Duration | None = None
    failure_threshold: int | None = Field(default=None, ge=1)
    success_threshold: int | None = Field(default=None, ge=1)
    confirm_interval: Duration | None = None

    def timing(self, defaults: Timing) -> Timing:
        """This probe's timing: its own settings over the monitor's defaults."""
        own = {k: getattr(self, k) for k in Timing.model_fields if getattr(self, k) is not None}
        return defaults.model_copy(update=own)


class _TlsClientOptions(_Model):
    proxy: ProxyUrl = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


class HttpProbeSpec(_ProbeBase, _TlsClientOptions):
    """An HTTP(S) request and the conditions its answer must meet."""

    kind: Literal["http"] = "http"
    url: str = Field(pattern=_URL_PATTERN)
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_from: str | None = None
    follow_redirects: bool | None = None  # None: follow unless the probe sends credentials
    expect: Expect = Field(default_factory=Expect)

    @property
    def follows_redirects(self) -> bool:
        """Whether redirects are followed: as configured, else only when no credentials are sent.

        Configured `headers` count as credentials whatever their names (`X-Api-Key`, `apikey`):
        a redirect must not carry them, or the bearer token, to wherever the upstream points.
        """
        if self.follow_redirects is not None:
            return self.follow_redirects
        return not self.headers and self.bearer_from is None


class OAuth2ProbeSpec(_ProbeBase, _TlsClientOptions):
    """A client-credentials grant; success is a token issued."""

    kind: Literal["oauth2"]
    token_url: str = Field(pattern=_URL_PATTERN)
    client_id: SecretStr
    client_secret: SecretStr
    scope: str | None = None


class TlsProbeSpec(_ProbeBase):
    """A TLS handshake: chain, hostname and days until the certificate expires."""

    kind: Literal["tls"]
    host: str = Field(min_length=1)
    port: int = Field(default=443, ge=1, le=65535)
    min_days_valid: int = Field(default=14, ge=0)
    ca_file: str | None = None


class TcpProbeSpec(_ProbeBase):
    """A TCP connection within the deadline."""

    kind: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class DnsProbeSpec(_ProbeBase):
    """A name resolution, optionally to expected addresses."""

    kind: Literal["dns"]
    host: str = Field(min_length=1)
    expect_addresses: list[str] = Field(default_factory=list)


Threshold = Annotated[float, Field(allow_inf_nan=False)]


class SignalProbeBase(_ProbeBase):
    """A traffic signal (SPEC 11.3): one number from a metrics backend, judged against a threshold."""

    query: str = ""
    fail_above: Threshold | None = None  # fails when the value is strictly above
    fail_below: Threshold | None = None  # fails when the value is strictly below
    no_data: Literal["inconclusive", "fail", "pass"] = "inconclusive"

    @model_validator(mode="after")
    def _one_threshold(self) -> SignalProbeBase:
        if self.fail_above is not None and self.fail_below is not None:
            raise ValueError("fail_above and fail_below: exactly one of them, not both")
        if self.enabled and self.fail_above is None and self.fail_below is None:
            raise ValueError("fail_above or fail_below is required (exactly one)")
        return self

    def missing(self) -> list[str]:
        """The keys an enabled probe needs that are empty (a config error while it is enabled)."""
        return [key for key in self.REQUIRED if not _filled(getattr(self, key))]

    REQUIRED: ClassVar[tuple[str, ...]] = ("query",)


def _filled(value: object) -> bool:
    return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)


class PrometheusProbeSpec(SignalProbeBase):
    """An instant query to Prometheus's HTTP API (`GET /api/v1/query`)."""

    kind: Literal["prometheus"]
    url: str = Field(default="", pattern=r"^$|^https?://")  # the API's base, e.g. http://prometheus:9090
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. Authorization for a hosted Prometheus

    REQUIRED: ClassVar[tuple[str, ...]] = ("url", "query")


class DatadogProbeSpec(SignalProbeBase):
    """A query to Datadog's v1 metrics API (`GET /api/v1/query?from&to&query`)."""

    kind: Literal["datadog"]
    url: SecureUrl = "https://api.datadoghq.com"  # or https://api.ddog-gov.com (US1-FED)
    api_key: SecretStr = SecretStr("")
    app_key: SecretStr = SecretStr("")
    window: Duration = Field(default=300.0, gt=0)  # from = now - window

    REQUIRED: ClassVar[tuple[str, ...]] = ("query", "api_key", "app_key")


SignalProbeSpec = PrometheusProbeSpec | DatadogProbeSpec
SIGNAL_KINDS = ("prometheus", "datadog")  # the kinds whose backend, not the dependency, can fail to answer

# The probe kinds: a kind is a spec model here, in this union, and `probes/<kind>.py`.
AnyProbeSpec = (
    HttpProbeSpec
    | OAuth2ProbeSpec
    | TlsProbeSpec
    | TcpProbeSpec
    | DnsProbeSpec
    | PrometheusProbeSpec
    | DatadogProbeSpec
)
ProbeSpec = Annotated[AnyProbeSpec, Field(discriminator="kind")]
# Each spec's `kind`, in the union's order: the one list of kinds (the probe registry is built from it).
PROBE_KINDS: tuple[str, ...] = tuple(
    get_args(spec.model_fields["kind"].annotation)[0] for spec in get_args(AnyProbeSpec)
)


# ---------------------------------------------------------------------------------------------
# The document


class Link(_Model):
    """A link added to pages: `{text, href}`."""

    text: str
    href: str = Field(pattern=_URL_PATTERN)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _workdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class BusinessHours(_Model):
    """When the team covers pages at full urgency (VA: business hours only)."""

    timezone: str = "America/New_York"
    days: list[Weekday] = Field(default_factory=_workdays)
    start: str = Field(default="09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(default="20:00", pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name like America/New_York)") from None
        return value

    def contains(self, moment: float) -> bool:
        """True when UNIX time `moment` falls inside these hours, in their time zone (DST included)."""
        local = datetime.fromtimestamp(moment, zoneinfo.ZoneInfo(self.timezone))
        if _WEEKDAYS[local.weekday()] not in self.days:
            return False
        return self.start <= local.strftime("%H:%M") < self.end


class MonitorSettings(_Model):
    """The `monitor:` section."""

    environment: str = Field(min_length=1, pattern=_ENVIRONMENT_PATTERN)
    listen: str = "127.0.0.1:9464"
    state_path: str = "var/depmon.sqlite3"
    significant_duration: Duration = 1800.0
    # Resolve only after the dependency stayed up this long: a blip inside the hold continues the
    # same incident (marked flapping) instead of resolving and opening a new one.
    resolve_hold: Duration = 120.0
    retention: Duration = 90 * 86400.0  # delivered events and closed incidents older than this are pruned
    # Probes of depmon's own reach (its forward proxy, a resolver, a known-good URL): when one is
    # down, dependency failures are depmon's, not theirs (SPEC 10.3).
    canaries: list[ProbeSpec] = Field(default_factory=list)
    # Outside these hours only sev-1 pages at full urgency (SPEC 10.5); none: always full urgency.
    business_hours: BusinessHours | None = None
    # Replicas (SPEC 10.6): a postgresql:// URL shares state between replicas (null: `state_path`,
    # SQLite, one replica). A secret: the URL may carry a password.
    state_url: SecretStr | None = None
    replica: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128, pattern=r"^[^\s]+$")
    quorum: int = Field(default=1, ge=1, le=64)  # replicas that must see a dependency down before it pages
    max_concurrent_probes: int = Field(default=200, ge=1)
    defaults: Timing = Field(default_factory=Timing)
    links: list[Link] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("state_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # `${DEPMON_STATE_URL:-}` unset: the embedded SQLite store
        check_postgresql_url(value.get_secret_value(), _STATE_URL)
        return value

    @model_validator(mode="after")
    def _quorum_needs_replicas(self) -> MonitorSettings:
        if self.quorum > 1 and self.state_url is None:
            raise ValueError(
                f"quorum: {self.quorum} needs replicas, which share state through monitor.state_url (postgresql://)"
            )
        return self

    @property
    def replicated(self) -> bool:
        """True when replicas share a PostgreSQL database (SPEC 10.6)."""
        return self.state_url is not None


_PD_ID = r"^[A-Z0-9]{2,20}$"  # a PagerDuty object id (PABC123)
_PD_ID_OR_EMPTY = r"^$|^[A-Z0-9]{2,20}$"
PagerDutyRef = Annotated[
    Annotated[str, Field(pattern=_PD_ID)] | None,
    BeforeValidator(_empty_is_none, json_schema_input_type=Annotated[str, Field(pattern=_PD_ID)] | _Blank | None),
]


class PagerDutySettings(_Model):
    """The `pagerduty:` section. Secrets are `SecretStr`: they print as `**********`."""

    routing_key: SecretStr = SecretStr("")
    events_url: SecureUrl = "https://events.pagerduty.com"
    api_token: SecretStr = SecretStr("")
    api_url: SecureUrl = "https://api.pagerduty.com"
    web_url: str = Field(default="https://dsva.pagerduty.com", pattern=_URL_PATTERN)
    maintenance_poll_interval: Duration = 180.0
    # PagerDuty's required `From` header on REST writes (a user's email address, not a secret):
    # `depmon maintenance open/close` refuse to run without it.
    from_email: str = Field(default="", pattern=r"^$|^[^@\s]+@[^@\s]+$")
    # The PagerDuty user responder requests are made as (SPEC 11.2); empty: none are made.
    requester_id: str = Field(default="", pattern=_PD_ID_OR_EMPTY)
    proxy: DestinationProxyUrl = None  # carries all PagerDuty traffic; unset: HTTPS_PROXY/HTTP_PROXY/NO_PROXY

    @field_validator("routing_key")
    @classmethod
    def _routing_key_length(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) != 32:
            raise ValueError("must be 32 characters (an Events API v2 integration key) or empty")
        return value


class Playbook(_Model):
    """A procedure from the seed's table."""

    title: str
    url: str = Field(pattern=_URL_PATTERN)


class Contact(_Model):
    """A person to notify; paged only when `pagerduty_user` is set (SPEC 11.2)."""

    role: str
    name: str
    via: str
    slack_user: SlackUserId = None  # mentioned when notified
    pagerduty_user: PagerDutyRef = None  # requested as a responder when notified


class Escalation(_Model):
    """Who is notified and which playbooks apply when escalation criteria hold."""

    notify: list[str] = Field(default_factory=list)
    security_notify: list[str] = Field(default_factory=list)
    security_playbooks: list[str] = Field(default_factory=list)
    # Attached when a postmortem is required (the Postmortem Repository and Template), and when
    # the dependency has paged before (the Mobile Incident Response Plays: "add it as a Play").
    postmortem_playbooks: list[str] = Field(default_factory=list)
    recurrence_playbooks: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)


VetsApiName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$", max_length=64)]
"""A node of vets-api's ServiceGraph: a Ruby symbol as the controller writes it (`lighthouse_vshe`)."""


class Dependency(_Model):
    """An external system the app depends on, with the probes that watch it."""

    name: str
    pagerduty_service: str | None = None
    docs: str | None = None
    channel: str | None = None
    # The owning team's policy, requested as responder once out-of-team coordination holds (SPEC 11.2).
    pagerduty_escalation_policy: PagerDutyRef = None
    playbooks: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    probes: list[ProbeSpec] = Field(min_length=1)
    # vets-api's ServiceGraph names for it (SPEC 11.1): [] reviewed, none; None not reviewed yet.
    # Never checked against `app_graph`: vets-api renames nodes, and a stale name is drift.
    vets_api: list[VetsApiName] | None = None

    @field_validator("pagerduty_service", mode="before")
    @classmethod
    def _empty_service_is_none(cls, value: object) -> object:
        return None if value == "" else value


class Feature(_Model):
    """An app feature and the dependencies or features it needs."""

    name: str
    requires: list[str] = Field(default_factory=list)
    any_of: list[str] = Field(default_factory=list)
    pagerduty_service: str | None = None
    userbase_share: float = Field(default=0.0, ge=0.0, le=1.0)
    playbooks: list[str] = Field(default_factory=list)

    @field_validator("pagerduty_service", mode="before")
    @classmethod
    def _empty_service_is_none(cls, value: object) -> object:
        return None if value == "" else value


class AppGraph(_Model):
    """`app_graph:` one vets-api ServiceGraph (the variant in force) as data (SPEC 11.1).

    `edges` are `[upstream, node]` pairs as the controller lists them; `pagerduty_services` maps
    upstreams that no dependency names to their PagerDuty service (empty: not polled).
    """

    source: str = Field(min_length=1)
    edges: list[tuple[VetsApiName, VetsApiName]] = Field(min_length=1)
    pagerduty_services: dict[VetsApiName, str | None] = Field(default_factory=dict)

    @field_validator("pagerduty_services", mode="after")
    @classmethod
    def _empty_service_is_none(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        return {name: service or None for name, service in value.items()}


class SlackSettings(_Model):
    """`slack:`: one incoming webhook per channel (SPEC 10.1); an empty URL skips that channel."""

    webhooks: dict[str, SecureSecretUrl] = Field(default_factory=dict)
    proxy: DestinationProxyUrl = None  # carries all Slack traffic; unset: HTTPS_PROXY/HTTP_PROXY/NO_PROXY

    def webhook(self, channel: str | None) -> str | None:
        """The webhook URL of a channel, or None when it has none (or an empty one)."""
        url = self.webhooks.get(channel or "")
        return url.get_secret_value() or None if url is not None else None


class Config(_Model):
    """The whole validated configuration."""

    monitor: MonitorSettings
    pagerduty: PagerDutySettings = Field(default_factory=PagerDutySettings)
    playbooks: dict[Id, Playbook] = Field(default_factory=dict)
    contacts: dict[Id, Contact] = Field(default_factory=dict)
    escalation: Escalation = Field(default_factory=Escalation)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    dependencies: dict[Id, Dependency] = Field(min_length=1)
    features: dict[Id, Feature] = Field(default_factory=dict)
    app_graph: AppGraph | None = None

    def timing(self, probe: _ProbeBase) -> Timing:
        """The effective timing of one probe."""
        return probe.timing(self.monitor.defaults)

    def iter_probes(self, disabled: bool = False) -> Iterator[tuple[str, AnyProbeSpec]]:
        """Every (dependency id, probe spec) pair of the enabled probes (all with `disabled`), in config order.

        Disabled probes run never and count for nothing: everything that schedules, judges or
        counts probes reads this without `disabled`.
        """
        for dep_id, dependency in self.dependencies.items():
            for probe in dependency.probes:
                if probe.enabled or disabled:
                    yield dep_id, probe

    def ancestors(self) -> dict[str, tuple[str, ...]]:
        """Each dependency's transitive `depends_on`, sorted (cycles were refused at load).

        Walking the `depends_on` edges upward from a dependency reaches exactly its ancestors.
        """
        parents = {dep_id: dep.depends_on for dep_id, dep in self.dependencies.items()}
        return {dep_id: tuple(sorted(ancestors(parents, [dep_id]))) for dep_id in parents}

    def service_owners(self) -> dict[str, list[str]]:
        """PagerDuty service id -> the dependency and feature ids whose windows it carries."""
        owners: dict[str, list[str]] = {}
        nodes: list[tuple[str, Dependency | Feature]] = [*self.dependencies.items(), *self.features.items()]
        for node_id, node in nodes:
            if node.pagerduty_service:
                owners.setdefault(node.pagerduty_service, []).append(node_id)
        return owners

    def secret_values(self) -> list[str]:
        """Every secret value in the config, to keep them out of outputs (non-empty only)."""
        secrets = [self.pagerduty.routing_key.get_secret_value(), self.pagerduty.api_token.get_secret_value()]
        secrets += [url.get_secret_value() for url in self.slack.webhooks.values()]
        secrets += [s for proxy in (self.pagerduty.proxy, self.slack.proxy) if proxy for s in url_passwords(proxy)]
        if self.monitor.state_url is not None:
            secrets += conninfo_passwords(self.monitor.state_url.get_secret_value())
        for _, probe in self.iter_probes(disabled=True):
            if isinstance(probe, DatadogProbeSpec):
                secrets += [probe.api_key.get_secret_value(), probe.app_key.get_secret_value()]
            if isinstance(probe, PrometheusProbeSpec):
                secrets += [v for k, v in probe.headers.items() if _SECRET_HEADER.search(k)]
            if isinstance(probe, OAuth2ProbeSpec):
                secrets += [probe.client_id.get_secret_value(), probe.client_secret.get_secret_value()]
            if isinstance(probe, HttpProbeSpec):
                # Credentials given as headers (`Authorization: Basic ...`, `X-Api-Key: ...`).
                secrets += [v for k, v in probe.headers.items() if _SECRET_HEADER.search(k)]
            if isinstance(probe, HttpProbeSpec | OAuth2ProbeSpec) and probe.proxy:
                secrets += url_passwords(probe.proxy)
        return [s for s in dict.fromkeys(secrets) if s]


_SECRET_HEADER = re.compile(r"auth|token|key|secret|cookie|password", re.IGNORECASE)
