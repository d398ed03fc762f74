"""Which forward proxy, if any, carries depmon's own traffic to PagerDuty and Slack (SPEC 11.5).

    ProxyEnvironment.from_environ(environ)   HTTPS_PROXY / HTTP_PROXY / NO_PROXY, read and checked once
    ProxyEnvironment.proxy_for(url, setting) the proxy URL for one destination URL, or None (direct)
    ProxyEnvironment.link(url, setting)      that proxy as a `Link`: what a client is built with
    Link(proxy, verify)                      a client's proxy and TLS trust

The rules, in order:

1. a destination's own setting (`pagerduty.proxy`, `slack.proxy`) carries all of its traffic;
2. otherwise `HTTPS_PROXY` carries https:// URLs and `HTTP_PROXY` http:// ones, unless the URL's
   host is listed in `NO_PROXY`;
3. otherwise the request goes direct.

The variables are read as curl and Python's `urllib` read them: the lower-case name first
(`https_proxy`), then the upper-case one; an empty value is unset; a value without a scheme
(`proxy.va.gov:3128`) is an http:// proxy. `NO_PROXY` is a comma-separated list of `*` (every
host), host names (which also cover their subdomains; a leading `.` or `*.` is ignored), IP
addresses and CIDR ranges (`10.0.0.0/8`), each optionally with `:PORT`. Loopback is not exempt
by itself, as with httpx and curl: list `127.0.0.1,localhost` in `NO_PROXY` for that.

The environment is passed in (the daemon's `environ`), never read from `os.environ` here.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from monitor.errors import ConfigError, ConfigIssue
from monitor.urls import check_url, url_passwords

__all__ = [
    "DIRECT",
    "NO_PROXY_VARIABLES",
    "PROXY_SCHEMES",
    "PROXY_URL_FORM",
    "PROXY_VARIABLES",
    "Link",
    "ProxyEnvironment",
    "check_proxy_url",
]

PROXY_SCHEMES = ("http", "https")  # what httpx(2) tunnels without extra packages (SOCKS needs socksio)
PROXY_URL_FORM = "an http:// or https:// URL (a forward proxy)"
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_proxy_url(url: str) -> str:
    """`url` when it is a usable forward proxy URL (credentials allowed); ValueError without it in the message."""
    check_url(url, PROXY_SCHEMES, PROXY_URL_FORM, userinfo=True)
    return url


@dataclass(frozen=True, slots=True)
class Link:
    """How a client reaches a destination: through `proxy` (a forward proxy URL), or direct when
    None, trusting the certificates `verify` trusts (True: the system's; tests pass their CA's)."""

    proxy: str | None = None
    verify: ssl.SSLContext | bool = True


@dataclass(frozen=True, slots=True)
class _Bypass:
    """One `NO_PROXY` entry."""

    host: str = ""  # a host name (matches its subdomains too) or an IP address
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> _Bypass:
        text = entry.strip().lower()
        port: int | None = None
        host, colon, tail = text.rpartition(":")
        if colon and tail.isdigit() and (not host.count(":") or host.endswith("]")):
            text, port = host, int(tail)  # `host:port` or `[v6]:port`, not a bare IPv6 address
        text = text.removeprefix("[").removesuffix("]").removeprefix("*.").removeprefix(".")
        try:
            return cls(network=ipaddress.ip_network(text, strict=False), port=port)
        except ValueError:
            return cls(host=text, port=port)

    def covers(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.host or host.endswith("." + self.host)


@dataclass(frozen=True, slots=True)
class ProxyEnvironment:
    """The proxy variables of one environment, checked; `proxy_for` applies them (see the module docstring)."""

    https_proxy: str | None = None
    http_proxy: str | None = None
    no_proxy: tuple[_Bypass, ...] = ()
    bypass_all: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyEnvironment:
        """The variables read from `environ`.

        `ConfigError` (`environment: HTTPS_PROXY: message`) when a proxy URL is unusable.
        """
        issues: list[ConfigIssue] = []
        proxies: dict[str, str | None] = {}
        for name in ("HTTPS_PROXY", "HTTP_PROXY"):
            value = _variable(environ, name)
            if value and "://" not in value:
                value = f"http://{value}"  # curl's and httpx's reading of `host:port`
            try:
                proxies[name] = check_proxy_url(value) if value else None
            except ValueError as exc:
                issues.append(ConfigIssue("environment", name, str(exc)))
        if issues:
            raise ConfigError(issues)
        entries = [entry for entry in (_variable(environ, "NO_PROXY") or "").split(",") if entry.strip()]
        return cls(
            https_proxy=proxies["HTTPS_PROXY"],
            http_proxy=proxies["HTTP_PROXY"],
            no_proxy=tuple(_Bypass.parse(entry) for entry in entries if entry.strip() != "*"),
            bypass_all=any(entry.strip() == "*" for entry in entries),
        )

    def proxy_for(self, url: str, setting: str | None = None) -> str | None:
        """The proxy that carries requests to `url`: `setting` (a destination's own) when set, else the variables'."""
        if setting:
            return setting
        parts = urlsplit(url)
        proxy = {"https": self.https_proxy, "http": self.http_proxy}.get(parts.scheme)
        if proxy is None or self.bypass_all:
            return None
        host = (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        if any(entry.covers(host, port) for entry in self.no_proxy):
            return None
        return proxy

    def link(self, url: str, setting: str | None = None) -> Link:
        """The `Link` a client for `url` is built with: `proxy_for(url, setting)`, the system's TLS trust."""
        return Link(self.proxy_for(url, setting))

    def secret_values(self) -> list[str]:
        """The passwords the proxy URLs carry (`user:password@`), to keep them out of logs."""
        return [secret for proxy in (self.https_proxy, self.http_proxy) if proxy for secret in url_passwords(proxy)]


DIRECT = Link()  # no proxy, the system's TLS trust
NO_PROXY_VARIABLES = ProxyEnvironment()  # an environment that sets none of the variables


def _variable(environ: Mapping[str, str], name: str) -> str | None:
    """`name`'s value, the lower-case spelling first (curl's and urllib's order); empty is unset."""
    return (environ.get(name.lower()) or environ.get(name) or "").strip() or None
