"""The tls probe: a fresh handshake, chain and hostname verification, days until expiry.

A certificate that fails verification is described with its facts (`certificate expired 3
days ago (2026-11-24)`, `certificate is for other.example, not api.example.gov`). OpenSSL
aborts a handshake whose verification fails and Python then exposes neither the peer
certificate nor its dates, only a verify code. So after a verification failure a second
handshake, with verification switched off, reads the certificate: it is parsed, never trusted,
and nothing is sent over that connection. It gets at most half of the time left before the
caller's deadline, so a failed verification is always reported as `tls`, never as `timeout`.
The http probe uses the same path through `describe_certificate_failure`.
"""

from __future__ import annotations

import functools
import ssl

import anyio
from anyio.streams.tls import TLSAttribute

from monitor.config import TlsProbeSpec
from monitor.results import Outcome, ProbeResult
from monitor.text import host_port
from probes._certs import (
    Certificate,
    CertificateFailure,
    certificate_failure,
    parse_certificate,
    validity_result,
)
from probes._http_errors import find_cause, ssl_reason
from probes.context import ProbeContext, TlsOptions
from probes.tcp import connect_failure

INSPECTION_TIMEOUT = 5.0  # the most the unverified second handshake may take, deadline permitting

__all__ = [
    "CertificateFailure",
    "describe_certificate_failure",
    "find_verification_error",
    "probe",
    "read_certificate",
]


async def probe(spec: TlsProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Handshake with `spec.host:spec.port`; degraded below `min_days_valid`, `tls` when verification fails."""
    ssl_context = ctx.ssl_context(TlsOptions(ca_file=spec.ca_file))
    try:
        stream = await anyio.connect_tcp(
            spec.host, spec.port, ssl_context=ssl_context, tls_hostname=spec.host, tls_standard_compatible=False
        )
    except ssl.SSLCertVerificationError as exc:
        return (await describe_certificate_failure(spec.host, spec.port, exc, ctx)).result()
    except ssl.SSLError as exc:  # before OSError: SSLError is one
        return _handshake_failure(spec.host, spec.port, ssl_reason(exc))
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return _handshake_failure(spec.host, spec.port, "connection closed by the server")
    except (OSError, UnicodeError) as exc:
        return connect_failure(spec.host, spec.port, exc)
    async with stream:
        der = stream.extra(TLSAttribute.peer_certificate_binary)  # noqa: S610 (anyio typed attribute, not Django)
        version = stream.extra(TLSAttribute.tls_version)  # noqa: S610 (anyio typed attribute, not Django)
    try:
        certificate = _parse(der)
    except ValueError:
        return ProbeResult.failure(Outcome.TLS, "certificate verified but could not be parsed")
    return validity_result(certificate, ctx.clock(), spec.min_days_valid, tls_version=version)


async def describe_certificate_failure(
    host: str, port: int, error: ssl.SSLCertVerificationError, ctx: ProbeContext
) -> CertificateFailure:
    """Word a verification failure of `host:port`, with the certificate's facts when it can be read.

    Call it inside the probe's deadline: the unverified second handshake takes at most half of
    the time left (and `INSPECTION_TIMEOUT`); when it fails, the words come from the verify code.
    """
    certificate = await read_certificate(host, port)
    return certificate_failure(error, host, certificate, ctx.clock())


async def read_certificate(host: str, port: int) -> Certificate | None:
    """The certificate `host:port` presents, read without verifying it; None when it cannot be had."""
    with anyio.move_on_after(_inspection_budget()):
        try:
            stream = await anyio.connect_tcp(
                host, port, ssl_context=_unverified_context(), tls_hostname=host, tls_standard_compatible=False
            )
        except (OSError, UnicodeError, anyio.EndOfStream, anyio.BrokenResourceError):
            return None
        async with stream:
            der = stream.extra(TLSAttribute.peer_certificate_binary)  # noqa: S610 (anyio typed attribute, not Django)
        try:
            return _parse(der)
        except ValueError:
            return None
    return None


def find_verification_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind `exc` (httpx wraps it twice), or None."""
    return find_cause(exc, ssl.SSLCertVerificationError)


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    """The one context that reads certificates without trusting them.

    Created once per process, not per probe and not per ProbeContext: it holds no CA bundle and
    no client certificate, so nothing about it varies with the configuration.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # read-only use: the certificate is parsed, nothing is sent
    return context


def _inspection_budget() -> float:
    left = anyio.current_effective_deadline() - anyio.current_time()
    return max(0.0, min(INSPECTION_TIMEOUT, left / 2))


def _parse(der: bytes | None) -> Certificate:
    if der is None:
        raise ValueError("no peer certificate")
    return parse_certificate(der)


def _handshake_failure(host: str, port: int, reason: str) -> ProbeResult:
    return ProbeResult.failure(Outcome.TLS, f"TLS handshake with {host_port(host, port)} failed: {reason}")
