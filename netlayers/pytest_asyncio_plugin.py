"""pytest fixtures for tests of far objects under pytest-asyncio (strict or auto mode).

The same fixtures as :mod:`netlayers.pytest_plugin`, for suites that run
their async tests with pytest-asyncio instead of anyio's plugin::

    from netlayers.pytest_asyncio_plugin import ocapn_pair, ocapn_pair_bootstrap

    @pytest.fixture
    def ocapn_pair_bootstrap():
        return None, Greeter()

    @pytest.mark.asyncio
    async def test_greet(ocapn_pair):
        a, _b = ocapn_pair
        assert await E(a.bootstrap()).greet("x") == "hello, x"

pytest-asyncio sets a fixture up and runs the test in different tasks, and
an anyio task group cannot span two tasks; so each fixture runs its pair or
network in a task of its own for the length of the test, and hands the test
the vat it runs in (eventual sends to local objects work in the test too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from captp import Connection
from captp._vat import Scheduler, _current_vat
from netlayers.testing import NodeSet, connect_pair, open_network

__all__ = ["ocapn_network", "ocapn_network_options", "ocapn_pair", "ocapn_pair_bootstrap"]

T = TypeVar("T")


async def hosted(make: Callable[[], AbstractAsyncContextManager[T]]) -> AsyncIterator[T]:
    """Enter ``make()`` in a task of its own; yield its value until the caller is done."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[T, Scheduler | None]] = loop.create_future()
    stop = asyncio.Event()

    async def host() -> None:
        try:
            async with make() as value:
                ready.set_result((value, _current_vat.get()))
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
                return
            raise

    task = asyncio.create_task(host())
    try:
        value, vat = await ready
    except BaseException:
        await task
        raise
    token = _current_vat.set(vat)
    try:
        yield value
    finally:
        with contextlib.suppress(ValueError):  # teardown may run in another context
            _current_vat.reset(token)
        stop.set()
        await task


@pytest.fixture
def ocapn_pair_bootstrap() -> tuple[Any, Any]:
    """What the two ends of ``ocapn_pair`` serve: ``(a's, b's)``; override to set them."""
    return None, None


@pytest.fixture
def ocapn_network_options() -> dict[str, Any]:
    """Keyword arguments for :func:`~netlayers.testing.open_network`; override to set them."""
    return {}


@pytest_asyncio.fixture
async def ocapn_pair(
    ocapn_pair_bootstrap: tuple[Any, Any],
) -> AsyncIterator[tuple[Connection, Connection]]:
    """Two connections joined in memory, closed after the test."""
    boot_a, boot_b = ocapn_pair_bootstrap
    async for pair in hosted(lambda: connect_pair(boot_a, boot_b)):
        yield pair


@pytest_asyncio.fixture
async def ocapn_network(ocapn_network_options: dict[str, Any]) -> AsyncIterator[NodeSet]:
    """An in-memory network to start nodes on, closed (nodes and all) after the test."""
    async for net in hosted(lambda: open_network(**ocapn_network_options)):
        yield net
