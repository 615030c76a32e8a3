"""The pytest-asyncio fixtures of netlayers.pytest_asyncio_plugin, run by pytest-asyncio.

These tests are marked ``asyncio`` and take no ``anyio_backend``: pytest-asyncio
(strict mode, set in pyproject.toml) runs them, not anyio's plugin.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from captp import E, far
from netlayers.pytest_asyncio_plugin import (
    ocapn_network,
    ocapn_network_options,
    ocapn_pair,
    ocapn_pair_bootstrap,
)
from netlayers.testing import NodeSet

FIXTURES = (ocapn_network, ocapn_network_options, ocapn_pair, ocapn_pair_bootstrap)


@far
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    def fork(self) -> Counter:
        return Counter()


def test_pytest_asyncio_runs_in_strict_mode(request: pytest.FixtureRequest) -> None:
    assert request.config.getini("asyncio_mode") == "strict"
    assert request.config.pluginmanager.hasplugin("asyncio")
    assert request.config.pluginmanager.hasplugin("anyio")


class TestPair:
    @pytest.fixture
    def ocapn_pair_bootstrap(self) -> tuple[Any, Any]:
        return None, Counter()

    @pytest.mark.asyncio
    async def test_calls_and_pipelining_cross_the_pair(self, ocapn_pair: Any) -> None:
        asyncio.current_task()  # raises if this is not pytest-asyncio's loop
        a, _b = ocapn_pair
        counter = a.bootstrap()
        assert await E(counter).incr() == 1
        assert await E(E(counter).fork()).incr() == 1
        assert await E(counter).incr() == 2

    @pytest.mark.asyncio
    async def test_local_sends_work_in_the_test(self, ocapn_pair: Any) -> None:
        assert await E(Counter()).incr() == 1


class TestNetwork:
    @pytest.fixture
    def ocapn_network_options(self) -> dict[str, Any]:
        return {"latency": 0.01}

    @pytest.mark.asyncio
    async def test_nodes_on_the_network_enliven_each_other(self, ocapn_network: NodeSet) -> None:
        alice, bob = await ocapn_network.node(), await ocapn_network.node()
        counter = await alice.enliven(bob.publish(Counter()))
        assert await E(counter).incr() == 1
        assert ocapn_network.network.latency == 0.01
