"""deploy/systemd/depmon.service: its directives, `systemd-analyze verify` and `security`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "depmon.service"
MAX_EXPOSURE = 2.0  # systemd-analyze security: below 2.0 is "OK"; the unit scores about 1.3


def directives(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values in order; repeated keys (SystemCallFilter=) keep every value."""
    result: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        result.setdefault((section, key.strip()), []).append(value.strip())
    return result


DIRECTIVES = directives(UNIT.read_text(encoding="utf-8"))


def _service(key: str) -> list[str]:
    return DIRECTIVES.get(("Service", key), [])


def _exec_start() -> list[str]:
    (line,) = _service("ExecStart")
    return shlex.split(line)


def _unit_with_stub_executable(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart runs a stub: verify checks that the executable exists."""
    stub = tmp_path / "depmon"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8").replace(_exec_start()[0], str(stub))
    unit = tmp_path / UNIT.name
    unit.write_text(text, encoding="utf-8")
    return unit


def _analyze(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False, env=env, cwd=cwd)


class TestUnitDirectives:
    """What the unit file asks systemd for."""

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("StateDirectory", "depmon"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("CapabilityBoundingSet", ""),
            ("ExecReload", "/bin/kill -HUP $MAINPID"),
            ("KillSignal", "SIGTERM"),
            ("TimeoutStopSec", "30"),
            ("DynamicUser", "yes"),
            ("Environment", "DEPMON_CONFIG=/etc/depmon"),
        ],
    )
    def test_service_directive(self, key: str, expected: str) -> None:
        """The [Service] section sets the sandboxing and lifecycle directive to the required value."""
        assert _service(key) == [expected]

    def test_system_calls_are_filtered_to_the_service_set(self) -> None:
        """SystemCallFilter allows @system-service first, then only takes away from it."""
        filters = _service("SystemCallFilter")
        assert filters[0] == "@system-service"
        assert all(f.startswith("~") for f in filters[1:])

    def test_runs_depmon_with_its_state_directory(self) -> None:
        """ExecStart runs `depmon run` with --listen and a --state file inside StateDirectory's /var/lib/depmon."""
        argv = _exec_start()
        assert Path(argv[0]).name == "depmon"
        assert argv[1] == "run"
        assert re.fullmatch(r"[\d.]+:9464", argv[argv.index("--listen") + 1])
        state = Path(argv[argv.index("--state") + 1])
        assert state.parent == Path("/var/lib") / _service("StateDirectory")[0]

    def test_does_not_restart_on_an_invalid_config(self) -> None:
        """Exit status 2 (invalid config or port in use) does not trigger a restart loop."""
        assert _service("Restart") == ["on-failure"]
        assert _service("RestartPreventExitStatus") == ["2"]

    def test_is_wanted_by_multi_user(self) -> None:
        """The unit installs into multi-user.target and starts after the network is online."""
        assert DIRECTIVES[("Install", "WantedBy")] == ["multi-user.target"]
        assert DIRECTIVES[("Unit", "After")] == ["network-online.target"]


class TestSystemdAnalyze:
    """systemd's own checks of the unit (an offline analysis: no systemd needs to be running)."""

    @pytest.mark.needs_tool
    def test_verify_is_clean(self, systemd_analyze: str, tmp_path: Path) -> None:
        """`systemd-analyze verify` exits 0 and prints no warning (unknown keys are only warnings)."""
        unit = _unit_with_stub_executable(tmp_path)
        result = _analyze(systemd_analyze, "verify", str(unit), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (result.stdout + result.stderr).strip() == ""

    @pytest.mark.needs_tool
    def test_verify_reports_an_unknown_key(self, systemd_analyze: str, tmp_path: Path) -> None:
        """A misspelt directive makes `systemd-analyze verify` print a warning, so the check can fail."""
        unit = _unit_with_stub_executable(tmp_path)
        unit.write_text(unit.read_text(encoding="utf-8").replace("PrivateTmp=", "PrivateTemp="), encoding="utf-8")
        result = _analyze(systemd_analyze, "verify", str(unit), cwd=tmp_path)
        assert "Unknown key" in result.stderr

    @pytest.mark.needs_tool
    def test_security_exposure_is_low(self, systemd_analyze: str, tmp_path: Path) -> None:
        """`systemd-analyze security --offline=true` rates the unit's exposure below 2.0 ("OK")."""
        unit = _unit_with_stub_executable(tmp_path)
        result = _analyze(systemd_analyze, "security", "--offline=true", "--no-pager", str(unit), cwd=tmp_path)
        match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
        assert match, result.stdout + result.stderr
        assert float(match.group(1)) < MAX_EXPOSURE
