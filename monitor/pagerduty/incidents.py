"""PagerDuty's incidents through the REST API: find the one a trigger opened, and write to it (SPEC 11.2).

`IncidentsClient` wraps one `pagerduty.RestApiV2Client`, like `MaintenanceClient` (read its
module for what is done to the package and why): every call is one request in a worker thread,
bounded by the transport, never retried here (the outbox owns retries), and ends in an answer
this module reads, never in one of the package's exceptions. Messages are secret-free.

- `find(incident_key)`: `GET /incidents?incident_key=KEY&statuses[]=triggered&statuses[]=acknowledged`,
  the id of the open incident an Events API trigger with that dedup key opened, or None when
  PagerDuty has none (yet: it creates incidents a moment after its 202);
- `write(method, path, body, from_email)`: one write, `From` header included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pagerduty
from pydantic import SecretStr

from monitor.logs import Redactor
from monitor.pagerduty.clients import (
    _REST_BASE_URL,
    _THREAD_GRACE,
    Delivery,
    _answer_detail,
    _bounded_int,
    _cause,
    _connection,
    _single_attempt,
    failed_delivery,
)
from monitor.proxies import DIRECT, Link

__all__ = ["Found", "IncidentsClient"]


@dataclass(frozen=True, slots=True)
class Found:
    """A look-up's end: `incident_id` when PagerDuty has it, else `failure` (a retry) or neither (none yet)."""

    incident_id: str | None = None
    failure: Delivery | None = None


class IncidentsClient:
    """Finds and writes to PagerDuty incidents; one bounded request per call. Close with `close()`."""

    def __init__(
        self, api_url: str, api_token: SecretStr, timeout: float = 10.0, deadline: float = 15.0, *, link: Link = DIRECT
    ) -> None:
        token = api_token.get_secret_value()
        if not token:
            raise ValueError("pagerduty.api_token is empty: no REST writes")
        self.api_url = api_url
        self.deadline = deadline
        self._redactor = Redactor([token])
        # Through `link`'s proxy, as every PagerDuty request (SPEC 11.5).
        self._client = pagerduty.RestApiV2Client(token, **_connection(api_url, _REST_BASE_URL, deadline, link))
        _single_attempt(self._client, timeout)
        self._limiter = anyio.CapacityLimiter(2)

    async def find(self, incident_key: str) -> Found:
        """The open incident of `incident_key`, none yet, or why PagerDuty could not say."""
        params = {"incident_key": incident_key, "statuses[]": ["triggered", "acknowledged"]}
        answer = await self._call("GET", "/incidents", params=params)
        if isinstance(answer, Delivery):
            return Found(failure=answer)
        if not 200 <= answer.status_code < 300:
            return Found(failure=self._failure(answer, "finding the incident"))
        try:
            incidents = json.loads(answer.content, parse_int=_bounded_int).get("incidents")
            ids = [str(item["id"]) for item in incidents if isinstance(item, dict) and item.get("id")]
        except (ValueError, RecursionError, AttributeError, TypeError, KeyError):
            return Found(
                failure=Delivery("retry", answer.status_code, "PagerDuty REST API answer holds no incidents list")
            )
        return Found(incident_id=ids[0] if ids else None)

    async def write(self, method: str, path: str, body: dict[str, Any], from_email: str) -> Delivery:
        """One write; 2xx accepted, 400 dropped (the write itself is invalid), anything else a retry."""
        answer = await self._call(method, path, json=body, headers={"From": from_email})
        if isinstance(answer, Delivery):
            return answer
        if 200 <= answer.status_code < 300:
            return Delivery("accepted", answer.status_code, f"PagerDuty REST API answered HTTP {answer.status_code}")
        return self._failure(answer, f"{method} {path}")

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx2.Response | Delivery:
        with anyio.move_on_after(self.deadline + _THREAD_GRACE):
            return await anyio.to_thread.run_sync(
                self._request, method, path, kwargs, limiter=self._limiter, abandon_on_cancel=True
            )
        return Delivery("retry", None, f"no answer from the PagerDuty REST API within {self.deadline:g} s")

    def _request(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx2.Response | Delivery:
        try:
            response = self._client.request(method, path, **kwargs)
        except pagerduty.Error as exc:
            if exc.response is None:
                return Delivery("retry", None, f"PagerDuty REST API unreachable ({_cause(exc)})")
            response = exc.response
        response.read()
        return response

    def _failure(self, response: httpx2.Response, doing: str) -> Delivery:
        status = response.status_code
        detail = self._redactor.scrub(_answer_detail(response))
        return failed_delivery(
            response, f"PagerDuty REST API answered HTTP {status} {doing}" + (f": {detail}" if detail else "")
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
