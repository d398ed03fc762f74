"""The outbox: every event and message is written to the store first, then delivered through its sink.

The pager writes events with its decisions (`Store.apply`) and calls `queued()`; `put()` writes
one directly. `Outbox.run()` is the delivery loop. Each dedup key is delivered by a task of its
own, oldest pending event first (so each key is delivered in order), and keys never wait on
each other: a slow answer for one key holds that key only. The `Delivery` decides:

- accepted: marked, done;
- dropped (a 400 only: the event itself is invalid): marked with the reason, logged as
  `pagerduty_event_dropped`, counted as outcome `dropped`, never retried; the key moves on;
- retry (everything else: 429, 5xx, 401/403/404/407/413 from a proxy or a wrong URL, network
  errors, timeouts): retried after an exponential backoff with full jitter (`Backoff`); after a
  429 at least `Retry-After`, or `rate_limited` seconds without one.

Retry times are kept on the monotonic clock (`clock`), so a step of the wall clock neither
delays nor hastens them; the store's `next_attempt_at` (wall time) is informational, and a
restarted daemon retries what is pending at once.

Each row names its destination (`pagerduty`, `slack:<channel>`: `sinks.Destination`); the sink of
its kind delivers it (`sinks.Sink`, one module per kind) and every kind is ordered, retried,
counted and logged alike, under its kind's names (`sinks.SinkKind`). A kind without a sink (no
routing key, no webhooks), or a destination its sink cannot deliver (a channel without a
webhook), is dry run: the row is marked `dry_run` and logged (`would_page`,
`slack_message_skipped`), and nothing is sent. Pending events live in the store, so a new
`Outbox` over the same file (a restarted daemon) delivers them. `drain()` delivers what it can at
shutdown.

The loop sleeps through a `Wakeup`, its only way of waiting: tests give it one driven by a fake
clock, so backoff schedules play out without real waiting.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import structlog

from monitor.metrics import Metrics
from monitor.pagerduty.clients import Delivery
from monitor.paging.sinks import Destination, Sink, SinkKind, Sinks
from monitor.paging.sinks.pagerduty_events import EVENTS
from monitor.paging.sinks.pagerduty_rest import REST
from monitor.store import OutboxEvent, OutboxHead, Store

__all__ = ["Backoff", "Outbox", "Wakeup"]

log = structlog.get_logger("depmon.outbox")

Action = Literal["trigger", "resolve"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delays: full jitter over `base * 2^(attempt-1)`, capped at `cap` seconds.

    After a 429 the delay is at least PagerDuty's `Retry-After` (at most `max_retry_after`), or
    `rate_limited` seconds when it sent none: PagerDuty asks for a backoff of minutes there.
    """

    base: float = 1.0
    cap: float = 300.0
    rate_limited: float = 30.0
    max_retry_after: float = 3600.0

    def delay(self, attempt: int, delivery: Delivery, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 for the first)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))
        delay = rng.uniform(0.0, ceiling)
        if delivery.http_status == 429:
            floor = self.rate_limited if delivery.retry_after is None else delivery.retry_after
            delay = max(delay, min(floor, self.max_retry_after))
        return delay


