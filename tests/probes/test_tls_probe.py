"""The tls probe against real TLS servers on 127.0.0.1, with certificates made by trustme."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import trustme
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.tls import TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from monitor.config import TlsProbeSpec
from monitor.results import Outcome, ProbeResult
from monitor.schedule.run_probe import run_probe
from probes._certs import describe_span
from probes.context import ProbeContext, TlsOptions
from probes.tls import describe_certificate_failure, find_verification_error

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def server_context(configure: Callable[[ssl.SSLContext], None]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    configure(context)
    return context


def leaf(ca: trustme.CA, *names: str, **validity: dt.datetime) -> ssl.SSLContext:
    """A server context presenting a certificate for `names` issued by `ca`."""
    return server_context(ca.issue_cert(*names, **validity).configure_cert)


def self_signed(tmp_path: Path, name: str = "127.0.0.1") -> ssl.SSLContext:
    """A server context presenting a self-signed leaf certificate (no CA behind it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - DAY)
        .not_valid_after(now() + 90 * DAY)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(name))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "self.pem", tmp_path / "self.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return server_context(lambda c: c.load_cert_chain(cert_path, key_path))


@asynccontextmanager
async def tls_server(context: ssl.SSLContext | None) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that handshakes (plain TCP when `context` is None) and waits for EOF."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            if context is None:
                return  # accept, then hang up: not TLS
            try:
                tls = await TLSStream.wrap(stream, server_side=True, ssl_context=context, standard_compatible=False)
                while True:
                    await tls.receive()
            except (ssl.SSLError, OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                return  # the client rejected us or hung up: both are part of the test

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield listener.extra(SocketAttribute.local_port)
        finally:
            tg.cancel_scope.cancel()


async def probe_tls(port: int, ca_file: str | None, *, host: str = "127.0.0.1", timeout: float = 5.0) -> ProbeResult:
    spec = TlsProbeSpec(name="certificate", kind="tls", host=host, port=port, ca_file=ca_file, min_days_valid=14)
    ctx = ProbeContext()
    try:
        with anyio.fail_after(timeout + 5):
            return await run_probe(spec, ctx, timeout)
    finally:
        await ctx.aclose()


@pytest.mark.anyio
class TestTlsProbe:
    """The tls probe: verification, expiry and readable failures."""

    async def test_valid_certificate_is_ok(self, ca: trustme.CA, ca_file: str) -> None:
        """A trusted certificate for the host with months left is ok, with the days left and its expiry."""
        not_after = now() + 200 * DAY + HOUR
        async with tls_server(leaf(ca, "127.0.0.1", not_after=not_after)) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.degraded) == (True, Outcome.OK, False)
        assert result.detail == "certificate valid for 200 days"
        assert result.cert_not_after == pytest.approx(not_after.replace(microsecond=0).timestamp())
        assert result.facts["tls_version"].startswith("TLSv1.")

    async def test_certificate_close_to_expiry_is_degraded(self, ca: trustme.CA, ca_file: str) -> None:
        """A certificate with fewer days left than min_days_valid is ok but degraded, dated."""
        not_after = now() + 3 * DAY + HOUR
        async with tls_server(leaf(ca, "127.0.0.1", not_after=not_after)) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.degraded) == (True, Outcome.OK, True)
        assert result.detail == f"certificate expires in 3 days ({not_after.date().isoformat()})"
        assert result.cert_not_after == pytest.approx(not_after.replace(microsecond=0).timestamp())
        assert not result.security_relevant

    async def test_expired_certificate_says_how_long_ago(self, ca: trustme.CA, ca_file: str) -> None:
        """An expired certificate is a security-relevant tls failure saying how many days ago it expired."""
        not_after = now() - 3 * DAY - HOUR
        async with tls_server(leaf(ca, "127.0.0.1", not_before=now() - 90 * DAY, not_after=not_after)) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.TLS, True)
        assert result.detail == f"certificate expired 3 days ago ({not_after.date().isoformat()})"
        assert result.cert_not_after == pytest.approx(not_after.replace(microsecond=0).timestamp())

    async def test_not_yet_valid_certificate_names_its_start(self, ca: trustme.CA, ca_file: str) -> None:
        """A certificate whose validity starts in the future is a tls failure naming the start date."""
        not_before = now() + 5 * DAY
        async with tls_server(leaf(ca, "127.0.0.1", not_before=not_before, not_after=now() + 90 * DAY)) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.TLS, True)
        assert result.detail == f"certificate not valid until {not_before.date().isoformat()}"
        assert result.cert_not_after is not None

    async def test_wrong_host_names_both(self, ca: trustme.CA, ca_file: str) -> None:
        """A certificate for another name says which name it is for and which was asked."""
        async with tls_server(leaf(ca, "other.example")) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.TLS, True)
        assert result.detail == "certificate is for other.example, not 127.0.0.1"
        assert result.cert_not_after is not None

    async def test_unknown_ca_is_untrusted(self, ca_file: str) -> None:
        """A certificate from a CA outside the trusted bundle is untrusted: no local issuer."""
        async with tls_server(leaf(trustme.CA(), "127.0.0.1")) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.TLS, True)
        assert result.detail == "certificate not trusted: unable to get local issuer certificate"

    async def test_self_signed_certificate_is_untrusted(self, ca_file: str, tmp_path: Path) -> None:
        """A self-signed leaf certificate is untrusted and says so."""
        async with tls_server(self_signed(tmp_path)) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.TLS, True)
        assert result.detail == "certificate not trusted: self-signed certificate"
        assert result.cert_not_after is not None

    async def test_system_store_does_not_trust_test_ca(self, ca: trustme.CA) -> None:
        """Without ca_file the system store is used, which does not know the test CA."""
        async with tls_server(leaf(ca, "127.0.0.1")) as port:
            result = await probe_tls(port, None)
        assert (result.outcome, result.security_relevant) == (Outcome.TLS, True)
        assert result.detail.startswith("certificate not trusted: ")

    async def test_server_that_is_not_tls_fails_the_handshake(self, ca_file: str) -> None:
        """A server that hangs up instead of answering the handshake is a tls failure, not security-relevant."""
        async with tls_server(None) as port:
            result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.TLS, False)
        assert result.detail.startswith(f"TLS handshake with 127.0.0.1:{port} failed: ")

    async def test_closed_port_is_connect(self, ca_file: str) -> None:
        """A refused connection is outcome connect."""
        port = closed_port()
        result = await probe_tls(port, ca_file)
        assert (result.ok, result.outcome) == (False, Outcome.CONNECT)
        assert result.detail == f"connection refused to 127.0.0.1:{port}"

    async def test_unresolvable_host_is_dns(self, ca_file: str) -> None:
        """A host name that does not resolve is outcome dns."""
        result = await probe_tls(443, ca_file, host="nothing.invalid")
        assert (result.ok, result.outcome, result.detail) == (False, Outcome.DNS, "name not found: nothing.invalid")

    async def test_hanging_handshake_times_out(self, ca_file: str) -> None:
        """A server that accepts but never answers the handshake ends as timeout at the caller's deadline."""
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            result = await probe_tls(server.getsockname()[1], ca_file, timeout=0.5)
        assert (result.ok, result.outcome) == (False, Outcome.TIMEOUT)


