"""Simulated VA upstreams on loopback, for the demo and the end-to-end tests.

One `SimulatedUpstream` stands in for one dependency: an HTTP server (`LoopbackServer`) for its
health endpoints, a `TlsEndpoint` for its certificate probes and, for SSOe, an OAuth2
client-credentials token endpoint (`TokenIssuer`). Each upstream carries faults that a timeline
or a test sets and clears:

    fail_with(status)      every HTTP answer is `status` (health and token endpoints alike)
    slow_down(seconds)     HTTP answers come `seconds` late
    hang()                 HTTP requests are held unanswered (a token endpoint that times out)
    refuse_tokens()        the token endpoint answers 401 invalid_client
    revoke_tokens()        every token issued so far is rejected by the endpoints that need one
    expire_certificate()   the TLS endpoint presents an expired certificate
    go_down()              the HTTP and TLS ports refuse connections
    clear_faults()         all of the above undone

An endpoint served with `tokens=issuer` needs a bearer token that `issuer` issued and that has
not expired: when SSOe stops issuing, the probes that present its token fail once their cached
token runs out, as they would against VA.

Certificates come from `CertificateAuthority`, made at start with `cryptography` (a runtime
dependency: the demo runs from an installed wheel, where the dev-only `trustme` is absent). The
CA is written to a PEM file that the probes' `ca_file` names.

Everything listens on 127.0.0.1 on free ports, serves from daemon threads and is stopped with
`stop()` (or `with`), which never waits on a held request.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import secrets
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote_plus

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from monitor.sim.lifecycle import Started
from monitor.sim.loopback import (
    LOOPBACK_HOST,
    Handler,
    LoopbackServer,
    Request,
    Response,
    json_response,
    shut_down,
)

__all__ = [
    "HEALTH_PASS",
    "CertificateAuthority",
    "IssuedCertificate",
    "SimulatedUpstream",
    "TlsEndpoint",
    "TokenIssuer",
]

HEALTH_PASS: dict[str, Any] = {"status": "pass"}
"""An IETF health-check body that says all is well."""

_HANDSHAKE_TIMEOUT = 5.0  # a client that connects and says nothing is cut after this long
_POLL_INTERVAL_SECONDS = 0.02
_TOKEN_LEEWAY_SECONDS = 1.0  # clock skew a resource server tolerates on a token's expiry


# -- certificates ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A leaf certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path
    not_after: datetime


class CertificateAuthority:
    """A private CA made at start (ECDSA P-256), its certificate written to `ca_file`.

    `issue()` signs server certificates for loopback (IP 127.0.0.1 and `localhost`) plus the
    host names they stand in for, valid or expired.
    """

    def __init__(self, directory: Path, name: str = "depmon simulator CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        public_key = self._key.public_key()
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(self._subject)
            .issuer_name(self._subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, hosts: Iterable[str] = (), *, expired: bool = False) -> IssuedCertificate:
        """Sign a server certificate for 127.0.0.1, `localhost` and `hosts`; written as `<stem>.pem`.

        A valid one lasts 90 days from yesterday; an expired one ended three days ago.
        """
        names = list(dict.fromkeys([*hosts, "localhost"]))
        now = datetime.now(UTC)
        not_before, not_after = (
            (now - timedelta(days=60), now - timedelta(days=3))
            if expired
            else (now - timedelta(days=1), now + timedelta(days=90))
        )
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        alt_names.append(x509.IPAddress(ipaddress.ip_address(LOOPBACK_HOST)))
        ca_key_id = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        cert_file = self._directory / f"{stem}.pem"
        key_file = self._directory / f"{stem}-key.pem"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return IssuedCertificate(cert_file, key_file, not_after)


def _server_context(certificate: IssuedCertificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    return context


# -- the TLS endpoint -----------------------------------------------------------------------------


class TlsEndpoint(Started):
    """A TLS server on 127.0.0.1 that completes each handshake, then waits for the client to hang up.

    That is all a tls probe needs: the certificate chain, its names and its dates. Faults:
    `expire_certificate()` (present the expired certificate), `hang()` (accept and never
    handshake), `go_down()` / `come_back()` (refuse connections on the same port).
    """

    def __init__(self, valid: IssuedCertificate, expired: IssuedCertificate, *, port: int = 0) -> None:
        self._contexts = {False: _server_context(valid), True: _server_context(expired)}
        self._port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: _TlsServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._expired = False
        self._hanging = False
        self._handshakes = 0

    @property
    def port(self) -> int:
        """The TCP port; known once started."""
        if self._port == 0:
            raise RuntimeError("the TLS endpoint has not started yet: its port is not known")
        return self._port

    @property
    def handshakes(self) -> int:
        """How many handshakes completed."""
        with self._lock:
            return self._handshakes

    def start(self) -> Self:
        """Start listening (a no-op when already listening)."""
        with self._lock:
            if self._server is not None:
                return self
            server = _TlsServer((LOOPBACK_HOST, self._port), _TlsHandler, owner=self)
            self._port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
                name=f"tls-{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, release held connections and cut open ones; safe to call twice."""
        with self._changed:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            connections = list(self._connections)
            self._changed.notify_all()
        if server is not None:
            shut_down(server, thread, connections, self._changed, lambda: bool(self._connections))

    # -- faults ----------------------------------------------------------------------------------

    def expire_certificate(self) -> None:
        """Present the expired certificate from the next handshake on."""
        with self._lock:
            self._expired = True

    def hang(self) -> None:
        """Accept connections and never start the handshake, until `clear_faults()` or `stop()`."""
        with self._lock:
            self._hanging = True

    def go_down(self) -> None:
        """Close the listening socket: connections are refused."""
        self.stop()

    def come_back(self) -> None:
        """Listen again on the same port."""
        self.start()

    def clear_faults(self) -> None:
        """Present the valid certificate, stop hanging, and listen again if down."""
        with self._changed:
            self._expired = False
            self._hanging = False
            self._changed.notify_all()
        self.start()

    # -- internals -------------------------------------------------------------------------------

    def _admit(self, connection: socket.socket) -> ssl.SSLContext | None:
        """Register a connection; wait out a hang; the context to use, or None to drop it."""
        with self._changed:
            self._connections.add(connection)
            self._changed.wait_for(lambda: not self._hanging or self._server is None)
            if self._server is None:
                return None
            return self._contexts[self._expired]

    def _handshake_done(self, connection: socket.socket, tls: ssl.SSLSocket) -> None:
        # The TLS socket owns the file descriptor now: it is the one stop() must cut.
        with self._lock:
            self._handshakes += 1
            self._connections.discard(connection)
            self._connections.add(tls)

    def _release(self, connection: socket.socket) -> None:
        with self._changed:
            self._connections.discard(connection)
            self._changed.notify_all()


