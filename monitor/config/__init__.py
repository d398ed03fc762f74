"""Configuration: YAML files -> frozen, validated models; every error is `FILE: key.path: message`.

- `models`: the pydantic models (`Config` and what it holds), the probe kinds (`PROBE_KINDS`);
- `loading`: reading the YAML (bounded), `${VAR}` substitution, `load_config`;
- `references`: the rules that span several keys (ids, cycles, timeouts, the routing key);
- `errors`: `ConfigIssue`, `ConfigError`, and pydantic's errors in those words.

Nothing can fail for config reasons once `load_config` has returned.

Exceptions::

    ConfigError (DepmonError)   every problem found, as `issues`

This module re-exports what the rest of depmon uses from `monitor.config`: the models' public
classes, the loading functions and the errors.
"""

from __future__ import annotations

from monitor.config.loading import _read_documents, bundled_config_path, default_config_path, load_config
from monitor.config.models import (
    PROBE_KINDS,
    SIGNAL_KINDS,
    AnyProbeSpec,
    AppGraph,
    BusinessHours,
    Config,
    Contact,
    DatadogProbeSpec,
    Dependency,
    DnsProbeSpec,
    Escalation,
    Expect,
    Feature,
    HttpProbeSpec,
    JsonCondition,
    Link,
    MonitorSettings,
    OAuth2ProbeSpec,
    PagerDutySettings,
    Playbook,
    PrometheusProbeSpec,
    SignalProbeBase,
    SignalProbeSpec,
    SlackSettings,
    TcpProbeSpec,
    Timing,
    TlsProbeSpec,
)
from monitor.errors import ConfigError, ConfigIssue
from monitor.state.graph import find_cycle
from monitor.text import format_duration, parse_duration

__all__ = [
    "PROBE_KINDS",
    "SIGNAL_KINDS",
    "AnyProbeSpec",
    "AppGraph",
    "BusinessHours",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Contact",
    "DatadogProbeSpec",
    "Dependency",
    "DnsProbeSpec",
    "Escalation",
    "Expect",
    "Feature",
    "HttpProbeSpec",
    "JsonCondition",
    "Link",
    "MonitorSettings",
    "OAuth2ProbeSpec",
    "PagerDutySettings",
    "Playbook",
    "PrometheusProbeSpec",
    "SignalProbeBase",
    "SignalProbeSpec",
    "SlackSettings",
    "TcpProbeSpec",
    "Timing",
    "TlsProbeSpec",
    "_read_documents",
    "bundled_config_path",
    "default_config_path",
    "find_cycle",
    "format_duration",
    "load_config",
    "parse_duration",
]
