"""The tcp probe: a TCP connection within the deadline, then closed.

This module also words connection failures for the tls probe: one wording for both kinds.
"""

from __future__ import annotations

import errno
import os
import socket

import anyio
from anyio.abc import SocketAttribute

from monitor.config import TcpProbeSpec
from monitor.results import Outcome, ProbeResult
from monitor.text import host_port
from probes.context import ProbeContext
from probes.dns import resolution_failure


async def probe(spec: TcpProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Connect to `spec.host:spec.port` and close: `connect` when refused, `dns` when unresolvable."""
    try:
        stream = await anyio.connect_tcp(spec.host, spec.port)
    except (OSError, UnicodeError) as exc:
        return connect_failure(spec.host, spec.port, exc)
    async with stream:
        address = str(stream.extra(SocketAttribute.remote_address)[0])  # noqa: S610 (anyio typed attribute, not Django)
    return ProbeResult.success(f"connected to {host_port(spec.host, spec.port)}", facts={"address": address})


def connect_failure(host: str, port: int, exc: OSError | UnicodeError) -> ProbeResult:
    """The result of a failed `anyio.connect_tcp`: `dns` when the name did not resolve, else `connect`."""
    if isinstance(exc, socket.gaierror | UnicodeError):
        return resolution_failure(host, exc)
    code = _errno(exc)
    if code == errno.ECONNREFUSED:
        return ProbeResult.failure(Outcome.CONNECT, f"connection refused to {host_port(host, port)}")
    reason = os.strerror(code).lower() if code else "connection failed"
    return ProbeResult.failure(Outcome.CONNECT, f"cannot connect to {host_port(host, port)}: {reason}")


def _errno(exc: BaseException) -> int | None:
    """The errno behind anyio's "All connection attempts failed" (one cause, or a group of them)."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        codes = [_errno(e) for e in cause.exceptions]
        # Several addresses failed differently (IPv6 unreachable, IPv4 refused): refused is the news.
        return errno.ECONNREFUSED if errno.ECONNREFUSED in codes else next((c for c in codes if c), None)
    return _errno(cause) if cause is not None else None
