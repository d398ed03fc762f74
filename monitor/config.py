"""Configuration: YAML files -> frozen, validated models.

Loading happens in three steps, each reporting every problem it finds as a `ConfigIssue`
(`FILE: key.path: message`):

1. read one YAML file or every `*.yaml` of a directory, merged by top-level key;
2. substitute `${VAR}` and `${VAR:-default}` from the environment in string values;
3. validate: pydantic for keys, types and ranges (unknown keys are errors), then the
   cross-reference rules (unknown ids, cycles, duplicate probe names, timeouts, routing key).

Nothing can fail for config reasons once `load_config` has returned. Error messages never
contain the value that was given: it may be a secret substituted from the environment. The one
exception is a reference to an unknown id, which names that id.

Exceptions::

    ConfigError            every problem found, as `issues`
"""

from __future__ import annotations

import os
import re
import socket
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.errors import DepmonError
from monitor.graph import ancestors, find_cycle
from monitor.text import format_duration as format_duration  # re-exported: the probes and CLIs import it from here
from monitor.text import parse_duration as parse_duration
from monitor.text import parse_host_port

# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One configuration problem, located by file and key path."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class ConfigError(DepmonError):
    """The configuration is invalid; `issues` lists every problem found."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


# ---------------------------------------------------------------------------------------------
# Value types

Duration = Annotated[float, BeforeValidator(parse_duration)]
_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_URL_PATTERN = r"^https?://"
_ENVIRONMENT_PATTERN = r"^[A-Za-z0-9._-]+$"
Id = Annotated[str, Field(pattern=_ID_PATTERN, max_length=64)]


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
    proxy: str | None = None
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


ProbeSpec = Annotated[
    HttpProbeSpec | OAuth2ProbeSpec | TlsProbeSpec | TcpProbeSpec | DnsProbeSpec,
    Field(discriminator="kind"),
]
PROBE_KINDS = ("http", "oauth2", "tls", "tcp", "dns")


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
        if urlsplit(value.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL (or null for the SQLite file at state_path)")
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


class PagerDutySettings(_Model):
    """The `pagerduty:` section. Secrets are `SecretStr`: they print as `**********`."""

    routing_key: SecretStr = SecretStr("")
    events_url: str = Field(default="https://events.pagerduty.com", pattern=_URL_PATTERN)
    api_token: SecretStr = SecretStr("")
    api_url: str = Field(default="https://api.pagerduty.com", pattern=_URL_PATTERN)
    web_url: str = Field(default="https://dsva.pagerduty.com", pattern=_URL_PATTERN)
    maintenance_poll_interval: Duration = 180.0
    # PagerDuty's required `From` header on REST writes (a user's email address, not a secret):
    # `depmon maintenance open/close` refuse to run without it.
    from_email: str = Field(default="", pattern=r"^$|^[^@\s]+@[^@\s]+$")

    @field_validator("events_url", "api_url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        # Keys and tokens travel in these requests: clear text is only acceptable on this machine.
        host = value.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
        if value.startswith("http://") and host not in ("127.0.0.1", "localhost", "[::1]"):
            raise ValueError("must be https:// (http:// only for 127.0.0.1, for tests)")
        return value

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
    """A person to notify (never paged directly)."""

    role: str
    name: str
    via: str


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


class Dependency(_Model):
    """An external system the app depends on, with the probes that watch it."""

    name: str
    pagerduty_service: str | None = None
    docs: str | None = None
    channel: str | None = None
    playbooks: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    probes: list[ProbeSpec] = Field(min_length=1)

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


class SlackSettings(_Model):
    """`slack:`: one incoming webhook per channel (SPEC 10.1); an empty URL skips that channel."""

    webhooks: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("webhooks")
    @classmethod
    def _https_or_loopback(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # A webhook URL is a credential: clear text only on this machine.
        for channel, url in value.items():
            text = url.get_secret_value()
            if not text:
                continue
            host = text.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
            loopback = text.startswith("http://") and host in ("127.0.0.1", "localhost", "[::1]")
            if not (text.startswith("https://") or loopback):
                raise ValueError(f"{channel}: must be an https:// URL (http:// only for 127.0.0.1, for tests)")
        return value

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

    def timing(self, probe: _ProbeBase) -> Timing:
        """The effective timing of one probe."""
        return probe.timing(self.monitor.defaults)

    def iter_probes(self) -> Iterator[tuple[str, AnyProbeSpec]]:
        """Every (dependency id, probe spec) pair, in config order."""
        for dep_id, dependency in self.dependencies.items():
            for probe in dependency.probes:
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
        if self.monitor.state_url is not None:
            secrets.append(urlsplit(self.monitor.state_url.get_secret_value()).password or "")
        for _, probe in self.iter_probes():
            if isinstance(probe, OAuth2ProbeSpec):
                secrets += [probe.client_id.get_secret_value(), probe.client_secret.get_secret_value()]
            if isinstance(probe, HttpProbeSpec):
                # Credentials given as headers (`Authorization: Basic ...`, `X-Api-Key: ...`).
                secrets += [v for k, v in probe.headers.items() if _SECRET_HEADER.search(k)]
            if isinstance(probe, HttpProbeSpec | OAuth2ProbeSpec) and probe.proxy:
                secrets.append(urlsplit(probe.proxy).password or "")
        return [s for s in dict.fromkeys(secrets) if s]


_SECRET_HEADER = re.compile(r"auth|token|key|secret|cookie|password", re.IGNORECASE)

AnyProbeSpec = HttpProbeSpec | OAuth2ProbeSpec | TlsProbeSpec | TcpProbeSpec | DnsProbeSpec


# ---------------------------------------------------------------------------------------------
# Loading


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Bounds that a hostile or broken config meets before any object is built (issue 11). The bundled
# config is 810 nodes in 31 KB; the largest depmon is sized for (10,000 dependencies, `depmon
# bench`) is about 192,000 nodes in 2 MB. The YAML parser is pure Python (a 1 MB flat list of
# 500,000 numbers took 54 s and 377 MB), so the node budget is what bounds a load's time and memory.
MAX_CONFIG_FILE_BYTES = 8 * 1024 * 1024
MAX_NESTING = 64
MAX_NODES = 250_000  # per file, aliases expanded
MAX_ALIAS_NODES = 10_000
_LOC_SHOWN = 8  # key path parts named in a refusal (a 64-deep path says nothing more)


class _Refused(Exception):
    """A YAML document refused while composing: where (a key path) and why."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


