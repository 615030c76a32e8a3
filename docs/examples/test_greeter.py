"""Testing your own far objects with the fixtures of netlayers.pytest_plugin (anyio)."""

from typing import Any

import pytest

from captp import ConnectionLost, E, far
from netlayers.pytest_plugin import ocapn_network, ocapn_network_options, ocapn_pair
from netlayers.testing import NodeSet

__all__ = ["ocapn_network", "ocapn_network_options", "ocapn_pair"]  # the fixtures used here

pytestmark = pytest.mark.anyio  # run every test here under anyio's pytest plugin


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # or "trio"; parametrize to run under both


@far
class Greeter:
    def greet(self, name: str) -> str:
        return f"hello, {name}"


@pytest.fixture
def ocapn_pair_bootstrap() -> tuple[Any, Any]:  # this replaces the plugin's default
    return None, Greeter()  # a serves nothing, b serves a Greeter


async def test_greet(ocapn_pair: Any) -> None:
    a, _b = ocapn_pair
    assert await E(a.bootstrap()).greet("x") == "hello, x"


async def test_greet_across_a_failing_network(ocapn_network: NodeSet) -> None:
    client, server = await ocapn_network.node(), await ocapn_network.node()
    greeter = await client.enliven(server.publish(Greeter()))
    assert await E(greeter).greet("y") == "hello, y"
    ocapn_network.network.break_links()
    with pytest.raises(ConnectionLost):
        await E(greeter).greet("z")