class _TlsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False  # stop() cuts handlers itself, with a deadline
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler], *, owner: TlsEndpoint
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-handshake are normal here


class _TlsHandler(socketserver.BaseRequestHandler):
    server: _TlsServer
    request: socket.socket

    def handle(self) -> None:
        owner = self.server.owner
        connection = self.request
        tls: ssl.SSLSocket | None = None
        try:
            context = owner._admit(connection)
            if context is None:
                return
            connection.settimeout(_HANDSHAKE_TIMEOUT)
            tls = context.wrap_socket(connection, server_side=True)
            with tls:
                owner._handshake_done(connection, tls)
                # The probe reads the certificate and hangs up; wait for that (or the timeout).
                with contextlib.suppress(OSError):
                    tls.recv(1)
        except OSError:  # ssl.SSLError included: a client that rejects our certificate says so here
            pass
        finally:
            owner._release(connection)
            if tls is not None:
                owner._release(tls)


# -- the OAuth2 token endpoint --------------------------------------------------------------------


class TokenIssuer:
    """An OAuth2 client-credentials token endpoint (RFC 6749 section 4.4) and the tokens it issued.

    Clients authenticate with HTTP Basic (id and secret form-urlencoded first). A token is
    `{"access_token", "token_type": "Bearer", "expires_in"}`, valid for `lifetime` seconds.
    `refuse()` makes every request a 401 `invalid_client` until `clear_faults()`.
    """

    def __init__(
        self, client_id: str, client_secret: str, lifetime: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> expiry on `clock`
        self._refusing = False
        self._issued = 0

    @property
    def issued(self) -> int:
        """How many tokens were issued."""
        with self._lock:
            return self._issued

    def refuse(self) -> None:
        """Answer every token request with 401 invalid_client."""
        with self._lock:
            self._refusing = True

    def clear_faults(self) -> None:
        """Issue tokens again."""
        with self._lock:
            self._refusing = False

    def revoke_all(self) -> None:
        """Forget every token issued so far: the endpoints that check them answer 401 (a key rotation, a flush)."""
        with self._lock:
            self._tokens.clear()

    def accepts(self, token: str) -> bool:
        """True for a token this issuer issued that has not expired (with a little leeway)."""
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and self._clock() < expiry + _TOKEN_LEEWAY_SECONDS

    def handle(self, request: Request) -> Response:
        """The token endpoint: `POST` with `grant_type=client_credentials`."""
        form = parse_qs(request.body.decode("utf-8", errors="replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
        with self._lock:
            refusing = self._refusing
        if refusing or _basic_credentials(request) != (self._client_id, self._client_secret):
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry + _TOKEN_LEEWAY_SECONDS > now}
            self._tokens[token] = now + self._lifetime
            self._issued += 1
        lifetime = int(self._lifetime) if float(self._lifetime).is_integer() else self._lifetime
        body = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
        return json_response(200, body, headers=[("Cache-Control", "no-store")])


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.header("authorization") or ""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if sep else None


def _oauth_error(status: int, error: str, description: str) -> Response:
    headers = [("WWW-Authenticate", 'Basic realm="simulated SSOe"')] if status == 401 else []
    return json_response(status, {"error": error, "error_description": description}, headers=headers)


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = (request.header("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# -- the upstream ---------------------------------------------------------------------------------


class SimulatedUpstream(Started):
    """One simulated dependency: health endpoints over HTTP, optionally a TLS endpoint and a token endpoint.

    Configure it before `start()`: `serve_health()` for each endpoint a probe calls,
    `serve_tokens()` for an OAuth2 token endpoint, `serve_tls()` for the certificate probes.
    """

    def __init__(self, dependency: str, name: str) -> None:
        self.dependency = dependency
        self.name = name
        self.http = LoopbackServer()
        self.tls: TlsEndpoint | None = None
        self.tokens: TokenIssuer | None = None
        self._latency = 0.0
        self._stopping = threading.Event()  # cuts a simulated delay short

    # -- setup -----------------------------------------------------------------------------------

    def serve_health(
        self,
        path: str,
        body: Any = None,
        *,
        status: int = 200,
        method: str = "GET",
        tokens: TokenIssuer | None = None,
    ) -> None:
        """Answer `method path` with `status` and `body` as JSON (default `{"status": "pass"}`).

        With `tokens`, a request without a bearer token that issuer accepts gets 401 instead.
        """
        document = HEALTH_PASS if body is None else body

        def answer(request: Request) -> Response:
            if tokens is not None:
                token = _bearer_token(request)
                if token is None or not tokens.accepts(token):
                    challenge = 'Bearer realm="simulated VA", error="invalid_token"'
                    return json_response(401, {"error": "invalid_token"}, headers=[("WWW-Authenticate", challenge)])
            return json_response(status, document)

        self.http.route(method, path, self._delayed(answer))

    def serve_tokens(self, path: str, client_id: str, client_secret: str, lifetime: float) -> TokenIssuer:
        """Serve an OAuth2 client-credentials token endpoint at `POST path`; returns its issuer."""
        issuer = TokenIssuer(client_id, client_secret, lifetime)
        self.tokens = issuer
        self.http.route("POST", path, self._delayed(issuer.handle))
        return issuer

    def serve_tls(self, authority: CertificateAuthority, hosts: Iterable[str]) -> TlsEndpoint:
        """Serve a TLS endpoint with a certificate for 127.0.0.1 and `hosts` (an expired twin on demand)."""
        names = list(hosts)
        valid = authority.issue(self.dependency, names)
        expired = authority.issue(f"{self.dependency}-expired", names, expired=True)
        self.tls = TlsEndpoint(valid, expired)
        return self.tls

    def _delayed(self, handler: Handler) -> Handler:
        def answer(request: Request) -> Response | None:
            delay = self._latency
            if delay > 0 and self._stopping.wait(delay):
                return None  # stopping: drop the connection
            return handler(request)

        return answer

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` of the HTTP side."""
        return self.http.url

    def start(self) -> Self:
        """Start the HTTP side and the TLS endpoint, if any."""
        self._stopping.clear()
        self.http.start()
        if self.tls is not None:
            try:
                self.tls.start()
            except BaseException:
                self.http.stop()
                raise
        return self

    def stop(self) -> None:
        """Stop both sides; safe to call twice."""
        self._stopping.set()
        try:
            self.http.stop()
        finally:
            if self.tls is not None:
                self.tls.stop()

    # -- faults ----------------------------------------------------------------------------------

    def fail_with(self, status: int, times: int | None = None) -> None:
        """Answer every HTTP request with `status`, `times` times or until `clear_faults()`."""
        self.http.fail_with(status, times)

    def slow_down(self, seconds: float) -> None:
        """Answer every HTTP request `seconds` late (0 for no delay)."""
        if seconds < 0:
            raise ValueError(f"a delay cannot be negative ({seconds})")
        self._latency = seconds

    def hang(self) -> None:
        """Hold every HTTP request unanswered (the token endpoint included) until `clear_faults()`."""
        self.http.hang()

    def refuse_tokens(self) -> None:
        """Make the token endpoint answer 401 invalid_client."""
        if self.tokens is None:
            raise RuntimeError(f"{self.dependency} has no token endpoint")
        self.tokens.refuse()

    def revoke_tokens(self) -> None:
        """Revoke every token the token endpoint issued so far (new ones are issued unless refused)."""
        if self.tokens is None:
            raise RuntimeError(f"{self.dependency} has no token endpoint")
        self.tokens.revoke_all()

    def expire_certificate(self) -> None:
        """Make the TLS endpoint present an expired certificate."""
        if self.tls is None:
            raise RuntimeError(f"{self.dependency} has no TLS endpoint")
        self.tls.expire_certificate()

    def go_down(self) -> None:
        """Refuse connections on the HTTP and TLS ports."""
        self.http.go_down()
        if self.tls is not None:
            self.tls.go_down()

    def clear_faults(self) -> None:
        """Undo every fault: statuses, delays, hangs, refusals, expired certificate, downtime."""
        self._latency = 0.0
        if self.tokens is not None:
            self.tokens.clear_faults()
        self.http.clear_faults()
        if self.tls is not None:
            self.tls.clear_faults()