class Wakeup:
    """A level-triggered signal: `set()` wakes the next (or current) `wait()`, which then resets it."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        """Wake the waiter (now, or at its next wait)."""
        self._event.set()

    async def wait(self, at_most: float | None) -> None:
        """Return when set, or after `at_most` seconds (None: only when set)."""
        with anyio.move_on_after(at_most):
            await self._event.wait()
        if self._event.is_set():
            self._event = anyio.Event()


class Outbox:
    """The durable queue in front of PagerDuty and Slack; see the module docstring.

    `sinks` maps each kind of destination to its sink (None: that kind is dry run). `clock` is the
    monotonic clock retries are scheduled on, `wall_clock` gives the UNIX times written to the
    store, `rng` the jitter, `wake` the loop's sleep. At most `max_concurrent` dedup keys are sent
    at once; one key is never sent concurrently with itself. The store's pending heads are scanned
    at most once per `scan_every` seconds: every delivery that ends wakes the loop, and with 1,000
    events pending each scan reads 1,000 heads.
    """

    def __init__(
        self,
        store: Store,
        sinks: Sinks,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wake: Wakeup | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        max_concurrent: int = 4,
        error_pause: float = 1.0,
        replica: str = "depmon",
        lease: float = 20.0,
        poll: float | None = None,
        scan_every: float = 0.1,
    ) -> None:
        self._store = store
        self._sinks = _by_name(sinks)
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._in_flight: set[tuple[str, str]] = set()  # (destination, dedup key) with a delivery under way
        self._retry_at: dict[int, float] = {}  # event id -> `clock` time before which it is not retried
        self._rng = rng if rng is not None else random.Random()
        self._wake = wake if wake is not None else Wakeup()
        self._backoff = backoff if backoff is not None else Backoff()
        self._send_slots = anyio.CapacityLimiter(max_concurrent)
        self._error_pause = error_pause
        # Among replicas any one delivers: each head is claimed for `lease` seconds, longer than one
        # attempt can take (the sender's 15 s deadline and its grace), so a claimer that dies
        # mid-delivery leaves it to another after at most that; the store is read every `poll`
        # seconds for the events the leader wrote (None: one replica, woken by `queued()`).
        self._replica = replica
        self._lease = lease
        self._poll = poll
        self._scan_every = scan_every
        self._held: frozenset[str] = frozenset()  # dedup keys whose people-facing rows wait (`hold`)

    @property
    def dry_run(self) -> bool:
        """True when PagerDuty events are logged instead of sent (no routing key)."""
        return self._sinks.get(EVENTS.name, (EVENTS, None))[1] is None

    async def put(self, dedup_key: str, action: Action, body: Mapping[str, Any]) -> int:
        """Write an event to the store, then wake the delivery loop; returns the event's id.

        `body` is the Events v2 event; `event_action` and `dedup_key` are set from the arguments
        and a `routing_key` is never stored (the sender adds it).
        """
        event = {key: value for key, value in body.items() if key != "routing_key"}
        event["event_action"] = action
        event["dedup_key"] = dedup_key
        event_id = await self._store.enqueue(dedup_key, action, event, self._wall_clock())
        self.queued()
        return event_id

    async def send_now(self, body: Mapping[str, Any]) -> Delivery:
        """Send one PagerDuty event at once, around the store: the page of a store that cannot commit
        (SPEC 11.4). Counted and logged like a delivery; in dry run it is logged, not sent."""
        action = str(body.get("event_action", "trigger"))
        fields = {"dedup_key": body.get("dedup_key"), "action": action, "direct": True}
        kind, sink = self._sinks.get(EVENTS.name, (EVENTS, None))
        destination = kind.at()
        if sink is None or not sink.can_deliver(destination):
            log.info(kind.skipped, reason=kind.skip_reason, summary=_summary(body), **fields)
            return Delivery("accepted", None, "dry run: logged, not sent")
        # A sink that raises ends in `retry` here too: the caller (the self page) tries again.
        delivery = await _attempt(kind, sink, destination, body, fields)
        outcome = (
            "accepted" if delivery.status == "accepted" else "dropped" if delivery.status == "dropped" else "retried"
        )
        kind.counter(self._metrics).labels(action=action, outcome=outcome).inc()
        report = log.info if outcome == "accepted" else log.error
        report(f"{kind.event}_{outcome}", reason=delivery.message, http_status=delivery.http_status, **fields)
        return delivery

    def use_sinks(self, sinks: Sinks) -> None:
        """Deliver through these from now on (a reload's new routing key, URL or webhooks; None: dry run)."""
        self._sinks = _by_name(sinks)
        self._wake.set()

    def hold(self, dedup_keys: frozenset[str]) -> None:
        """The incidents whose dependency is in a window or silenced: their rows of a kind that acts on
        people (escalation's REST writes) wait until they are not held any more (SPEC 11.2)."""
        if dedup_keys != self._held:
            self._held = dedup_keys
            self._wake.set()

    def _waits(self, head: OutboxHead) -> bool:
        """True when this head is held (see `hold`)."""
        if head.dedup_key not in self._held:
            return False
        known = self._sinks.get(Destination.parse(head.destination).kind)
        return known is not None and known[0].waits_for_people

    def count_cancelled(self, steps: list[str]) -> None:
        """Escalation writes cancelled (their incident resolved, their trigger dropped): counted and logged."""
        for step in steps:
            REST.counter(self._metrics).labels(**REST.labels("trigger", {"step": step}), outcome="cancelled").inc()
        if steps:
            log.info(f"{REST.event}_cancelled", steps=steps)

    def queued(self) -> None:
        """A PagerDuty event was written to the store (with a decision): deliver it."""
        self._metrics.outbox_pending.inc()
        self._metrics.outbox_pending_by_destination.labels(destination=EVENTS.name).inc()
        self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The delivery loop; runs until cancelled. Reports ready at once."""
        task_status.started()
        scanned_at = -math.inf
        async with anyio.create_task_group() as deliveries:
            while True:
                # A burst of deliveries ending wakes the loop once per delivery: one scan per
                # `scan_every` serves them all (the first wake after a quiet spell scans at once).
                await anyio.sleep(max(0.0, scanned_at + self._scan_every - anyio.current_time()))
                scanned_at = anyio.current_time()
                delay: float | None
                try:
                    delay = await self._start_due(deliveries)
                    await self._publish_pending()
                except Exception:
                    log.exception("outbox_loop_failed")
                    self._metrics.loop_errors.labels(loop="outbox").inc()
                    delay = self._error_pause
                if self._poll is not None:
                    delay = self._poll if delay is None else min(delay, self._poll)
                await self._wake.wait(delay)

    async def drain(self, deadline_seconds: float) -> int:
        """Deliver what is pending, backoff or not, until empty, stuck or the deadline; returns how many are left.

        Runs shielded from cancellation, bounded by `deadline_seconds` (plus at most one
        sender deadline: a request already in a worker thread is abandoned, not interrupted).
        """
        with anyio.move_on_after(deadline_seconds, shield=True) as scope:
            try:
                # Each pass sends every idle key's head once; stop when a pass settles nothing
                # and no delivery of the run loop is still under way.
                while True:
                    settled = await self._deliver_pass()
                    if not settled and not self._in_flight:
                        break
                    if not settled:
                        await self._wake.wait(0.05)
            except Exception:
                log.exception("outbox_drain_failed")
        with anyio.move_on_after(5.0, shield=True):
            left = await self._publish_pending()
            log.info("outbox_drained", left=left, deadline_reached=scope.cancelled_caught)
            return left
        return -1  # the store did not answer in time

    async def _start_due(self, deliveries: anyio.abc.TaskGroup) -> float | None:
        """Start a delivery task for each idle key whose head is due; seconds until the next one is."""
        now = self._clock()
        next_due: float | None = None
        for event in await self._heads():
            if _queue(event) in self._in_flight or self._waits(event):
                continue
            due = self._retry_at.get(event.id, now)
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            self._in_flight.add(_queue(event))
            deliveries.start_soon(self._deliver_key, event)
        return None if next_due is None else next_due - now

    async def _heads(self) -> list[OutboxHead]:
        """The heads to deliver: among replicas, those claimed for this one; alone, every pending head
        (nobody else delivers: no claim to write, no commit per wake-up)."""
        if self._poll is None:
            return await self._store.pending_heads(math.inf)
        return await self._store.claim_heads(self._replica, self._wall_clock(), self._lease)

    async def _deliver_key(self, head: OutboxHead) -> bool:
        """Deliver one key's head (its body read now); the loop is woken when it is done, whatever happened."""
        try:
            async with self._send_slots:
                event = await self._store.outbox_event(head.id)
                if event.status != "pending":  # settled since the scan (by another replica)
                    return True
                return await self._deliver(event)
        except Exception:
            log.exception("outbox_delivery_failed", event_id=head.id, dedup_key=head.dedup_key)
            self._metrics.loop_errors.labels(loop="outbox").inc()
            self._retry_at[head.id] = self._clock() + self._error_pause
            return False
        finally:
            self._in_flight.discard(_queue(head))
            self._wake.set()

    async def _deliver_pass(self) -> bool:
        """Send the head of every idle key once, now; True when some event was settled."""
        settled: list[bool] = []

        async def deliver(head: OutboxHead) -> None:
            settled.append(await self._deliver_key(head))

        async with anyio.create_task_group() as tg:
            for event in await self._heads():
                if _queue(event) not in self._in_flight and not self._waits(event):
                    self._in_flight.add(_queue(event))
                    tg.start_soon(deliver, event)
        return any(settled)

    async def _publish_pending(self) -> int:
        """Publish what waits, per destination kind and PagerDuty's events alone; returns every pending row."""
        counts = await self._store.pending_by_kind()
        # The label values are the kinds this outbox delivers (a bounded set), never a channel.
        for name in self._sinks:
            self._metrics.outbox_pending_by_destination.labels(destination=name).set(counts.get(name, 0))
        self._metrics.outbox_pending.set(counts.get(EVENTS.name, 0))
        return sum(counts.values())

    async def _deliver(self, event: OutboxEvent) -> bool:
        """Deliver one event; True when it is settled (accepted, dropped, dry run or skipped)."""
        fields = {
            "event_id": event.id,
            "dedup_key": event.dedup_key,
            "action": event.action,
            "destination": event.destination,
        }
        destination = Destination.parse(event.destination)
        known = self._sinks.get(destination.kind)
        if known is None:  # a kind this daemon has no module for: nothing could ever deliver it
            self.count_cancelled(await self._store.mark_dry_run(event.id))
            log.warning("outbox_event_skipped", reason=f"no sink for destination kind {destination.kind!r}", **fields)
            return True
        kind, sink = known
        if sink is None or not sink.can_deliver(destination):
            self.count_cancelled(await self._store.mark_dry_run(event.id))
            log.info(kind.skipped, reason=kind.skip_reason, summary=_summary(event.body), **fields)
            return True
        delivery = await _attempt(kind, sink, destination, event.body, fields)
        counter = kind.counter(self._metrics)
        labels = kind.labels(event.action, event.body)
        if delivery.status == "accepted":
            self._retry_at.pop(event.id, None)
            await self._store.mark_accepted(event.id, self._wall_clock())
            counter.labels(**labels, outcome="accepted").inc()
            log.info(f"{kind.event}_accepted", attempts=event.attempts + 1, **fields)
            return True
        if delivery.status == "dropped":
            self._retry_at.pop(event.id, None)
            self.count_cancelled(await self._store.mark_dropped(event.id, delivery.message))
            counter.labels(**labels, outcome=delivery.outcome or "dropped").inc()
            log.error(f"{kind.event}_dropped", reason=delivery.message, http_status=delivery.http_status, **fields)
            return True
        attempt = event.attempts + 1
        delay = self._backoff.delay(attempt, delivery, self._rng)
        self._retry_at[event.id] = self._clock() + delay
        retry_at = self._wall_clock() + delay
        await self._store.schedule_retry(event.id, retry_at, delivery.message, hold_until=retry_at + self._lease)
        counter.labels(**labels, outcome="retried").inc()
        log.warning(
            f"{kind.event}_retry",
            reason=delivery.message,
            http_status=delivery.http_status,
            attempt=attempt,
            retry_in_seconds=round(delay, 3),
            **fields,
        )
        return False


def _queue(event: OutboxEvent | OutboxHead) -> tuple[str, str]:
    """The ordered queue an event belongs to: its destination and dedup key."""
    return event.destination, event.dedup_key


def _by_name(sinks: Sinks) -> dict[str, tuple[SinkKind, Sink | None]]:
    """The sinks by the kind a row's destination names."""
    return {kind.name: (kind, sink) for kind, sink in sinks.items()}


async def _attempt(
    kind: SinkKind, sink: Sink, destination: Destination, body: Mapping[str, Any], fields: Mapping[str, Any]
) -> Delivery:
    """One attempt through `sink`; a sink that raises (a bug) is a failure to retry, never a lost event."""
    try:
        return await sink.send(destination, body)
    except Exception as exc:
        log.exception(f"{kind.event}_sender_crashed", **fields)
        return Delivery("retry", None, f"sender raised {exc.__class__.__name__}")


def _summary(body: Mapping[str, Any]) -> str | None:
    """A PagerDuty event's summary, for a dry run's log (None for a Slack message)."""
    payload = body.get("payload")
    return str(payload.get("summary")) if isinstance(payload, dict) and "summary" in payload else None
