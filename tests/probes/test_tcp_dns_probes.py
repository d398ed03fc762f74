"""The tcp and dns probes against 127.0.0.1, `localhost` and the reserved `.invalid` domain."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from monitor.config import DnsProbeSpec, TcpProbeSpec
from monitor.results import Outcome, ProbeResult
from monitor.schedule.run_probe import run_probe
from probes.context import ProbeContext

pytestmark = pytest.mark.integration


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    context = ProbeContext()
    yield context
    await context.aclose()


async def run(spec: TcpProbeSpec | DnsProbeSpec, ctx: ProbeContext, timeout: float = 5.0) -> ProbeResult:
    with anyio.fail_after(timeout + 5):
        return await run_probe(spec, ctx, timeout)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@contextlib.contextmanager
def listening_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections while the block runs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


@pytest.mark.anyio
class TestTcpProbe:
    """The tcp probe: connect within the deadline, then close."""

    async def test_listening_port_is_ok(self, ctx: ProbeContext) -> None:
        """A port that accepts is ok, with the address connected to."""
        with listening_port() as port:
            result = await run(TcpProbeSpec(name="port", kind="tcp", host="127.0.0.1", port=port), ctx)
        assert (result.ok, result.outcome, result.detail) == (True, Outcome.OK, f"connected to 127.0.0.1:{port}")
        assert result.facts == {"address": "127.0.0.1"}

    async def test_closed_port_is_connect(self, ctx: ProbeContext) -> None:
        """A refused connection is outcome connect, naming host and port."""
        port = closed_port()
        result = await run(TcpProbeSpec(name="port", kind="tcp", host="127.0.0.1", port=port), ctx)
        assert (result.ok, result.outcome, result.detail) == (
            False,
            Outcome.CONNECT,
            f"connection refused to 127.0.0.1:{port}",
        )

    async def test_unresolvable_host_is_dns(self, ctx: ProbeContext) -> None:
        """A name that does not resolve is outcome dns, not connect."""
        result = await run(TcpProbeSpec(name="port", kind="tcp", host="nothing.invalid", port=5432), ctx)
        assert (result.ok, result.outcome, result.detail) == (False, Outcome.DNS, "name not found: nothing.invalid")

    async def test_resolved_name_connects(self, ctx: ProbeContext) -> None:
        """A host name is resolved and connected to like an address."""
        with listening_port() as port:
            result = await run(TcpProbeSpec(name="port", kind="tcp", host="localhost", port=port), ctx)
        assert (result.ok, result.detail) == (True, f"connected to localhost:{port}")


@pytest.mark.anyio
class TestDnsProbe:
    """The dns probe: resolution, expected addresses, readable failures."""

    async def test_localhost_resolves_to_loopback(self, ctx: ProbeContext) -> None:
        """localhost with expect_addresses 127.0.0.1 is ok and lists what it resolved to."""
        spec = DnsProbeSpec(name="resolve", kind="dns", host="localhost", expect_addresses=["127.0.0.1"])
        result = await run(spec, ctx)
        assert (result.ok, result.outcome) == (True, Outcome.OK)
        assert result.detail.startswith("localhost -> ")
        assert "127.0.0.1" in result.detail

    async def test_missing_expected_address_is_condition(self, ctx: ProbeContext) -> None:
        """An expected address that is not among the answers is outcome condition, observed and expected shown."""
        spec = DnsProbeSpec(name="resolve", kind="dns", host="127.0.0.1", expect_addresses=["127.0.0.1", "10.9.9.9"])
        result = await run(spec, ctx)
        assert (result.ok, result.outcome, result.detail) == (
            False,
            Outcome.CONDITION,
            "[DNS] 127.0.0.1 -> 127.0.0.1, expected 10.9.9.9",
        )

    async def test_expected_ipv6_address_is_compared_normalized(self, ctx: ProbeContext) -> None:
        """Expected IPv6 addresses match in any spelling."""
        spec = DnsProbeSpec(name="resolve", kind="dns", host="::1", expect_addresses=["0:0:0:0:0:0:0:1"])
        result = await run(spec, ctx)
        assert (result.ok, result.detail) == (True, "::1 -> ::1")

    async def test_unknown_name_is_dns(self, ctx: ProbeContext) -> None:
        """A name under .invalid (RFC 6761) is outcome dns: name not found."""
        result = await run(DnsProbeSpec(name="resolve", kind="dns", host="nothing.invalid"), ctx)
        assert (result.ok, result.outcome, result.detail) == (False, Outcome.DNS, "name not found: nothing.invalid")
