"""`depmon validate --strict`: what a deployment cannot work with, though a config may hold it.

1. Secrets a deployment cannot work without. A config may leave them empty and stay valid: the
   demo, the tests and a dry run that only records pages in the outbox all do. A deployment
   cannot: without the routing key no page leaves, without the API token no maintenance window is
   read, without the OAuth client no token is issued and every dependency that needs it looks down;
   without `from_email` and `requester_id` escalation reaches nobody (SPEC 11.2).
2. A production config that watches or links non-production hosts (SPEC 11.5): with
   `monitor.environment: production`, a host with a development, integration, staging, sandbox or
   test label (`non_production_label`) in a probe's target, a canary, a page link, a dependency's
   docs, a playbook or a PagerDuty address: production would page on, or send responders to,
   another environment.
3. Page links pinned to a fixed time range (`pinned_range`), in any environment: a responder
   would open the dashboard on a past range instead of the incident's.

A CI deploy gates on `--strict`, which reports each as `FILE: key.path: message`, naming the
environment variable that fills the value where there is one (read from the files as written,
before substitution), and never a secret's value: of a URL, only its host is said.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr

from monitor.config import (
    AnyProbeSpec,
    Config,
    ConfigIssue,
    DnsProbeSpec,
    HttpProbeSpec,
    OAuth2ProbeSpec,
    SignalProbeBase,
    TcpProbeSpec,
    TlsProbeSpec,
    _read_documents,
)

__all__ = [
    "NON_PRODUCTION_WORDS",
    "check_strict",
    "environment_issues",
    "non_production_label",
    "pinned_range",
    "required_secret_issues",
]

Loc = tuple[str | int, ...]

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def check_strict(path: Path, config: Config) -> list[ConfigIssue]:
    """The `--strict` issues of the config at `path`, already loaded (valid) as `config`: the
    empty secrets first, then the hosts and links, each in config order."""
    document, origins = _read_documents(path)

    def file_for(loc: Loc) -> str:
        return origins.file_for(loc, str(path))

    return required_secret_issues(config, document, file_for) + environment_issues(config, document, file_for)


def required_secret_issues(
    config: Config, document: Mapping[str, Any], file_for: Callable[[Loc], str]
) -> list[ConfigIssue]:
    """One issue for every required secret that is empty, in config order.

    `document` is the merged YAML before substitution (where the `${VAR}` names stand) and
    `file_for` names the file a key path comes from.
    """
    issues = []
    for loc, secret in _required_secrets(config):
        if secret.get_secret_value():
            continue
        variable = _variable_at(document, loc)
        fix = f"set {variable}" if variable else "set it from an environment variable (${VAR}), never in the file"
        issues.append(ConfigIssue(file_for(loc), _key_path(loc), f"required secret is empty: {fix} (--strict)"))
    # Not secrets, but escalation cannot reach people without them (SPEC 11.2).
    for loc, value, without in _required_values(config):
        if value:
            continue
        variable = _variable_at(document, loc)
        fix = f"set {variable}" if variable else "set it"
        issues.append(ConfigIssue(file_for(loc), _key_path(loc), f"empty: {without}; {fix} (--strict)"))
    return issues


def _required_values(config: Config) -> Iterator[tuple[Loc, str, str]]:
    pd = config.pagerduty
    yield ("pagerduty", "from_email"), pd.from_email, "no responder request, note or urgency is written to PagerDuty"
    yield ("pagerduty", "requester_id"), pd.requester_id, "no responder request is made"


def _required_secrets(config: Config) -> Iterator[tuple[Loc, SecretStr]]:
    yield ("pagerduty", "routing_key"), config.pagerduty.routing_key
    yield ("pagerduty", "api_token"), config.pagerduty.api_token
    for dep_id, dependency in config.dependencies.items():
        for index, probe in enumerate(dependency.probes):
            if isinstance(probe, OAuth2ProbeSpec):
                yield ("dependencies", dep_id, "probes", index, "client_id"), probe.client_id
                yield ("dependencies", dep_id, "probes", index, "client_secret"), probe.client_secret


def _variable_at(document: Mapping[str, Any], loc: Loc) -> str | None:
    """The first `${VAR}` named by the raw value at `loc`, None when there is none (or no value)."""
    node: Any = document
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):  # absent, or not a mapping or list there
            return None
    match = _VARIABLE.search(node) if isinstance(node, str) else None
    return match.group(1) if match else None


# The labels that name a development, integration, staging, sandbox or test system (SPEC 11.5).
NON_PRODUCTION_WORDS = ("dev", "int", "staging", "stg", "sandbox", "sqa", "test")
PRODUCTION = "production"


def non_production_label(host: str) -> str | None:
    """The non-production word one of `host`'s DNS labels carries, None when none does.

    Labels are compared without case. A label carries a word (`NON_PRODUCTION_WORDS`) when it
    - is the word: `int.vaprofile.va.gov`, `api.staging.va.gov`, `sqa.eauth.va.gov`;
    - starts with the word and a hyphen: `dev-api.va.gov`, `staging-fwdproxy.vfs.va.gov`;
    - ends with a hyphen and the word: `api-test.va.gov`, `vets-api-int.example.gov`.
    A word run into a longer label is another word, not an environment: `developer.va.gov`,
    `internal.va.gov`, `contest.gov`, `devops.example.gov`, `stg2.example.gov`, `testing.gov`.
    An IP address has no such label.
    """
    for label in host.lower().rstrip(".").split("."):
        for word in NON_PRODUCTION_WORDS:
            if label == word or label.startswith(f"{word}-") or label.endswith(f"-{word}"):
                return word
    return None


def pinned_range(url: str) -> list[str]:
    """The query parameters of `url` that pin it to a fixed time range, in URL order; empty when none do.

    `from_ts` and `to_ts` (DataDog: always absolute), and `from` and `to` whose value starts with a
    digit (Grafana: `from=1640615800322` or a date is absolute, `from=now-6h` is relative and stays).
    """
    pinned = []
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key in ("from_ts", "to_ts") or (key in ("from", "to") and value[:1].isdigit()):
            pinned.append(key)
    return list(dict.fromkeys(pinned))


def environment_issues(
    config: Config, document: Mapping[str, Any], file_for: Callable[[Loc], str]
) -> list[ConfigIssue]:
    """The hosts a production config must not name and the links pinned to a time range, in config order.

    `document` and `file_for` as for `required_secret_issues`.
    """
    issues = []
    production = config.monitor.environment.lower() == PRODUCTION
    for loc, host, link in _addresses(config):
        word = non_production_label(host) if production else None
        variable = _variable_at(document, loc)
        if word is not None:
            fix = f"set {variable} to the production address" if variable else "point it at production"
            message = f"host {host} has a non-production label ({word}) while monitor.environment is production"
            issues.append(ConfigIssue(file_for(loc), _key_path(loc), f"{message}: {fix} (--strict)"))
        pinned = pinned_range(link) if link is not None else []
        if pinned:
            message = f"link pinned to a fixed time range ({', '.join(pinned)})"
            fix = "drop them, so that it opens on the present"
            issues.append(ConfigIssue(file_for(loc), _key_path(loc), f"{message}: {fix} (--strict)"))
    return issues


def _addresses(config: Config) -> Iterator[tuple[Loc, str, str | None]]:
    """(key path, host, the URL when a page links it) of every address depmon reaches or links.

    Not the Slack webhooks nor `state_url`: secrets, whose hosts are Slack's and the database's.
    """
    pd = config.pagerduty
    yield ("pagerduty", "events_url"), _host(pd.events_url), None
    yield ("pagerduty", "api_url"), _host(pd.api_url), None
    yield ("pagerduty", "web_url"), _host(pd.web_url), pd.web_url
    for index, canary in enumerate(config.monitor.canaries):
        yield _probe_address(("monitor", "canaries", index), canary)
    for index, link in enumerate(config.monitor.links):
        yield ("monitor", "links", index, "href"), _host(link.href), link.href
    for playbook_id, playbook in config.playbooks.items():
        yield ("playbooks", playbook_id, "url"), _host(playbook.url), playbook.url
    for dep_id, dependency in config.dependencies.items():
        if dependency.docs:
            yield ("dependencies", dep_id, "docs"), _host(dependency.docs), dependency.docs
        for index, probe in enumerate(dependency.probes):
            if probe.enabled:  # a disabled probe reaches nothing
                yield _probe_address(("dependencies", dep_id, "probes", index), probe)


def _probe_address(loc: Loc, probe: AnyProbeSpec) -> tuple[Loc, str, None]:
    """The target of a probe: its URL's host, or its `host`."""
    if isinstance(probe, HttpProbeSpec):
        return (*loc, "url"), _host(probe.url), None
    if isinstance(probe, OAuth2ProbeSpec):
        return (*loc, "token_url"), _host(probe.token_url), None
    if isinstance(probe, SignalProbeBase):  # the metrics backend it asks
        return (*loc, "url"), _host(probe.url), None
    assert isinstance(probe, TlsProbeSpec | TcpProbeSpec | DnsProbeSpec)
    return (*loc, "host"), probe.host, None


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # a URL the parser refuses (an unclosed IPv6 bracket) names no label
        return ""


def _key_path(loc: Loc) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
