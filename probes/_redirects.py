"""Redirects, followed by hand one hop at a time, so that every hop is checked before it is taken.

The shared HTTP clients never follow redirects themselves: httpx drops only `Authorization`
when a redirect leaves the origin, so a configured `X-Api-Key` would go wherever an upstream
(or whoever controls its Location header) points. Here:

- a hop that changes the origin (scheme, host or port) carries none of the probe's headers and
  no bearer token, and they stay dropped for every later hop;
- a hop from https to http, to a link-local address (169.254.0.0/16, fe80::/10, the cloud
  metadata services) or to a scheme other than http(s) is refused: the probe fails saying so.

A hop to a host name is also refused when the name resolves to such an address
(`resolved_refusal`; not DNS rebinding, which would need the connection's own address).

Every detail shows a URL as `scheme://host:port/path`: never its credentials or query string.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import anyio
import httpx

__all__ = [
    "Hop",
    "Refusal",
    "next_hop",
    "not_followed_detail",
    "redirect_location",
    "redirect_loop_detail",
    "resolved_refusal",
    "show_url",
    "where",
]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SHOW_URL_LIMIT = 120  # characters of a redirect target shown in a detail
# Cloud metadata services by name; by address they are link-local, except these two.
_METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")})
_getaddrinfo = anyio.getaddrinfo  # a module attribute, so tests can answer for names they make up


@dataclass(frozen=True, slots=True)
class Hop:
    """The next request of a redirect chain: where, with which method and headers."""

    url: httpx.URL
    method: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A redirect that is not taken, and why (a detail for the failed result)."""

    detail: str
    security_relevant: bool = True


def redirect_location(response: httpx.Response) -> httpx.URL | None:
    """The absolute URL a redirect answer points to; None when it is not a redirect.

    Raises `httpx.RemoteProtocolError` for a Location that is not a URL, as httpx itself does.
    """
    if response.status_code not in REDIRECT_STATUSES or "Location" not in response.headers:
        return None
    try:
        return response.url.join(response.headers["Location"])
    except httpx.InvalidURL as exc:
        raise httpx.RemoteProtocolError(f"Invalid URL in location header: {exc}", request=response.request) from exc


def next_hop(current: httpx.URL, method: str, status: int, target: httpx.URL, headers: dict[str, str]) -> Hop | Refusal:
    """The request that follows a `status` redirect from `current` to `target`, or why there is none.

    `headers` are those sent to `current`. The method changes as browsers and httpx change it:
    303 to GET (HEAD stays HEAD), 301 and 302 turn a POST into a GET.
    """
    reason = refused_target(current, target)
    if reason is not None:
        return Refusal(f"HTTP {status} redirect to {show_url(target)} refused ({reason})")
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
    return Hop(target, method, headers if same_origin(current, target) else {})


async def resolved_refusal(status: int, hop: Hop) -> Refusal | None:
    """A refusal when the host name of `hop` resolves to a link-local or metadata address.

    For names only (`next_hop` has checked addresses), and for direct connections only (behind
    a proxy the proxy resolves). The connection resolves the name again, so a name that changes
    its answer in between (DNS rebinding) gets through; a name that plainly points at the
    metadata service (`169.254.169.254.nip.io`) does not. A name that does not resolve is left
    to the request, whose failure says so.
    """
    host = hop.url.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    try:
        infos = await _getaddrinfo(host, _port(hop.url), type=socket.SOCK_STREAM)
    except OSError:
        return None
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        reason = _forbidden_host(address)
        if reason is not None:
            detail = f"HTTP {status} redirect to {show_url(hop.url)} refused ({reason}: {host} resolves to {address})"
            return Refusal(detail)
    return None


def refused_target(current: httpx.URL, target: httpx.URL) -> str | None:
    """Why a redirect from `current` to `target` must not be taken, or None."""
    if target.scheme not in ("http", "https"):
        return f"scheme {target.scheme!r} is not http or https"
    forbidden = _forbidden_host(target.host)
    if forbidden is not None:
        return forbidden
    if current.scheme == "https" and target.scheme == "http":
        return "a downgrade from https to http"
    return None


def _forbidden_host(host: str) -> str | None:
    """Why no probe may be sent to `host` by a redirect: metadata services and link-local addresses."""
    host = host.rstrip(".").lower()
    if host in _METADATA_HOSTS:
        return "a cloud metadata service"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata service"
    if address.is_link_local:
        return "a link-local address"
    return None


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Whether two URLs share scheme, host and port (the default port of the scheme when none)."""
    return (a.scheme, a.host, _port(a)) == (b.scheme, b.host, _port(b))


def show_url(url: httpx.URL) -> str:
    """`scheme://host:port/path` of a URL (the port only when not the scheme's default), cut short."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = f":{url.port}" if url.port is not None else ""
    text = f"{url.scheme}://{host}{port}{url.path}"
    return text if len(text) <= _SHOW_URL_LIMIT else text[: _SHOW_URL_LIMIT - 1] + "…"


def where(url: httpx.URL, origin: httpx.URL) -> str:
    """Where an answer came from: its path on the probe's own origin, else the whole shown URL."""
    return url.path if same_origin(url, origin) else show_url(url)


def not_followed_detail(status: int, target: httpx.URL, why: str) -> str:
    """`HTTP 302 redirect to https://login.example/ not followed (follow_redirects is off)`."""
    return f"HTTP {status} redirect to {show_url(target)} not followed ({why})"


def redirect_loop_detail(max_redirects: int, path: str) -> str:
    """The detail of a chain longer than the redirect limit."""
    return f"redirect loop: more than {max_redirects} redirects from {path}"


def _port(url: httpx.URL) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme)
