"""Fixtures the integration tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme


@pytest.fixture
def ca() -> trustme.CA:
    """A throwaway certificate authority for loopback TLS servers."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    """The path of `ca`'s certificate as a PEM file (a probe's `ca_file`)."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)
