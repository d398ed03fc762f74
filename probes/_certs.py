"""Certificate facts and readable verification failures, shared by the tls and http probes.

Pure functions over a parsed certificate and a clock reading: no I/O here. The handshakes that
obtain the certificate live in `probes.tls`.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from monitor.results import Outcome, ProbeResult

if TYPE_CHECKING:
    from cryptography import x509

_DAY = 86400.0
_MAX_NAMES = 3  # names listed in a hostname-mismatch detail before "and N more"

# OpenSSL's X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code) that we word ourselves:
# OpenSSL's own messages changed between 1.1 and 3.0 ("self signed" -> "self-signed").
_NOT_YET_VALID = 9
_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
_IP_ADDRESS_MISMATCH = 64
_UNTRUSTED_REASONS = {
    2: "unable to get issuer certificate",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
}


@dataclass(frozen=True, slots=True)
class Certificate:
    """The facts of one peer certificate that a detail or a metric needs."""

    subject: str
    issuer: str
    not_before: dt.datetime  # UTC
    not_after: dt.datetime  # UTC
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    @property
    def not_after_timestamp(self) -> float:
        """The expiry as a UNIX timestamp (ProbeResult.cert_not_after)."""
        return self.not_after.timestamp()

    @property
    def names(self) -> tuple[str, ...]:
        """The names it is valid for: its subjectAltNames, else its subject common name."""
        return (*self.dns_names, *self.ip_addresses) or ((self.subject,) if self.subject else ())

    def facts(self) -> dict[str, str]:
        """Small, secret-free evidence for pages and /status."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


def parse_certificate(der: bytes) -> Certificate:
    """Parse a DER certificate; ValueError when it cannot be read."""
    # cryptography (~17 MB) is loaded by the first TLS probe, not by every depmon (issue 27).
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names = ip_addresses = ()
    return Certificate(
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )


def _name(name: x509.Name) -> str:
    from cryptography.x509.oid import NameOID

    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        values = name.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return name.rfc4514_string()


def describe_span(seconds: float) -> str:
    """A duration for people, rounded down: `3 days`, `1 day`, `5 hours`, `less than a minute`."""
    seconds = max(0.0, seconds)
    for size, unit in ((_DAY, "day"), (3600.0, "hour"), (60.0, "minute")):
        count = int(seconds // size)
        if count >= 1:
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "less than a minute"


def validity_result(certificate: Certificate, now: float, min_days_valid: int, **facts: str) -> ProbeResult:
    """The result for a certificate that passed verification: ok, degraded when expiry is near."""
    left = certificate.not_after_timestamp - now
    common: dict[str, object] = {
        "cert_not_after": certificate.not_after_timestamp,
        "facts": {**certificate.facts(), **facts},
    }
    if left < min_days_valid * _DAY:
        detail = f"certificate expires in {describe_span(left)} ({certificate.not_after.date().isoformat()})"
        return ProbeResult.success(detail, degraded=True, **common)
    return ProbeResult.success(f"certificate valid for {describe_span(left)}", **common)


@dataclass(frozen=True, slots=True)
class CertificateFailure:
    """A certificate that failed verification, in words, with its facts when they could be read."""

    detail: str
    cert_not_after: float | None = None
    facts: dict[str, str] = field(default_factory=dict)

    def result(self) -> ProbeResult:
        """The probe result: outcome `tls`, security-relevant (Security Incident Procedure)."""
        return ProbeResult.failure(
            Outcome.TLS,
            self.detail,
            security_relevant=True,
            cert_not_after=self.cert_not_after,
            facts=self.facts,
        )


def certificate_failure(
    error: ssl.SSLCertVerificationError, host: str, certificate: Certificate | None, now: float
) -> CertificateFailure:
    """Word a verification failure for `host`; `certificate` (read unverified) adds dates and names."""
    detail = _failure_detail(error, host, certificate, now)
    if certificate is None:
        return CertificateFailure(detail)
    return CertificateFailure(detail, certificate.not_after_timestamp, certificate.facts())


def _failure_detail(error: ssl.SSLCertVerificationError, host: str, certificate: Certificate | None, now: float) -> str:
    code = error.verify_code
    if code == _EXPIRED:
        # The code does not say which certificate of the chain expired: only the leaf's dates are known.
        if certificate is not None and certificate.not_after_timestamp <= now:
            ago = describe_span(now - certificate.not_after_timestamp)
            return f"certificate expired {ago} ago ({certificate.not_after.date().isoformat()})"
        return "certificate expired" if certificate is None else "a certificate in the chain has expired"
    if code == _NOT_YET_VALID:
        if certificate is not None and certificate.not_before.timestamp() > now:
            return f"certificate not valid until {certificate.not_before.date().isoformat()}"
        return "certificate not yet valid" if certificate is None else "a certificate in the chain is not yet valid"
    if code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
        if certificate is not None and certificate.names:
            return f"certificate is for {_list_names(certificate.names)}, not {host}"
        return f"certificate is not for {host}"
    reason = _UNTRUSTED_REASONS.get(code)
    if reason is not None:
        return f"certificate not trusted: {reason}"
    return f"certificate rejected: {_lower_first(error.verify_message or error.reason or 'verification failed')}"


def _list_names(names: tuple[str, ...]) -> str:
    if len(names) <= _MAX_NAMES:
        return ", ".join(names)
    return f"{', '.join(names[:_MAX_NAMES])} and {len(names) - _MAX_NAMES} more"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
