"""One redactor for everything the process writes: nested fields, stdlib records, tracebacks, run-time tokens."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from monitor.config import OAuth2ProbeSpec
from monitor.logs import REDACTED, Redactor, configure_logging
from probes.tokens import Grant, TokenCache

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-R0uting-Key-0123456789abcd"
TOKEN = "eyJhbGciOi.run-time-bearer-token.Zm9v"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide hooks: put them back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks


def _configured(secrets: tuple[str, ...] = (SECRET,)) -> tuple[io.StringIO, Redactor]:
    stream = io.StringIO()
    redactor = configure_logging(stream, json=True, secrets=secrets)
    return stream, redactor


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


class TestRedactor:
    """`Redactor.scrub` and `scrub_value`."""

    def test_scrubs_every_occurrence_longest_first(self) -> None:
        """Every occurrence goes, and a secret that contains another is replaced whole."""
        redactor = Redactor(["abcd", "abcdefgh"])
        assert redactor.scrub("x abcdefgh y abcd") == f"x {REDACTED} y {REDACTED}"

    def test_scrubs_the_url_encoded_form(self) -> None:
        """A secret with URL-special characters is also found percent-encoded (a proxy URL)."""
        redactor = Redactor(["p@ss/w:rd"])
        assert redactor.scrub("http://u:p%40ss%2Fw%3Ard@proxy.test") == f"http://u:{REDACTED}@proxy.test"

    def test_short_values_are_not_secrets(self) -> None:
        """Values shorter than four characters are ignored, so ordinary words survive."""
        redactor = Redactor(["ab", ""])
        assert redactor.scrub("ab cab") == "ab cab"

    def test_scrubs_through_containers_and_reprs(self) -> None:
        """Dicts, lists, tuples, sets and objects whose repr carries a secret are scrubbed; numbers stay."""

        class Carrier:
            def __repr__(self) -> str:
                return f"Carrier({SECRET})"

        redactor = Redactor([SECRET])
        value = {"a": [SECRET, (1, {SECRET})], SECRET: Carrier(), "n": 3}
        assert redactor.scrub_value(value) == {
            "a": [REDACTED, (1, (REDACTED,))],
            REDACTED: f"Carrier({REDACTED})",
            "n": 3,
        }

    def test_add_learns_a_secret_later(self) -> None:
        """A secret added after construction is scrubbed from then on; the repr never shows one."""
        redactor = Redactor()
        assert redactor.scrub(TOKEN) == TOKEN
        redactor.add(TOKEN)
        assert redactor.scrub(f"Bearer {TOKEN}") == f"Bearer {REDACTED}"
        assert TOKEN not in repr(redactor)


@pytest.mark.usefixtures("restore_logging")
class TestConfigureLogging:
    """Every path a secret could take to the log stream goes through the redactor."""

    def test_nested_fields(self) -> None:
        """`log.warning("x", errors=[secret])` and deeper nestings are redacted."""
        stream, _ = _configured()
        structlog.get_logger().warning("x", errors=[SECRET], detail={"upstream": (f"key={SECRET}",)})
        text = stream.getvalue()
        assert SECRET not in text
        (line,) = _lines(stream)
        assert line["errors"] == [REDACTED]
        assert line["detail"] == {"upstream": [f"key={REDACTED}"]}

    def test_stdlib_record_is_json_and_redacted(self) -> None:
        """A record of a stdlib logger becomes a JSON event with its logger name, redacted."""
        stream, _ = _configured()
        logging.getLogger("hypercorn.error").error("cannot serve %s", SECRET)
        (line,) = _lines(stream)
        assert line["event"] == f"cannot serve {REDACTED}"
        assert line["logger"] == "hypercorn.error"
        assert line["level"] == "error"

    def test_asyncio_task_exception_never_retrieved(self) -> None:
        """asyncio's own "Task exception was never retrieved" traceback is one redacted JSON event."""
        stream, _ = _configured()

        async def fail() -> None:
            raise RuntimeError(f"upstream said {SECRET}")

        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(fail())
            loop.run_until_complete(asyncio.sleep(0.01))
            del task
            gc.collect()
        finally:
            loop.close()
        assert SECRET not in stream.getvalue()
        (line,) = [line for line in _lines(stream) if line.get("logger") == "asyncio"]
        assert "Task exception was never retrieved" in line["event"]
        assert f"RuntimeError: upstream said {REDACTED}" in line["exception"]

    def test_logged_exception_traceback(self) -> None:
        """A traceback rendered by format_exc_info has the secret redacted and the traceback kept."""
        stream, _ = _configured()
        try:
            raise ValueError(f"bad credential {SECRET}")
        except ValueError:
            structlog.get_logger().exception("probe_crashed")
        assert SECRET not in stream.getvalue()
        (line,) = _lines(stream)
        assert "Traceback (most recent call last)" in line["exception"]
        assert f"ValueError: bad credential {REDACTED}" in line["exception"]

    def test_uncaught_exception_in_a_thread(self) -> None:
        """An exception that escapes a thread is logged through the redactor."""
        stream, _ = _configured()

        def crash() -> None:
            raise RuntimeError(SECRET)

        thread = threading.Thread(target=crash, name="worker")
        thread.start()
        thread.join()
        assert SECRET not in stream.getvalue()
        (line,) = _lines(stream)
        assert line["event"] == "uncaught_exception"
        assert line["where"] == "thread worker"

    @pytest.mark.anyio
    async def test_token_obtained_at_run_time(self) -> None:
        """A bearer token the TokenCache obtains is registered and then never logged."""
        stream, redactor = _configured()
        spec = OAuth2ProbeSpec.model_validate(
            {
                "name": "token",
                "kind": "oauth2",
                "token_url": "https://sso.test/t",
                "client_id": "i",
                "client_secret": "s",
            }
        )

        async def fetch(_: OAuth2ProbeSpec) -> Grant:
            return Grant(TOKEN, 300.0)

        cache = TokenCache({"sso/token": spec}, fetch, on_secret=redactor.add)
        token = await cache.bearer("sso/token")
        structlog.get_logger().warning("upstream_401", request_headers={"authorization": f"Bearer {token}"})
        assert TOKEN not in stream.getvalue()
        assert _lines(stream)[-1]["request_headers"] == {"authorization": f"Bearer {REDACTED}"}

    def test_quiet_http_client_loggers(self) -> None:
        """httpx's one-line-per-request INFO records stay out of the daemon's log."""
        stream, _ = _configured()
        logging.getLogger("httpx").info("HTTP Request: GET https://x.test 200 OK")
        assert stream.getvalue() == ""


def test_uncaught_exception_in_the_main_thread() -> None:
    """A traceback that escapes the program is one redacted JSON event, nothing raw on stderr."""
    program = (
        "import sys\n"
        "from monitor.logs import configure_logging\n"
        f"configure_logging(sys.stdout, json=True, secrets=[{SECRET!r}])\n"
        f"raise RuntimeError('token ' + {SECRET!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert result.stderr == ""
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["event"] == "uncaught_exception"
    assert f"RuntimeError: token {REDACTED}" in line["exception"]
