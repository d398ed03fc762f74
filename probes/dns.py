"""The dns probe: resolve a name, optionally to expected addresses.

Resolution goes through `anyio.getaddrinfo` (the system resolver in a worker thread), so it
honours /etc/hosts and the resolver configuration the daemon's other connections use. This
module also words resolution failures for the tcp and tls probes.
"""

from __future__ import annotations

import ipaddress
import socket

import anyio

from monitor.config import DnsProbeSpec
from monitor.results import Outcome, ProbeResult
from probes.context import ProbeContext

_MAX_LISTED = 8  # addresses listed in a detail before "and N more"

# Templates by getaddrinfo error code; EAI_NODATA and EAI_ADDRFAMILY are glibc extensions.
_GAI_DETAILS = {
    socket.EAI_NONAME: "name not found: {host}",
    socket.EAI_AGAIN: "temporary resolver failure for {host}",
    socket.EAI_FAIL: "resolver failure for {host}",
    **{getattr(socket, n): "no address for {host}" for n in ("EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)},
}


async def probe(spec: DnsProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Resolve `spec.host`; `condition` when an expected address is missing, `dns` when it fails."""
    try:
        infos = await anyio.getaddrinfo(spec.host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return resolution_failure(spec.host, exc)
    addresses = list(dict.fromkeys(_normalize(str(info[4][0])) for info in infos))
    if not addresses:
        return ProbeResult.failure(Outcome.DNS, f"no address for {spec.host}")
    listed = f"{spec.host} -> {_list(addresses)}"
    missing = [a for a in dict.fromkeys(_normalize(e) for e in spec.expect_addresses) if a not in addresses]
    if missing:
        return ProbeResult.failure(Outcome.CONDITION, f"[DNS] {listed}, expected {_list(missing)}")
    return ProbeResult.success(listed)


def resolution_failure(host: str, exc: socket.gaierror | UnicodeError) -> ProbeResult:
    """A `dns` result with a readable reason: `name not found: nothing.invalid`."""
    if isinstance(exc, UnicodeError):  # an internationalized name that IDNA 2008 refuses
        return ProbeResult.failure(Outcome.DNS, f"invalid host name: {host}")
    template = _GAI_DETAILS.get(exc.errno) if exc.errno is not None else None
    if template is not None:
        return ProbeResult.failure(Outcome.DNS, template.format(host=host))
    return ProbeResult.failure(Outcome.DNS, f"cannot resolve {host}: {exc.strerror or exc.__class__.__name__}")


def _normalize(address: str) -> str:
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address


def _list(addresses: list[str]) -> str:
    if len(addresses) <= _MAX_LISTED:
        return ", ".join(addresses)
    return f"{', '.join(addresses[:_MAX_LISTED])} and {len(addresses) - _MAX_LISTED} more"
