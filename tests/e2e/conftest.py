"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.sim.fake_pagerduty import FakePagerDuty


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    """A loopback fake of PagerDuty's Events API (and REST), for daemons configured by hand."""
    with FakePagerDuty() as fake:
        yield fake
