"""pytest fixtures for tests of far objects under anyio's pytest plugin.

Import the fixtures into a ``conftest.py`` or a test module::

    from netlayers.pytest_plugin import ocapn_network, ocapn_pair, ocapn_pair_bootstrap

    @pytest.fixture
    def ocapn_pair_bootstrap():
        return None, Greeter()          # what a serves, what b serves

    @pytest.mark.anyio
    async def test_greet(ocapn_pair):
        a, _b = ocapn_pair
        assert await E(a.bootstrap()).greet("x") == "hello, x"

* ``ocapn_pair``: ``(a, b)``, two connections joined in memory
  (:func:`~netlayers.testing.connect_pair`); they serve what
  ``ocapn_pair_bootstrap`` returns (override it; default: nothing);
* ``ocapn_network``: a :class:`~netlayers.testing.NodeSet` to start nodes on
  (``await ocapn_network.node()``); override ``ocapn_network_options`` to set
  ``latency``, ``loss`` or ``seed``.

Under pytest-asyncio use :mod:`netlayers.pytest_asyncio_plugin`, which has the
same fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from captp import Connection
from netlayers.testing import NodeSet, connect_pair, open_network

__all__ = ["ocapn_network", "ocapn_network_options", "ocapn_pair", "ocapn_pair_bootstrap"]


@pytest.fixture
def ocapn_pair_bootstrap() -> tuple[Any, Any]:
    """What the two ends of ``ocapn_pair`` serve: ``(a's, b's)``; override to set them."""
    return None, None


@pytest.fixture
def ocapn_network_options() -> dict[str, Any]:
    """Keyword arguments for :func:`~netlayers.testing.open_network`; override to set them."""
    return {}


@pytest.fixture
async def ocapn_pair(
    ocapn_pair_bootstrap: tuple[Any, Any],
) -> AsyncIterator[tuple[Connection, Connection]]:
    """Two connections joined in memory, closed after the test."""
    boot_a, boot_b = ocapn_pair_bootstrap
    async with connect_pair(boot_a, boot_b) as pair:
        yield pair


@pytest.fixture
async def ocapn_network(ocapn_network_options: dict[str, Any]) -> AsyncIterator[NodeSet]:
    """An in-memory network to start nodes on, closed (nodes and all) after the test."""
    async with open_network(**ocapn_network_options) as net:
        yield net
