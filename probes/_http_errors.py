"""httpx exceptions -> probe outcomes with readable, secret-free details.

Shared by the probes that talk HTTP through `ProbeContext.http_client` (http, oauth2): a page
must say `connection refused to 10.0.0.5:443` or `certificate verify failed: certificate has
expired (api.va.gov:443)`, not `ConnectError: All connection attempts failed`.

httpx wraps httpcore, which wraps the OS, ssl and anyio errors, so the reason lives somewhere
down the `__cause__`/`__context__` chain (and in the exception groups of anyio's happy
eyeballs); `describe_http_error` walks that chain.

A detail names only the host and port contacted, the path and the reason. It never carries a
query string, URL credentials, a header value or a body, and raw exception messages are used
only where their content is known (h11's and httpcore's own words, OS error strings).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
from collections.abc import Iterator
from typing import TypeVar

import anyio
import httpx

from monitor.results import Outcome
from monitor.text import host_port
from probes._redirects import redirect_loop_detail
from probes.context import MAX_REDIRECTS

__all__ = ["describe_http_error"]

_E = TypeVar("_E", bound=BaseException)

_DEFAULT_PORTS = {"http": 80, "https": 443}
# X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH_CODES = frozenset({62, 64})


def describe_http_error(
    exc: httpx.HTTPError | httpx.InvalidURL,
    url: httpx.URL,
    *,
    proxy: str | None = None,
    max_redirects: int = MAX_REDIRECTS,
) -> tuple[Outcome, str, bool]:
    """Translate an httpx exception into (outcome, one-line detail, security relevant).

    `url` is the URL the probe asked for; the host and path of the request that actually failed
    (after redirects) are taken from the exception when it carries one. `proxy` is the proxy URL
    the client was built with: connection failures are then reported as the proxy's.
    `max_redirects` is the client's limit, for the redirect-loop message. Only failures of
    certificate verification (untrusted, expired, wrong host) are security relevant.
    """
    failed = _request_url(exc) or url
    where = _endpoint(failed)
    verify = find_cause(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        return Outcome.TLS, f"{_verify_reason(verify)} ({where})", True
    if isinstance(exc, httpx.TooManyRedirects):
        return Outcome.HTTP_STATUS, redirect_loop_detail(max_redirects, url.path), False
    if isinstance(exc, httpx.ProxyError):
        # httpcore's message is the proxy's status line, e.g. "403 Forbidden"
        return Outcome.CONNECT, f"proxy {_proxy_endpoint(proxy)} refused the tunnel to {where}: {exc}", False
    if isinstance(exc, httpx.ConnectError):
        return _describe_connect_error(exc, failed, proxy)
    if isinstance(exc, httpx.TimeoutException):  # only with client timeouts; ours have none
        return Outcome.TIMEOUT, f"timed out talking to {where}", False
    if isinstance(exc, httpx.RemoteProtocolError):
        return Outcome.ERROR, _describe_remote_protocol_error(exc, failed), False
    if isinstance(exc, httpx.ReadError):
        return Outcome.ERROR, f"connection lost while reading the answer from {where}{_os_reason(exc)}", False
    if isinstance(exc, httpx.WriteError):
        return Outcome.ERROR, f"connection lost while sending the request to {where}{_os_reason(exc)}", False
    if isinstance(exc, httpx.LocalProtocolError):
        # h11's message may quote the offending header value: a credential, so never shown
        return Outcome.ERROR, f"request to {failed.path} could not be sent: invalid request (check headers)", False
    if isinstance(exc, httpx.UnsupportedProtocol):
        scheme = failed.scheme or "none"
        return Outcome.ERROR, f"unsupported URL scheme {scheme!r} (requested from {url.path})", False
    if isinstance(exc, httpx.InvalidURL):
        return Outcome.ERROR, f"invalid URL (requested from {url.path})", False
    if isinstance(exc, httpx.DecodingError):
        return Outcome.ERROR, f"undecodable body (Content-Encoding) from {failed.path}", False
    if isinstance(exc, httpx.HTTPStatusError):
        return Outcome.HTTP_STATUS, f"HTTP {exc.response.status_code} from {exc.response.url.path}", False
    return Outcome.ERROR, f"{exc.__class__.__name__} talking to {where}", False


def _describe_connect_error(exc: httpx.ConnectError, failed: httpx.URL, proxy: str | None) -> tuple[Outcome, str, bool]:
    """A connection that could not be made: name resolution, refusal, routing or TLS handshake."""
    if proxy is not None:
        # With a proxy the client only ever connects to the proxy; a failure is the proxy's.
        target, host, what = f"proxy {_proxy_endpoint(proxy)}", httpx.URL(proxy).host, "proxy host "
    else:
        target, host, what = _endpoint(failed), failed.host, ""
    gai = find_cause(exc, socket.gaierror)
    if gai is not None:
        return Outcome.DNS, f"cannot resolve {what}{host}: {_strerror(gai)}", False
    tls = find_cause(exc, ssl.SSLError)
    if tls is not None:
        return Outcome.TLS, f"TLS handshake with {target} failed: {ssl_reason(tls)}", False
    if find_cause(exc, ConnectionRefusedError) is not None:
        return Outcome.CONNECT, f"connection refused to {target}", False
    if find_cause(exc, anyio.EndOfStream) is not None or find_cause(exc, anyio.BrokenResourceError) is not None:
        # httpcore maps these only around the TLS handshake: the server hung up during it
        return Outcome.TLS, f"TLS handshake with {target} failed: connection closed by the server", False
    os_error = next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno is not None), None)
    if os_error is not None:
        return Outcome.CONNECT, f"cannot connect to {target}: {_strerror(os_error)}", False
    return Outcome.CONNECT, f"cannot connect to {target}", False


_STATUS_LINE = re.compile(r"illegal status line|no response line|invalid http version", re.IGNORECASE)
_INCOMPLETE_BODY = re.compile(r"complete message body \((.+)\)")


def _describe_remote_protocol_error(exc: httpx.RemoteProtocolError, failed: httpx.URL) -> str:
    """The server broke HTTP: garbage instead of a status line, a hang-up mid-answer, ..."""
    message = str(exc)
    where = _endpoint(failed)
    if _STATUS_LINE.search(message):
        return f"not an HTTP response from {where}"
    if message.startswith("Server disconnected") or "unexpectedly closed" in message:
        return f"server closed the connection without a complete answer from {failed.path} ({where})"
    if (incomplete := _INCOMPLETE_BODY.search(message)) is not None:
        return f"connection closed mid-body from {failed.path}: {incomplete.group(1)}"
    if message.startswith("Invalid URL in location header"):
        return f"invalid redirect Location from {failed.path}"
    # h11's remaining messages describe framing problems; cut any quoted server bytes
    reason = message.split(":", 1)[0].rstrip(".").lower() or "protocol violation"
    return f"invalid HTTP response from {where}: {reason}"


# ---------------------------------------------------------------------------------------------
# Helpers


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the members of exception groups, each once."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(reversed(current.exceptions))
        for linked in (current.__context__, current.__cause__):  # the cause is popped first
            if linked is not None:
                stack.append(linked)


def find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of `kind` behind `exc` (httpx and anyio wrap what the socket raised)."""
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _request_url(exc: BaseException) -> httpx.URL | None:
    if not isinstance(exc, httpx.RequestError):
        return None
    try:
        return exc.request.url
    except RuntimeError:  # raised by httpx when the exception was made without a request
        return None


