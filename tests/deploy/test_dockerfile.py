"""deploy/Dockerfile and its build-context filter (no Docker engine here: lint, read and rehearse)."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


INSTRUCTIONS = instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in INSTRUCTIONS:
        if keyword == "FROM":
            current = []
            stages[args.split(" AS ")[-1] if " AS " in args else str(len(stages))] = current
        current.append((keyword, args))
    return stages


def _only(keyword: str, stage: list[tuple[str, str]] = INSTRUCTIONS) -> str:
    found = [args for k, args in stage if k == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _healthcheck_command() -> list[str]:
    args = _only("HEALTHCHECK")
    return json.loads(args[args.index("CMD ") + len("CMD ") :])


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching for the patterns used here: globs, `**/`, whole directories."""
    for pattern in patterns:
        regex = re.escape(pattern.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        parts = relative.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            return True
    return False


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback HTTP server answering /healthz with the status given by indirect parametrization."""
    handler = type("Handler", (_Health,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    command = _healthcheck_command()
    assert command[0] == "python"
    code = command[2].replace("127.0.0.1:9464", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)


class TestDockerfileLint:
    """hadolint on deploy/Dockerfile."""

    @pytest.mark.needs_tool
    def test_hadolint_finds_nothing(self, hadolint: str) -> None:
        """hadolint reports no finding at any level."""
        result = subprocess.run(
            [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.needs_tool
    def test_hadolint_flags_a_known_bad_pattern(self, hadolint: str, tmp_path: Path) -> None:
        """hadolint fails the same Dockerfile with an unpinned apt-get install added, so the lint can fail."""
        bad = tmp_path / "Dockerfile"
        bad.write_text(
            DOCKERFILE.read_text(encoding="utf-8") + "\nUSER root\nRUN apt-get install curl\n", encoding="utf-8"
        )
        result = subprocess.run(
            [hadolint, "--failure-threshold", "style", str(bad)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "DL3008" in result.stdout


class TestDockerfileShape:
    """What deploy/Dockerfile builds."""

    def test_builds_a_wheel_then_installs_it_on_python_slim(self) -> None:
        """A builder stage runs `pip wheel`; the final stage is python:3.11-slim and installs the depmon wheel."""
        stages = _stages()
        assert list(stages) == ["builder", "runtime"]
        assert "PYTHON_IMAGE=python:3.11-slim" in _only("ARG")
        assert any(k == "RUN" and "pip wheel" in a for k, a in stages["builder"])
        runtime_installs = [a for k, a in stages["runtime"] if k == "RUN" and "pip install" in a]
        assert len(runtime_installs) == 1
        assert "--no-index" in runtime_installs[0]
        assert "from=builder" in runtime_installs[0]

    def test_dependencies_come_from_the_lock(self) -> None:
        """The builder takes the dependencies from requirements.lock with hashes, and depmon resolves nothing more."""
        wheels = [a for k, a in _stages()["builder"] if k == "RUN" and "pip wheel" in a]
        assert any("--require-hashes -r requirements.lock" in a for a in wheels), wheels
        assert all("--require-hashes" in a or "--no-deps" in a for a in wheels), wheels
        (runtime_install,) = [a for k, a in _stages()["runtime"] if k == "RUN" and "pip install" in a]
        assert "--no-deps" in runtime_install
        assert "pip check" in runtime_install

    def test_runs_as_a_numeric_non_root_user(self) -> None:
        """The final USER is a numeric uid:gid other than 0 (Kubernetes can verify runAsNonRoot)."""
        user = _only("USER", _stages()["runtime"])
        uid, _, gid = user.partition(":")
        assert uid.isdigit()
        assert gid.isdigit()
        assert int(uid) != 0
        assert int(gid) != 0

    def test_entrypoint_and_listen_address(self) -> None:
        """ENTRYPOINT is ["depmon","run"], CMD listens on 0.0.0.0:9464, and 9464 is exposed."""
        assert json.loads(_only("ENTRYPOINT")) == ["depmon", "run"]
        cmd = json.loads(_only("CMD"))
        assert cmd[cmd.index("--listen") + 1] == "0.0.0.0:9464"
        assert cmd[cmd.index("--state") + 1] == "/var/lib/depmon/depmon.sqlite3"
        assert _only("EXPOSE") == "9464"

    def test_healthcheck_asks_healthz_with_python(self) -> None:
        """The HEALTHCHECK runs python (no curl or wget in the slim image) against /healthz on 9464."""
        command = _healthcheck_command()
        assert command[:2] == ["python", "-c"]
        assert "http://127.0.0.1:9464/healthz" in command[2]
        assert not any(re.search(r"\b(curl|wget)\b", args) for _, args in INSTRUCTIONS)

    @pytest.mark.parametrize("health_server", [200], indirect=True)
    def test_healthcheck_passes_on_200(self, health_server: int) -> None:
        """The HEALTHCHECK command exits 0 when /healthz answers 200."""
        assert _run_healthcheck(health_server).returncode == 0

    @pytest.mark.parametrize("health_server", [503], indirect=True)
    def test_healthcheck_fails_on_503(self, health_server: int) -> None:
        """The HEALTHCHECK command exits non-zero when /healthz answers 503."""
        assert _run_healthcheck(health_server).returncode != 0

    def test_healthcheck_fails_when_nothing_listens(self) -> None:
        """The HEALTHCHECK command exits non-zero when the connection is refused."""
        server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
        port = server.server_address[1]
        server.server_close()
        assert _run_healthcheck(port).returncode != 0


class TestBuildContext:
    """deploy/Dockerfile.dockerignore and the builder's `pip wheel .` over what it lets through."""

    @pytest.mark.parametrize(
        ("path", "ignored"),
        [
            ("pyproject.toml", False),
            ("requirements.lock", False),
            ("monitor/config.py", False),
            ("probes/__init__.py", False),
            ("config/dependencies.yaml", False),
            (".venv/bin/python", True),
            (".git/HEAD", True),
            ("tests/unit/test_x.py", True),
            ("monitor/__pycache__/cli.cpython-311.pyc", True),
            ("depmon.egg-info/PKG-INFO", True),
        ],
    )
    def test_context_keeps_sources_and_drops_the_rest(self, path: str, ignored: bool) -> None:
        """The context keeps pyproject.toml, monitor/, probes/ and config/, and drops venv, git, tests and caches."""
        assert _ignored(path, _ignore_patterns()) is ignored

    def test_builder_wheel_has_the_console_script_and_bundled_config(self, tmp_path: Path) -> None:
        """`pip wheel .` over the filtered context builds a depmon wheel with `depmon` and the bundled config."""
        context = tmp_path / "context"
        patterns = _ignore_patterns()
        for directory, subdirectories, files in os.walk(ROOT):
            base = Path(directory).relative_to(ROOT)
            subdirectories[:] = [d for d in subdirectories if not _ignored((base / d).as_posix(), patterns)]
            for name in files:
                relative = (base / name).as_posix()
                if not _ignored(relative, patterns):
                    (context / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / relative, context / relative)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--quiet",
                "--wheel-dir",
                str(tmp_path / "wheels"),
                str(context),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (wheel,) = (tmp_path / "wheels").glob("depmon-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
        assert "depmon = monitor.entry:main" in entry_points.decode()  # SIGHUP ignored before the heavy imports
        assert "monitor/entry.py" in names
        assert any(n.startswith("monitor/bundled/") and n.endswith(".yaml") for n in names)
