"""`depmon check`: which dependencies it probes, parents before children, and its exit status."""

from __future__ import annotations

import io
import json

import pytest

from monitor.commands import check
from monitor.config import AnyProbeSpec, Config
from monitor.results import Outcome, ProbeResult
from probes import ProbeContext
from tests.helpers import bundled_config

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bundled() -> Config:
    return bundled_config()


class TestRunCheck:
    """`run_check` over the bundled config, with the probes answered in-process."""

    async def _check(
        self,
        monkeypatch: pytest.MonkeyPatch,
        config: Config,
        only: list[str] | None,
        down: frozenset[str] = frozenset(),
    ) -> tuple[int, list[str], str]:
        """Exit status, the dependencies probed in the order their probes started, and the JSON report."""
        by_probe = {id(spec): dep_id for dep_id, spec in config.iter_probes()}
        started: list[str] = []

        async def fake_run_probe(spec: AnyProbeSpec, ctx: ProbeContext, timeout: float) -> ProbeResult:
            dep_id = by_probe[id(spec)]
            if dep_id not in started:
                started.append(dep_id)
            if dep_id in down:
                return ProbeResult.failure(Outcome.CONNECT, "refused")
            return ProbeResult.success("fine")

        monkeypatch.setattr(check, "run_probe", fake_run_probe)
        out = io.StringIO()
        status = await check.run_check(config, only, as_json=True, out=out)
        return status, started, out.getvalue()

    @pytest.mark.anyio
    async def test_parents_are_probed_first_and_only_what_is_needed(
        self, monkeypatch: pytest.MonkeyPatch, bundled: Config
    ) -> None:
        """Checking EVSS probes SSOe OAuth first (EVSS needs its token) and nothing else."""
        status, started, out = await self._check(monkeypatch, bundled, ["evss"])
        assert (status, started) == (0, ["ssoe-oauth", "evss"])
        assert [row["dependency"] for row in json.loads(out)["dependencies"]] == ["evss"]

    @pytest.mark.anyio
    async def test_every_dependency_after_its_parents(self, monkeypatch: pytest.MonkeyPatch, bundled: Config) -> None:
        """Without a selection every dependency is probed once, each after every dependency it needs."""
        _, started, _ = await self._check(monkeypatch, bundled, None)
        assert sorted(started) == sorted(bundled.dependencies)
        for dep_id, dependency in bundled.dependencies.items():
            assert all(started.index(parent) < started.index(dep_id) for parent in dependency.depends_on)

    @pytest.mark.anyio
    async def test_a_failing_dependency_is_exit_1_and_an_unknown_id_exit_2(
        self, monkeypatch: pytest.MonkeyPatch, bundled: Config
    ) -> None:
        """A dependency not up makes the exit status 1; an id not in the config is refused with 2, unprobed."""
        status, _, _ = await self._check(monkeypatch, bundled, ["caseflow"], down=frozenset({"caseflow"}))
        assert status == 1
        status, started, out = await self._check(monkeypatch, bundled, ["nosuch"])
        assert (status, started) == (2, [])
        assert "unknown dependency: nosuch" in out
