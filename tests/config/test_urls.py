"""URLs and connection strings read with parsers: the one URL check, and every state_url password redacted."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from monitor.logs import Redactor
from monitor.store import PostgresStore, StoreError, redacted_url
from monitor.urls import check_url, conninfo_passwords, is_loopback

pytestmark = pytest.mark.unit

# Hypothesis's caches go to a temporary directory, not the repository (see test_http_bodies_property).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "depmon-hypothesis")

HOST = "db.example.test"
# Every form libpq takes a password in, built from a password as each form must encode it.
FORMS: dict[str, Callable[[str], str]] = {
    "userinfo": lambda pw: f"postgresql://depmon:{quote(pw, safe='')}@{HOST}:5432/depmon",
    "query": lambda pw: f"postgresql://depmon@{HOST}:5432/depmon?password={quote(pw, safe='')}",
    "sslpassword": lambda pw: f"postgres://depmon@{HOST}/depmon?sslmode=require&sslpassword={quote(pw, safe='')}",
    "userinfo-and-query": lambda pw: (
        f"postgresql://depmon:{quote(pw, safe='')}@{HOST}/depmon?password={quote(pw[::-1], safe='')}"
    ),
    "key-value": lambda pw: make_conninfo(host=HOST, user="depmon", dbname="depmon", password=pw),
}
# Printable passwords (libpq reads no control characters), long enough for the redactor.
PASSWORDS = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=8, max_size=40)


def _absent(password: str, text: str) -> bool:
    return password not in text and password[::-1] not in text


class TestIsLoopback:
    """`is_loopback`: 127.0.0.0/8, ::1 or localhost, decided with `ipaddress`."""

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "0:0:0:0:0:0:0:1", "LocalHost"])
    def test_loopback(self, host: str) -> None:
        """Every address of 127.0.0.0/8, ::1 in any spelling and localhost are loopback."""
        assert is_loopback(host)

    @pytest.mark.parametrize(
        "host", ["localhost.evil.example", "127.0.0.1.evil.example", "128.0.0.1", "::2", "2130706433", ""]
    )
    def test_not_loopback(self, host: str) -> None:
        """Names that start like a loopback host, other addresses and integer spellings are not."""
        assert not is_loopback(host)


class TestCheckUrl:
    """`check_url`: the one check of a configured URL."""

    def test_userinfo_is_seen_by_the_parser(self) -> None:
        """The host after `user:password@` is the host: a loopback-looking userinfo does not make it local."""
        with pytest.raises(ValueError, match=r"must not carry a user or password"):
            check_url("http://127.0.0.1:8080@hooks.evil.example/x", ("http", "https"), "a URL", clear_text=("http",))

    def test_userinfo_allowed_when_asked(self) -> None:
        """A proxy's credentials pass when userinfo is allowed, and the parsed host is the proxy's."""
        parts = check_url("http://u:p@proxy.example:3128", ("http",), "a proxy URL", userinfo=True)
        assert (parts.hostname, parts.port, parts.password) == ("proxy.example", 3128, "p")

    def test_message_never_quotes_the_url(self) -> None:
        """A refused URL's message names the rule, not the URL (which may be a secret)."""
        with pytest.raises(ValueError, match=r"^must be an https:// URL$"):
            check_url("ftp://s3cret-hook.example/x", ("https",), "an https:// URL")


class TestConninfoRedaction:
    """`redacted_url` and `conninfo_passwords` over every password form of a state_url."""

    @pytest.mark.parametrize("form", list(FORMS))
    @given(password=PASSWORDS)
    @example(password="hunter2-p@ss/w:rd")
    @example(password="a b'c\\d=e&f")
    def test_no_password_survives(self, form: str, password: str) -> None:
        """The redacted text and the scrubbed text show no password of any form, and still name the host."""
        # A password that spells a part of the rest ("password=", the host) is no leak.
        assume(_absent(password, redacted_url(FORMS[form]("placeholder"))))
        conninfo = FORMS[form](password)
        redacted = redacted_url(conninfo)
        assert HOST in redacted
        assert _absent(password, redacted)
        assert _absent(password, Redactor(conninfo_passwords(conninfo)).scrub(conninfo))

    def test_redacted_form_is_libpq_readable(self) -> None:
        """The redacted string reads back as the same options, every password `***`."""
        url = "postgresql://depmon:u-pass@db.example.test:6432/depmon?password=q-pass&sslpassword=k-pass"
        assert conninfo_to_dict(redacted_url(url)) == {
            "user": "depmon",
            "password": "***",
            "sslpassword": "***",
            "dbname": "depmon",
            "host": "db.example.test",
            "port": "6432",
        }

    def test_unreadable_string_is_not_shown(self) -> None:
        """A string libpq cannot read is named, not shown: its password cannot be told apart."""
        assert redacted_url("host=db.example.test password=s3cret-pass junk") == (
            "PostgreSQL (a connection string libpq refuses)"
        )


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class TestStoreErrors:
    """The PostgreSQL store's errors name the database without its password, psycopg's own text included."""

    def test_refused_connection(self, closed_port: int) -> None:
        """A `?password=` URL whose server is down gives an error naming the host and not the password."""
        store = PostgresStore(
            f"postgresql://depmon@127.0.0.1:{closed_port}/depmon?password=qu3ry-s3cret", environment="test"
        )
        with pytest.raises(StoreError) as caught:
            store.pending_count()
        assert "127.0.0.1" in str(caught.value)
        assert "qu3ry-s3cret" not in str(caught.value)

    def test_psycopg_message_quoting_the_password(self) -> None:
        """psycopg's complaint about an unreadable URL quotes its password; the StoreError does not."""
        store = PostgresStore("postgresql://depmon:s3cret%zzpass@127.0.0.1:1/depmon", environment="test")
        with pytest.raises(StoreError) as caught:
            store.pending_count()
        assert "percent-encoded" in str(caught.value)
        assert "s3cret%zzpass" not in str(caught.value)
