"""The http probe through an outbound forward proxy on loopback."""

from __future__ import annotations

import pytest

from monitor.config import HttpProbeSpec
from monitor.schedule.run_probe import run_probe
from monitor.sim.loopback import LoopbackServer, Response
from probes.context import ProbeContext
from tests.probes.http_loopback import ForwardProxy

pytestmark = pytest.mark.integration


class TestForwardProxy:
    @pytest.mark.anyio
    async def test_requests_go_through_the_configured_proxy(self) -> None:
        """Each probe run is one request forwarded by the proxy, in absolute form, for the configured URL."""
        upstream = LoopbackServer()
        upstream.route("GET", "/healthcheck", lambda request: Response(200, b'{"status": "pass"}'))
        with upstream:
            async with ForwardProxy(hosts={"evss.example.invalid": upstream.port}) as proxy:
                spec = HttpProbeSpec.model_validate(
                    {"name": "health", "url": "http://evss.example.invalid/healthcheck", "proxy": proxy.proxy_url}
                )
                ctx = ProbeContext()
                try:
                    results = [await run_probe(spec, ctx, 2.0) for _ in range(3)]
                finally:
                    await ctx.aclose()
            assert [r.ok for r in results] == [True, True, True]
            assert [r.target for r in proxy.requests] == ["http://evss.example.invalid/healthcheck"] * 3
            assert upstream.request_count == 3
            assert all(r.header("Host") == "evss.example.invalid" for r in upstream.requests)