@pytest.mark.anyio
class TestDescribeCertificateFailure:
    """describe_certificate_failure words an httpx verification error with the certificate's facts."""

    async def test_httpx_error_gets_the_tls_probe_wording(self, ca: trustme.CA, ca_file: str) -> None:
        """An expired certificate met through httpx is described as the tls probe describes it."""
        not_after = now() - 10 * DAY - HOUR
        ctx = ProbeContext()
        try:
            async with tls_server(leaf(ca, "127.0.0.1", not_before=now() - 90 * DAY, not_after=not_after)) as port:
                client = ctx.http_client(TlsOptions(ca_file=ca_file))
                with pytest.raises(httpx.ConnectError) as caught, anyio.fail_after(10):
                    await client.get(f"https://127.0.0.1:{port}/")
                error = find_verification_error(caught.value)
                assert error is not None
                with anyio.fail_after(10):
                    failure = await describe_certificate_failure("127.0.0.1", port, error, ctx)
        finally:
            await ctx.aclose()
        assert failure.detail == f"certificate expired 10 days ago ({not_after.date().isoformat()})"
        result = failure.result()
        assert (result.outcome, result.security_relevant, result.cert_not_after) == (
            Outcome.TLS,
            True,
            pytest.approx(not_after.replace(microsecond=0).timestamp()),
        )

    async def test_unreachable_host_falls_back_to_the_verify_code(self) -> None:
        """When the certificate cannot be read again, the detail comes from the verify code alone."""
        error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        error.verify_code, error.verify_message = 10, "certificate has expired"
        ctx = ProbeContext()
        with anyio.fail_after(10):
            failure = await describe_certificate_failure("127.0.0.1", closed_port(), error, ctx)
        assert (failure.detail, failure.cert_not_after) == ("certificate expired", None)


class TestDescribeSpan:
    """describe_span rounds a duration down to its largest whole unit."""

    @pytest.mark.parametrize(
        ("seconds", "words"),
        [(3 * 86400 + 5, "3 days"), (86400, "1 day"), (7200, "2 hours"), (61, "1 minute"), (5, "less than a minute")],
    )
    def test_words(self, seconds: float, words: str) -> None:
        """Each duration reads in its largest whole unit."""
        assert describe_span(seconds) == words


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])
