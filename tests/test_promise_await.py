"""Awaiting a promise: its value, its reason, cancellation, on every backend."""

from __future__ import annotations

import gc
import logging

import anyio
import pytest

from captp import BrokenPromise
from captp._promise import make_promise

pytestmark = pytest.mark.anyio


async def test_await_gives_the_value_once_the_promise_is_fulfilled() -> None:
    promise, resolver = make_promise()
    async with anyio.create_task_group() as tg:
        got: list[object] = []

        async def wait() -> None:
            got.append(await promise)

        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        resolver.resolve({"k": [1]})
    assert got == [{"k": [1]}]


async def test_await_follows_a_promise_resolved_with_another_pending_one() -> None:
    first, resolve_first = make_promise()
    second, resolve_second = make_promise()
    async with anyio.create_task_group() as tg:
        got: list[object] = []

        async def wait() -> None:
            got.append(await first)

        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        resolve_first.resolve(second)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        resolve_second.resolve("late")
    assert got == ["late"]


async def test_await_raises_the_reason_itself_or_a_broken_promise_error() -> None:
    reason = ValueError("nope")
    for broken_with, expected in [(reason, ValueError), ("just data", BrokenPromise)]:
        promise, resolver = make_promise()
        caught: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_catch, promise, caught)
            await anyio.wait_all_tasks_blocked()
            resolver.break_(broken_with)
        assert type(caught[0]) is expected
        if broken_with is reason:
            assert caught[0] is reason
        else:
            assert isinstance(caught[0], BrokenPromise) and caught[0].reason == "just data"


async def test_a_promise_broken_with_stop_iteration_raises_runtime_error() -> None:
    # As a generator would: StopIteration must not escape an await.
    for settle_first in (True, False):
        promise, resolver = make_promise()
        if settle_first:
            resolver.break_(StopIteration("x"))
        caught: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_catch, promise, caught)
            await anyio.wait_all_tasks_blocked()
            resolver.break_(StopIteration("x"))
        assert len(caught) == 1 and type(caught[0]) is RuntimeError
        assert isinstance(caught[0].__cause__, StopIteration)


async def test_a_cancelled_waiter_leaves_nothing_behind_when_the_promise_breaks_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    promise, resolver = make_promise()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _await(promise))
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    with caplog.at_level(logging.DEBUG):
        resolver.break_(ValueError("after the waiter left"))
        await anyio.sleep(0)
        gc.collect()
        await anyio.sleep(0)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def _await(promise: object) -> None:
    await promise  # type: ignore[misc]


async def _catch(promise: object, caught: list[BaseException]) -> None:
    try:
        await promise  # type: ignore[misc]
    except Exception as exc:
        caught.append(exc)
