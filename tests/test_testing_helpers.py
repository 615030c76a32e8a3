"""netlayers.testing and its anyio fixtures: a pair, a network with latency and loss."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from captp import ConnectionLost, E, far
from netlayers.pytest_plugin import (
    ocapn_network,
    ocapn_network_options,
    ocapn_pair,
    ocapn_pair_bootstrap,
)
from netlayers.testing import NodeSet, SimNetwork, open_network

pytestmark = pytest.mark.anyio

# The fixtures come from the plugin module; ruff sees them used only as names.
FIXTURES = (ocapn_network, ocapn_network_options, ocapn_pair, ocapn_pair_bootstrap)


@far
class Greeter:
    def __init__(self) -> None:
        self.calls = 0

    def greet(self, name: str) -> str:
        self.calls += 1
        return f"hello, {name}"

    def me(self) -> Greeter:
        return self


class TestPairFixture:
    @pytest.fixture
    def ocapn_pair_bootstrap(self) -> tuple[Any, Any]:
        return None, Greeter()

    async def test_a_call_crosses_the_pair(self, ocapn_pair: Any) -> None:
        a, b = ocapn_pair
        assert await E(a.bootstrap()).greet("x") == "hello, x"
        assert b.engine.dead is None

    async def test_local_sends_work_in_the_test(self, ocapn_pair: Any) -> None:
        assert await E(Greeter()).greet("local") == "hello, local"


async def test_network_fixture_runs_nodes_that_enliven(ocapn_network: NodeSet) -> None:
    alice, bob = await ocapn_network.node(), await ocapn_network.node("bob")
    uri = str(bob.publish(Greeter()))
    assert "memory-testing-only" in uri and "bob" in uri
    greeter = await alice.enliven(uri)
    assert await E(E(greeter).me()).greet("pipelined") == "hello, pipelined"
    assert ocapn_network.network.links == 1


class TestLatency:
    @pytest.fixture
    def ocapn_network_options(self) -> dict[str, Any]:
        return {"latency": 0.02}

    async def test_calls_arrive_over_a_slow_network(self, ocapn_network: NodeSet) -> None:
        alice, bob = await ocapn_network.node(), await ocapn_network.node()
        greeter = await alice.enliven(bob.publish(Greeter()))
        assert await E(greeter).greet("slow") == "hello, slow"


async def test_latency_holds_messages_back() -> None:
    async with open_network() as net:
        alice, bob = await net.node(), await net.node()
        greeter = await alice.enliven(bob.publish(target := Greeter()))
        net.network.latency = 30.0  # from now on each message is 30 s in flight
        with anyio.move_on_after(0.5):
            await E(greeter).greet("held")
        assert target.calls == 0  # not delivered: it is still on the wire


async def test_broken_links_break_promises_and_the_node_redials() -> None:
    async with open_network() as net:
        alice, bob = await net.node(), await net.node()
        uri = bob.publish(Greeter())
        greeter = await alice.enliven(uri)
        assert net.network.break_links() == 1
        with pytest.raises(ConnectionLost):
            await E(greeter).greet("gone")
        again = await alice.enliven(uri)
        assert await E(again).greet("back") == "hello, back"


async def test_a_lossy_network_ends_links_and_only_by_connection_lost() -> None:
    async with open_network(loss=0.2, seed=7) as net:
        alice, bob = await net.node(), await net.node()
        target = Greeter()
        uri = bob.publish(target)
        ok = lost = 0
        for i in range(40):
            try:
                greeter = await alice.enliven(uri)
                assert await E(greeter).greet(str(i)) == f"hello, {i}"
                ok += 1
            except ConnectionLost:
                lost += 1
            except Exception as exc:  # a dial that lost its handshake
                assert "PeerUnreachable" in type(exc).__name__, repr(exc)
                lost += 1
        assert ok > 0 and lost > 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="probability"):
        SimNetwork(loss=1.5)
    with pytest.raises(ValueError, match="latency"):
        SimNetwork(latency=-1)


async def test_closing_the_nodes_closes_their_links() -> None:
    async with open_network() as net:
        alice, bob = await net.node(), await net.node()
        await alice.enliven(bob.publish(Greeter()))
        assert net.network.links == 1
    assert net.network.links == 0
