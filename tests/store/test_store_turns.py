"""The store's turns: one call at a time, the decisions' calls before the others waiting (issue 10)."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from monitor.store.aio import Turns

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


async def _take(turns: Turns, name: str, first: bool, order: list[str], hold: anyio.Event | None = None) -> None:
    async with turns.turn(first=first):
        order.append(name)
        if hold is not None:
            await hold.wait()


async def test_decisions_go_before_the_others_waiting_each_lane_in_order() -> None:
    """While one call holds the store, two deliveries and two decisions wait: the decisions go first, in order."""
    turns, order, release = Turns(), [], anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_take, turns, "holder", False, order, release)
            await anyio.wait_all_tasks_blocked()
            for name, first in (("deliver-1", False), ("decide-1", True), ("deliver-2", False), ("decide-2", True)):
                tg.start_soon(_take, turns, name, first, order)
                await anyio.wait_all_tasks_blocked()
            release.set()
    assert order == ["holder", "decide-1", "decide-2", "deliver-1", "deliver-2"]


async def test_one_holder_at_a_time() -> None:
    """Many callers in both lanes: never two inside at once, and every one gets its turn."""
    turns, inside, most, done = Turns(), 0, 0, []

    async def call(i: int) -> None:
        nonlocal inside, most
        async with turns.turn(first=i % 3 == 0):
            inside += 1
            most = max(most, inside)
            await anyio.sleep(0)
            inside -= 1
            done.append(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(call, i)
    assert (most, sorted(done)) == (1, list(range(50)))


async def test_a_waiter_cancelled_gives_up_its_place_and_the_turn_goes_on() -> None:
    """A waiter cancelled before its turn leaves the queue; the one after it still gets the store."""
    turns, order, release = Turns(), [], anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_take, turns, "holder", False, order, release)
            await anyio.wait_all_tasks_blocked()
            with anyio.CancelScope() as gone:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(_take, turns, "cancelled", True, order)
                    await anyio.wait_all_tasks_blocked()
                    gone.cancel()
            tg.start_soon(_take, turns, "next", False, order)
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert order == ["holder", "next"]


async def test_a_waiter_cancelled_as_the_turn_reaches_it_passes_it_on() -> None:
    """Handed the turn and cancelled in the same step, before it runs: the turn goes on, never lost.

    anyio's own cancel scopes wait for such a task to run; a plain asyncio cancel (a shutdown's)
    does not, so that is what this uses.
    """
    turns, order, release = Turns(), [], anyio.Event()
    waiter: asyncio.Task[None] | None = None

    async def holder() -> None:
        async with turns.turn():
            order.append("holder")
            await release.wait()
        assert waiter is not None
        waiter.cancel()  # no await since the hand-over: the waiter holds the turn and has not run

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            waiter = asyncio.ensure_future(_take(turns, "cancelled", True, order))
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(_take, turns, "next", False, order)
            await anyio.wait_all_tasks_blocked()
            release.set()
        assert waiter.cancelled()
    assert order == ["holder", "next"]
