"""depmon: a dependency health monitor for the VA mobile app.

Data flows one way:

    config -> scheduler -> probes -> health (pure) -> impact (pure) -> incidents (pure)
           -> outbox -> PagerDuty;  metrics and the HTTP server are read-only views.
"""

from __future__ import annotations

__version__ = "0.1.0"