try:  # libyaml's scanner and parser, when PyYAML was built with it
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _CParser = None  # type: ignore[assignment,misc]


class _BoundedLoader(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """A safe loader that refuses YAML bombs while composing the node graph, before objects exist.

    Each alias counts the nodes it expands to (aliases inside the aliased node included) against
    one budget per file, so a "billion laughs" stops at its first expensive level; every node,
    aliases expanded, counts against a larger budget, so a huge flat list stops early too; nesting,
    aliases expanded, is bounded in depth (a RecursionError is never reached); an alias inside its
    own anchor (a recursive structure) is refused.

    The events come from libyaml's scanner and parser when PyYAML has it (about 6 times faster
    than the pure-Python ones on a large file), else from PyYAML's own; composing and
    constructing are PyYAML's safe ones either way.
    """

    def __init__(self, stream: str) -> None:
        self._events: Any = _CParser(stream) if _CParser is not None else yaml.SafeLoader(stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._loc: list[str | int] = []
        self._open_anchors: set[str] = set()
        self._alias_nodes = 0
        self._nodes = 0
        self._extents: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height), aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # `index` is a position in a sequence, or the key node of a mapping value (None for a key).
        part = _loc_part(parent, index)
        if part is not None:
            self._loc.append(part)
        try:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                self._count_alias(event)
                return super().compose_node(parent, index)
            if len(self._loc) >= MAX_NESTING:
                raise self._refuse(event, f"nested deeper than {MAX_NESTING} levels")
            self._count_nodes(event, 1)
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                self._open_anchors.add(anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                self._open_anchors.discard(anchor)
        finally:
            if part is not None:
                self._loc.pop()

    # The event source the composer reads.
    def check_event(self, *choices: type[yaml.Event]) -> bool:
        return bool(self._events.check_event(*choices))

    def peek_event(self) -> yaml.Event:
        return self._events.peek_event()  # type: ignore[no-any-return]

    def get_event(self) -> yaml.Event:
        return self._events.get_event()  # type: ignore[no-any-return]

    def dispose(self) -> None:
        self._events.dispose()

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        if event.anchor in self._open_anchors:
            raise self._refuse(event, f"alias *{event.anchor} is inside its own anchor (a recursive structure)")
        node = self.anchors.get(event.anchor)
        if node is None:
            return  # the composer reports the undefined alias
        nodes, height = self._extent(node)
        self._count_nodes(event, nodes)
        self._alias_nodes += nodes
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise self._refuse(event, f"aliases expand to more than {MAX_ALIAS_NODES} nodes (a YAML alias bomb)")
        if len(self._loc) + height > MAX_NESTING:
            raise self._refuse(event, f"nested deeper than {MAX_NESTING} levels once alias *{event.anchor} is expanded")

    def _count_nodes(self, event: yaml.Event, nodes: int) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise self._refuse(event, f"more than {MAX_NODES} values in one file")

    def _extent(self, node: yaml.Node) -> tuple[int, int]:
        """Nodes and height of a composed node with its aliases expanded (memoised: aliases share nodes)."""
        known = self._extents.get(id(node))
        if known is not None:
            return known
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        nodes, height = 1, 0
        for child in children:
            child_nodes, child_height = self._extent(child)
            nodes, height = nodes + child_nodes, max(height, child_height)
        self._extents[id(node)] = extent = (nodes, height + 1)
        return extent

    def _refuse(self, event: yaml.Event, message: str) -> _Refused:
        mark = event.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return _Refused(tuple(self._loc[:_LOC_SHOWN]), where + message)  # the line says exactly where


def _loc_part(parent: yaml.Node | None, index: object) -> str | int | None:
    """The key path part of a node being composed: its mapping key or sequence index (None for a key)."""
    if isinstance(parent, yaml.SequenceNode) and isinstance(index, int):
        return index
    if isinstance(parent, yaml.MappingNode) and isinstance(index, yaml.Node):
        return str(index.value) if isinstance(index, yaml.ScalarNode) else "?"
    return None


def _load_yaml(file: Path) -> Any:
    """One file's YAML document, bounded in size, aliases and nesting; raises ConfigError naming the file."""
    try:
        too_big = file.stat().st_size > MAX_CONFIG_FILE_BYTES
        text = "" if too_big else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(file), "", f"cannot read: {exc.__class__.__name__}")]) from None
    if too_big:
        raise ConfigError([ConfigIssue(str(file), "", f"larger than {MAX_CONFIG_FILE_BYTES // 1024 // 1024} MiB")])
    try:
        loader = _BoundedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError([ConfigIssue(str(file), _format_loc(exc.loc), exc.message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([ConfigIssue(str(file), "", f"{where}{problem}")]) from None
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError
        # A value the constructors cannot build (an integer of 5,000 digits: ValueError; an empty
        # `!!timestamp`: AttributeError): a problem of this file, never a traceback.
        raise ConfigError([ConfigIssue(str(file), "", f"a value cannot be built ({exc.__class__.__name__})")]) from None


class _Origins:
    """Which file each part of the merged document came from, for error messages."""

    def __init__(self) -> None:
        self._top: dict[str, str] = {}
        self._entries: dict[tuple[str, str], str] = {}

    def record(self, file: str, top: str, value: object) -> None:
        self._top.setdefault(top, file)
        if isinstance(value, dict):
            for key in value:
                self._entries.setdefault((top, str(key)), file)

    def file_for(self, path: tuple[str | int, ...], default: str) -> str:
        if len(path) >= 2 and (str(path[0]), str(path[1])) in self._entries:
            return self._entries[(str(path[0]), str(path[1]))]
        if path and str(path[0]) in self._top:
            return self._top[str(path[0])]
        return default


def bundled_config_path() -> Path:
    """The bundled VA mobile configuration (the repository's `config/`, installed as package data)."""
    return Path(str(resources.files("monitor.bundled")))


def default_config_path(environ: Mapping[str, str]) -> Path:
    """`$DEPMON_CONFIG`, else the bundled configuration."""
    return Path(environ["DEPMON_CONFIG"]) if environ.get("DEPMON_CONFIG") else bundled_config_path()


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate the configuration at `path` (a file or a directory).

    Raises ConfigError and nothing else: whatever a file holds, the answer is a config or its errors.
    """
    environ = os.environ if environ is None else environ
    try:
        return _load(path, environ)
    except (OSError, RecursionError, MemoryError) as exc:  # the last wall: the daemon's reload must survive
        raise ConfigError([ConfigIssue(str(path), "", f"cannot be loaded: {exc.__class__.__name__}")]) from None


def _load(path: Path, environ: Mapping[str, str]) -> Config:
    document, origins = _read_documents(path)
    issues: list[ConfigIssue] = []
    document = _substitute(document, environ, (), origins, str(path), issues)
    if issues:
        raise ConfigError(issues)
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_pydantic_issues(exc, origins, str(path))) from None
    issues = [
        ConfigIssue(origins.file_for(loc, str(path)), _format_loc(loc), message)
        for loc, message in check_references(config)
    ]
    if issues:
        raise ConfigError(issues)
    return config


def _read_documents(path: Path) -> tuple[dict[str, Any], _Origins]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise ConfigError([ConfigIssue(str(path), "", "no *.yaml files in this directory")])
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError([ConfigIssue(str(path), "", "no such file or directory")])

    merged: dict[str, Any] = {}
    origins = _Origins()
    issues: list[ConfigIssue] = []
    for file in files:
        try:
            data = _load_yaml(file)
        except ConfigError as exc:
            issues += exc.issues
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            issues.append(ConfigIssue(str(file), "", "must be a mapping of top-level keys"))
            continue
        for top, value in data.items():
            top = str(top)
            if top not in merged:
                merged[top] = value
            elif isinstance(merged[top], dict) and isinstance(value, dict):
                for key in value:
                    if key in merged[top]:
                        first = origins.file_for((top, str(key)), str(file))
                        issues.append(ConfigIssue(str(file), f"{top}.{key}", f"already defined in {first}"))
                merged[top] = {**merged[top], **value}
            else:
                issues.append(ConfigIssue(str(file), top, f"already defined in {origins.file_for((top,), '')}"))
            origins.record(str(file), top, value)
    if issues:
        raise ConfigError(issues)
    return merged, origins


def _substitute(
    value: Any,
    environ: Mapping[str, str],
    loc: tuple[str | int, ...],
    origins: _Origins,
    default_file: str,
    issues: list[ConfigIssue],
) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None:  # shell semantics: `:-` also replaces a variable set but empty
                return environ.get(name) or default
            if name in environ:
                return environ[name]
            issues.append(
                ConfigIssue(
                    origins.file_for(loc, default_file),
                    _format_loc(loc),
                    f"environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                )
            )
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, environ, (*loc, str(k)), origins, default_file, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, environ, (*loc, i), origins, default_file, issues) for i, v in enumerate(value)]
    return value


def _format_loc(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pydantic_issues(exc: ValidationError, origins: _Origins, default_file: str) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = list(error["loc"])
        # A discriminated union puts the chosen tag into the location (`probes.0.http.url`): drop it.
        loc = [
            part for i, part in enumerate(loc) if not (part in PROBE_KINDS and i > 0 and isinstance(loc[i - 1], int))
        ]
        # A dict key that fails its pattern is located at `(..., key, "[key]")`: the key names it.
        if loc and loc[-1] == "[key]":
            loc.pop()
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
        issues.append(ConfigIssue(origins.file_for(tuple(loc), default_file), _format_loc(loc), _message(error)))
    return issues


_PATTERN_MESSAGES = {
    _ID_PATTERN: "must be an id: lowercase letters, digits, '-' and '_', starting with a letter or digit",
    _URL_PATTERN: "must be an http:// or https:// URL",
    _ENVIRONMENT_PATTERN: "must be letters, digits, '.', '_' and '-'",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"unknown probe kind; known kinds: {', '.join(PROBE_KINDS)}"
    if kind == "union_tag_not_found":
        return f"required key is missing; known kinds: {', '.join(PROBE_KINDS)}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return _PATTERN_MESSAGES.get(pattern, f"does not match the expected form {pattern}")
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} entry" + ("" if ctx.get("min_length") == 1 else "s")
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"]).replace("Value error, ", "")


# ---------------------------------------------------------------------------------------------
# Cross-reference rules

Loc = tuple[str | int, ...]


def check_references(config: Config) -> list[tuple[Loc, str]]:
    """The rules that span several keys; returns (location, message) pairs, empty when valid."""
    problems: list[tuple[Loc, str]] = []
    deps, features = config.dependencies, config.features
    nodes = set(deps) | set(features)

    def known(ids: list[str], pool: Iterable[str], loc: Loc, what: str) -> None:
        pool = set(pool)
        for i, ident in enumerate(ids):
            if ident not in pool:
                problems.append(((*loc, i), f"unknown {what} {ident!r}"))

    for key in ("notify", "security_notify"):
        known(getattr(config.escalation, key), config.contacts, ("escalation", key), "contact")
    for key in ("security_playbooks", "postmortem_playbooks", "recurrence_playbooks"):
        known(getattr(config.escalation, key), config.playbooks, ("escalation", key), "playbook")

    oauth_probes = {
        f"{dep_id}/{probe.name}" for dep_id, probe in config.iter_probes() if isinstance(probe, OAuth2ProbeSpec)
    }
    defaults = config.monitor.defaults
    if defaults.timeout >= defaults.interval:
        problems.append((("monitor", "defaults", "timeout"), _timeout_message(defaults, None)))
    for dep_id, dep in deps.items():
        base: Loc = ("dependencies", dep_id)
        known(dep.playbooks, config.playbooks, (*base, "playbooks"), "playbook")
        known(dep.depends_on, deps, (*base, "depends_on"), "dependency")
        seen: set[str] = set()
        for i, probe in enumerate(dep.probes):
            loc: Loc = (*base, "probes", i)
            if probe.name in seen:
                problems.append(((*loc, "name"), f"duplicate probe name {probe.name!r} in this dependency"))
            seen.add(probe.name)
            timing = probe.timing(defaults)
            if (probe.timeout is not None or probe.interval is not None) and timing.timeout >= timing.interval:
                key = "timeout" if probe.timeout is not None else "interval"
                problems.append(((*loc, key), _timeout_message(timing, probe)))
            if isinstance(probe, HttpProbeSpec) and probe.bearer_from is not None:
                owner = probe.bearer_from.split("/", 1)[0]
                if probe.bearer_from not in oauth_probes:
                    problems.append(
                        ((*loc, "bearer_from"), f"unknown oauth2 probe {probe.bearer_from!r} (DEPENDENCY/PROBE)")
                    )
                elif owner != dep_id and owner not in dep.depends_on:
                    problems.append(
                        ((*loc, "bearer_from"), f"{owner!r} must be listed in this dependency's depends_on")
                    )
            if isinstance(probe, HttpProbeSpec | OAuth2ProbeSpec) and (probe.client_cert is None) != (
                probe.client_key is None
            ):
                problems.append(((*loc, "client_key"), "client_cert and client_key go together"))

    for feat_id, feat in features.items():
        base = ("features", feat_id)
        known(feat.requires, nodes, (*base, "requires"), "dependency or feature")
        known(feat.any_of, nodes, (*base, "any_of"), "dependency or feature")
        known(feat.playbooks, config.playbooks, (*base, "playbooks"), "playbook")
        if feat_id in deps:
            problems.append((base, f"{feat_id!r} is already a dependency id"))

    graph = {d: list(dep.depends_on) for d, dep in deps.items()}
    graph.update({f: [*feat.requires, *feat.any_of] for f, feat in features.items() if f not in deps})
    cycle = find_cycle(graph)
    if cycle:
        section = "dependencies" if cycle[0] in deps else "features"
        if section == "dependencies":
            key = "depends_on"
        else:
            key = "requires" if cycle[1] in features[cycle[0]].requires else "any_of"
        problems.append(((section, cycle[0], key), f"cycle: {' -> '.join(cycle)}"))
    return problems


def _timeout_message(timing: Timing, probe: _ProbeBase | None) -> str:
    """`timeout (10s) must be shorter than the interval (5s)`, saying which value is inherited."""

    def value(key: str) -> str:
        inherited = probe is not None and getattr(probe, key) is None
        return format_duration(getattr(timing, key)) + (" from monitor.defaults" if inherited else "")

    return f"timeout ({value('timeout')}) must be shorter than the interval ({value('interval')})"
