"""URLs and PostgreSQL connection strings, read with parsers, never by splitting strings.

    check_url(text, ...)             the one check of a configured URL: scheme, host, port,
                                     userinfo, and clear text only to a loopback address
    check_postgresql_url(text, form) a `state_url`: that check, then libpq's own reading
    is_loopback(host)                127.0.0.0/8, ::1 or localhost, decided with `ipaddress`
    conninfo_passwords(conninfo)     every password a `state_url` carries, in every form
    redacted_conninfo(conninfo)      the connection string without them: what errors may show

A string splitter reads `http://127.0.0.1:8080@hooks.evil.example/` as a loopback URL; a parser,
like the HTTP client, reads host `hooks.evil.example`. Passwords reach libpq in four forms
(userinfo `user:pw@`, `?password=`, `?sslpassword=`, key=value `password=pw`), a query form
overriding the userinfo one: libpq's rules, as psycopg's conninfo functions apply them, say
which is which.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Collection
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

__all__ = [
    "LOOPBACK",
    "check_postgresql_url",
    "check_url",
    "conninfo_passwords",
    "is_loopback",
    "redacted_conninfo",
    "url_passwords",
]

LOOPBACK = "127.0.0.0/8, ::1 or localhost"
_PASSWORD_KEYS = frozenset({"password", "sslpassword"})  # libpq's options whose values are secrets
_HIDDEN = "***"
_UNREADABLE = "PostgreSQL (a connection string libpq refuses)"


def is_loopback(host: str) -> bool:
    """True for `localhost` and the loopback addresses (127.0.0.0/8, ::1), in brackets or not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def check_url(
    text: str,
    schemes: Collection[str],
    form: str,
    *,
    clear_text: Collection[str] = (),
    userinfo: bool = False,
    authority: bool = True,
) -> SplitResult:
    """`text` parsed, when it is a URL of one of `schemes`; ValueError saying what is wrong otherwise.

    `form` says what the URL must be, for the messages ("an https:// URL"). A scheme in
    `clear_text` (sent unencrypted) is accepted only to a loopback host. `userinfo` allows
    `user:password@` (a proxy's credentials). `authority=False` leaves host and port to whoever
    reads them (libpq: several hosts, or a socket directory). Messages never contain the URL:
    it may be a secret.
    """
    if any(not char.isprintable() or char.isspace() for char in text):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(text)
    if parts.scheme not in schemes:
        raise ValueError(f"must be {form}")
    if not userinfo and (parts.username is not None or parts.password is not None):
        raise ValueError("must not carry a user or password (user:password@ before the host)")
    if not authority:
        return parts
    if not parts.hostname:
        raise ValueError("must name a host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("has an invalid port (1 to 65535)")
    if parts.scheme in clear_text and not is_loopback(parts.hostname):
        raise ValueError(f"must be {form}")
    return parts


def check_postgresql_url(text: str, form: str) -> None:
    """ValueError unless `text` is a postgresql:// URL (`form` says so) that libpq can read.

    libpq's own complaint is not repeated: it may quote the part it could not read, the
    password included.
    """
    check_url(text, ("postgresql", "postgres"), form, userinfo=True, authority=False)
    try:
        _libpq_options(text)
    except ValueError:
        raise ValueError(
            "is not a connection URL libpq can read (its reason is not shown: it may quote the password)"
        ) from None


def url_passwords(url: str) -> list[str]:
    """The password of `url`'s userinfo (`user:password@`), as written and decoded; none without one."""
    password = urlsplit(url).password
    return [] if password is None else list(dict.fromkeys((password, unquote(password))))


def conninfo_passwords(conninfo: str) -> list[str]:
    """Every password value in `conninfo` (a postgresql:// URL or key=value pairs), in every form.

    The one libpq uses, and a URL's userinfo password and query passwords even when another
    overrides them: they are in the text all the same. Percent-encoded forms are the redactor's.
    """
    found: list[str] = []
    with contextlib.suppress(ValueError):  # unreadable to libpq: what the URL parser finds is all there is
        found += [value for key, value in _libpq_options(conninfo).items() if key in _PASSWORD_KEYS]
    parts = urlsplit(conninfo)
    if parts.scheme in ("postgresql", "postgres"):
        found += url_passwords(conninfo)
        found += [value for key, value in parse_qsl(parts.query) if key in _PASSWORD_KEYS]
    return [value for value in dict.fromkeys(found) if value]


def redacted_conninfo(conninfo: str) -> str:
    """`conninfo` as key=value pairs with every password shown as `***`: what errors and logs may show.

    A string libpq cannot read is named, not shown: its parts cannot be told apart.
    """
    from psycopg.conninfo import make_conninfo

    try:
        options = _libpq_options(conninfo)
    except ValueError:
        return _UNREADABLE
    return make_conninfo(**{key: _HIDDEN if key in _PASSWORD_KEYS else value for key, value in options.items()})


def _libpq_options(conninfo: str) -> dict[str, str]:
    """The options libpq reads in `conninfo`; ValueError when it cannot read them (the reason is
    dropped: it may quote a password)."""
    # psycopg is imported here, not at the top: loading it adds some 80 ms to every command that
    # reads a config, and only a `state_url` needs it.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except psycopg.Error:
        raise ValueError("unreadable connection string") from None
