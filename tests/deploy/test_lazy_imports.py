"""What a deployment does not use is not loaded (issue 27): the daemon on its SQLite file, without a TLS
probe, never imports psycopg (~25 MB) nor cryptography (~17 MB)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _loaded(code: str) -> dict[str, bool]:
    script = (
        f"import sys, json\n{code}\nprint(json.dumps({{m: m in sys.modules for m in ('psycopg', 'cryptography')}}))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(result.stdout.splitlines()[-1]))


class TestLazyImports:
    """The heavy backends load with their first use."""

    def test_the_daemon_loads_neither(self) -> None:
        """Importing the daemon and the CLI loads neither psycopg nor cryptography."""
        assert _loaded("import monitor.daemon, monitor.commands.cli") == {"psycopg": False, "cryptography": False}

    @pytest.mark.parametrize(
        ("code", "module"),
        [
            ("from monitor.store import PostgresStore", "psycopg"),
            ("from probes._certs import parse_certificate; parse_certificate(b'')", "cryptography"),
        ],
    )
    def test_each_loads_with_its_first_use(self, code: str, module: str) -> None:
        """The PostgreSQL store loads psycopg, and the first certificate read loads cryptography."""
        guarded = f"try:\n    {code}\nexcept ValueError:\n    pass"
        assert _loaded(guarded)[module] is True
