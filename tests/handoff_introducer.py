"""An introducer in its own process: hands a store's read-only facet to a keeper, exits at once.

``python tests/handoff_introducer.py STORE_URI KEEPER_URI`` runs
``await E(keeper).keep(E(store).make_readonly())``, prints ``done`` and
leaves (its node closes gracefully right away).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))

from captp import E
from netlayers import tcp_testing_only
from ocapn import Node


async def main(store_uri: str, keeper_uri: str) -> None:
    async with Node(tcp_testing_only()) as node:
        store = await node.enliven(store_uri)
        keeper = await node.enliven(keeper_uri)
        await E(keeper).keep(E(store).make_readonly())
    print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
