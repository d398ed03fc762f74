"""The probe kinds: the config's spec models and the explicit map of probe functions agree."""

from __future__ import annotations

import inspect
import typing

import pytest

from monitor.config import PROBE_KINDS, AnyProbeSpec
from probes import PROBERS, prober_for

pytestmark = pytest.mark.unit


class TestProbeKinds:
    """`PROBE_KINDS` (from the spec models) and `PROBERS` (the map)."""

    def test_the_kinds_are_the_spec_models_kinds(self) -> None:
        """Each spec model of the union gives one kind, in the union's order."""
        assert PROBE_KINDS == ("http", "oauth2", "tls", "tcp", "dns", "prometheus", "datadog")
        assert len(PROBE_KINDS) == len(typing.get_args(AnyProbeSpec))

    @pytest.mark.parametrize("kind", PROBE_KINDS)
    def test_every_kind_has_its_probe(self, kind: str) -> None:
        """Kind `x` runs `probes/x.py`'s `async def probe(spec, ctx)`."""
        probe = prober_for(kind)
        assert inspect.iscoroutinefunction(probe)
        assert probe.__module__ == f"probes.{kind}"
        assert list(inspect.signature(probe).parameters) == ["spec", "ctx"]

    def test_the_map_has_exactly_the_configs_kinds(self) -> None:
        """No kind the config accepts lacks a function, and the map has no kind the config refuses."""
        assert tuple(PROBERS) == PROBE_KINDS

    def test_an_unknown_kind_has_none(self) -> None:
        """A kind no spec model names has no probe (the config refuses it before)."""
        with pytest.raises(KeyError):
            prober_for("icmp")
