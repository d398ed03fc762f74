"""The throwaway PostgreSQL of tests/postgres_server.py and the conftest fixtures, for real.

The advisory-lock tests pin down what leader election relies on: a session-level advisory lock held
by one connection is refused to every other, and is released when the holder's connection ends,
whether it closes or its backend dies.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import errors

from tests.helpers import wait_for
from tests.postgres_server import PostgresServer, PostgresStartError, find_binaries

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOCK_KEY = 815_001  # any bigint: the key the test sessions compete for


def _server_processes(postmaster: int) -> list[int]:
    """The postmaster and its children (the backends call setsid(): they are not in its process group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if postmaster in (int(entry.name), int(ppid)) and state != "Z":
            found.append(int(entry.name))
    return found


def _alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (a zombie counts as gone)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


STOP_WAIT = 60.0  # the server may take 15 s to stop on a loaded machine


@pytest.fixture
def binaries_present() -> None:
    """As the postgres_server fixture: skip when the binaries are absent, fail with DEPMON_REQUIRE_TOOLS=1."""
    found, reason = PostgresServer.available()
    if not found:
        if os.environ.get("DEPMON_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + " (DEPMON_REQUIRE_TOOLS=1 makes this a failure)")
        pytest.skip(reason)


def test_a_query_returns(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT 1 + 1, current_user, current_database(), current_setting('server_encoding')"
        ).fetchone()
    assert row == (2, "depmon", urlsplit(postgres_url).path.lstrip("/"), "UTF8")
    assert urlsplit(postgres_url).path != "/postgres", "each test gets its own database, not the maintenance one"


def test_each_test_starts_with_an_empty_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_two_databases_are_isolated(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.create_database("iso_first"), postgres_server.create_database("iso_second")
    try:
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE leader (name text)")
            conn.execute("INSERT INTO leader VALUES ('a')")
        with psycopg.connect(second, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('public.leader')").fetchone() == (None,)
            conn.execute("CREATE TABLE leader (name text)")  # no clash with the first database's table
            assert conn.execute("SELECT count(*) FROM leader").fetchone() == (0,)
        with psycopg.connect(first) as conn:
            assert conn.execute("SELECT name FROM leader").fetchall() == [("a",)]
    finally:
        postgres_server.drop_database("iso_first")
        postgres_server.drop_database("iso_second")
    with psycopg.connect(postgres_server.url) as conn:
        names = {name for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert not names & {"iso_first", "iso_second"}


def test_an_advisory_lock_excludes_other_sessions_until_its_connection_closes(postgres_url: str) -> None:
    holder = psycopg.connect(postgres_url, autocommit=True)
    with psycopg.connect(postgres_url, autocommit=True) as other:
        assert holder.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone() == (True,)
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone() == (False,)
        # The blocking form waits for it: with a lock timeout, it gives up.
        other.execute("SET lock_timeout = '200ms'")
        with pytest.raises(errors.LockNotAvailable):
            other.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone() == (False,)

        holder.close()
        # The backend ends (and releases its locks) shortly after the client hangs up, not at once.
        wait_for(
            lambda: other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone() == (True,),
            STOP_WAIT,
            "the lock free once its holder's connection closed",
        )
        holders = other.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted", [LOCK_KEY]
        ).fetchone()
        assert holders == (1,)


def test_an_advisory_lock_is_released_when_its_backend_dies(postgres_url: str) -> None:
    """The leader's process or connection dies without closing: its lock goes with its backend."""
    with (
        psycopg.connect(postgres_url, autocommit=True) as holder,
        psycopg.connect(postgres_url, autocommit=True) as other,
    ):
        assert holder.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone() == (True,)
        holder_pid = holder.info.backend_pid
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone() == (False,)
        assert other.execute("SELECT pg_terminate_backend(%s, 5000)", [holder_pid]).fetchone() == (True,)
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")


def test_the_server_does_not_run_as_root(postgres_server: PostgresServer) -> None:
    assert postgres_server.pid is not None
    status = Path(f"/proc/{postgres_server.pid}/status").read_text()
    real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert real_uid != 0
    if os.geteuid() != 0:
        assert real_uid == os.geteuid()


@pytest.mark.usefixtures("binaries_present")
def test_stop_leaves_no_process_no_directory_and_no_listener() -> None:
    server = PostgresServer().start()
    pid, base, port = server.pid, server.base_dir, server.port
    assert pid is not None
    assert base is not None
    with psycopg.connect(server.url) as conn:
        conn.execute("SELECT 1")
    processes = _server_processes(pid)
    assert len(processes) >= 2, "the postmaster and its children (checkpointer, background writer, ...)"
    assert base.is_dir()

    server.stop()

    assert _alive(processes) == []
    assert not base.exists()
    assert not _port_open(port)
    server.stop()  # a second stop is harmless


@pytest.mark.usefixtures("binaries_present")
def test_a_server_that_does_not_start_reports_its_log_and_leaves_nothing() -> None:
    server = PostgresServer(settings={"shared_buffers": "lots"})
    with pytest.raises(PostgresStartError) as failure:
        server.start()
    message = str(failure.value)
    assert 'invalid value for parameter "shared_buffers": "lots"' in message, message
    assert "log tail:" in message
    assert server.pid is not None
    assert _alive([server.pid]) == []
    # Its own directory, not a listing of the temporary folder: parallel workers start servers too.
    assert server.base_dir is not None
    assert server.base_dir.name.startswith("depmon-pg-")
    assert not server.base_dir.exists(), "the failed server's directory is removed"


OWNER = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from tests.postgres_server import PostgresServer
server = PostgresServer().start()
print(server.pid, server.base_dir, server.port, flush=True)
if sys.argv[2] == "interrupt":
    sys.stdin.readline()  # once the test has seen the server's processes (else it races their shutdown)
    os.kill(os.getpid(), signal.SIGINT)  # an unhandled KeyboardInterrupt: atexit stops the server
time.sleep(60)
"""


@pytest.mark.usefixtures("binaries_present")
@pytest.mark.parametrize("ending", ["interrupt", "sigkill"])
def test_a_server_never_outlives_its_owner(ending: str) -> None:
    """Ctrl-C (KeyboardInterrupt) and SIGKILL of the process that started the server: nothing is left behind."""
    with subprocess.Popen(
        [sys.executable, "-c", OWNER, str(ROOT), ending],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            line = owner.stdout.readline()
            assert line, owner.communicate(timeout=30)[1]
            pid_text, base_text, port_text = line.split()
            pid, base, port = int(pid_text), Path(base_text), int(port_text)
            processes = _server_processes(pid)
            assert len(processes) >= 2, "the postmaster and its children"
            if ending == "sigkill":
                owner.kill()
            else:
                assert owner.stdin is not None
                owner.stdin.write("go\n")
                owner.stdin.flush()
            _, stderr = owner.communicate(timeout=30)
            if ending == "interrupt":
                assert "KeyboardInterrupt" in stderr
        finally:
            if owner.poll() is None:
                owner.kill()
    wait_for(lambda: not _alive(processes), STOP_WAIT, "every postgres process gone with its owner")
    wait_for(lambda: not base.exists(), STOP_WAIT, "the data directory gone with its owner")
    assert not _port_open(port)


def test_absent_binaries_give_a_reason(tmp_path: Path) -> None:
    binaries, reason = find_binaries(path=str(tmp_path), debian_glob=f"{tmp_path}/*/bin")
    assert binaries is None
    assert "PostgreSQL server binaries not found" in reason
    assert "make test" in reason


def test_the_newest_debian_version_is_chosen(tmp_path: Path) -> None:
    for version in ("9.6", "15", "16", "17"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for name in ("initdb", "postgres"):
            if version == "17" and name == "postgres":
                continue  # a client-only install: no server
            (bindir / name).write_text("#!/bin/sh\n")
            (bindir / name).chmod(0o755)
    binaries, _ = find_binaries(path="", debian_glob=f"{tmp_path}/*/bin", use_pg_config=False)
    assert binaries is not None
    assert binaries.initdb == tmp_path / "16" / "bin" / "initdb"
    assert binaries.postgres == tmp_path / "16" / "bin" / "postgres"