def _endpoint(url: httpx.URL) -> str:
    """`host:port` of a URL, never its credentials or path."""
    return host_port(url.host, url.port or _DEFAULT_PORTS.get(url.scheme))


def _proxy_endpoint(proxy: str | None) -> str:
    if proxy is None:
        return "(none)"
    try:
        return _endpoint(httpx.URL(proxy))
    except httpx.InvalidURL:
        return "(invalid URL)"


def _strerror(error: OSError) -> str:
    text = error.strerror or (os.strerror(error.errno) if error.errno is not None else "") or str(error)
    return text.rstrip(".").lower() or error.__class__.__name__


def _os_reason(exc: BaseException) -> str:
    os_error = find_cause(exc, OSError)
    if os_error is None or os_error.errno is None:
        return ""
    if os_error.errno in (errno.ECONNRESET, errno.EPIPE):
        return f": {os.strerror(os_error.errno).lower()}"
    return f": {_strerror(os_error)}"


def _verify_reason(error: ssl.SSLCertVerificationError) -> str:
    message = (error.verify_message or error.reason or "certificate not trusted").rstrip(".")
    if error.verify_code in _NAME_MISMATCH_CODES:
        # "Hostname mismatch, certificate is not valid for 'x'" -> "hostname mismatch: ..."
        head, _, tail = message.partition(", ")
        return f"{head.lower()}: {tail}" if tail else head.lower()
    return f"certificate verify failed: {message}"


def ssl_reason(error: ssl.SSLError) -> str:
    """`WRONG_VERSION_NUMBER` -> `wrong version number`; OpenSSL's reason codes read well lowered."""
    if error.reason:
        return str(error.reason).replace("_", " ").lower()
    return str(error.strerror or error.__class__.__name__)
