"""A node with a state directory in its own process, for the crash tests.

``python tests/persist_node.py STATE_DIR BACKEND`` (``asyncio``, ``uvloop``
or ``trio``) serves a Bank under the name ``bank`` and prints its URI (the
same URI at every start), then serves until killed.  The Bank makes
persistent counters, logs and directories (which hold counters in their
state) and revokes them: a write-heavy workload where
every answer follows a committed transaction.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from _persist_util import PCounter, PDir, PLog

from captp import far
from netlayers import tcp_testing_only
from ocapn import Node


@far
class Bank:
    def __init__(self, node: Node) -> None:
        self._node = node

    def make_counter(self) -> str:
        return str(self._node.publish(PCounter()))

    def make_log(self) -> str:
        return str(self._node.publish(PLog()))

    def make_dir(self) -> str:
        return str(self._node.publish(PDir()))

    def revoke(self, uri: str) -> bool:
        return self._node.revoke(uri)


async def main(state: str) -> None:
    async with Node(tcp_testing_only(), state=state, restorers=[PCounter, PLog, PDir]) as node:
        print(node.publish(Bank(node), name="bank"), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    backend = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, sys.argv[1], backend="asyncio" if backend == "uvloop" else backend,
              backend_options=options)
