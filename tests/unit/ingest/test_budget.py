"""The byte budget of objects in flight: weighted, first come first served, cancel-safe."""

from __future__ import annotations

import asyncio

import pytest

from trailguard.ingest.budget import ByteBudget, Reservation


async def test_takes_up_to_the_limit_then_waits_in_order() -> None:
    budget = ByteBudget(100)
    assert await budget.acquire(60) == 60
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        await budget.acquire(size)
        order.append(name)

    big = asyncio.create_task(take("big", 70))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # would fit, but the big one came first
    await asyncio.sleep(0)
    assert order == []
    assert budget.in_use == 60
    budget.release(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]
    assert budget.in_use == 80


async def test_an_object_bigger_than_the_budget_takes_all_of_it() -> None:
    budget = ByteBudget(100)
    assert await budget.acquire(500) == 100
    assert budget.in_use == 100


async def test_a_cancelled_waiter_gives_its_place_and_nothing_leaks() -> None:
    budget = ByteBudget(100)
    await budget.acquire(90)
    waiting = asyncio.create_task(budget.acquire(50))
    after = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0)
    assert not after.done()  # behind the waiting one
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await after == 5
    assert budget.in_use == 95


async def test_a_reservation_gives_back_what_it_holds_once() -> None:
    budget = ByteBudget(100)
    held = Reservation(budget)
    await held.take(30)
    await held.take(20)  # a second attempt before the first was given back
    assert budget.in_use == 50
    held.release()
    held.release()
    assert budget.in_use == 0


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ByteBudget(0)
