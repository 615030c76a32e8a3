"""A chat service in its own process for the confinement tests: an OCapN node over TCP.

``python tests/confine_chat_node.py`` prints the chat's sturdyref URI, then
serves until killed.  Its API key never leaves this process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))

from captp import far
from netlayers import tcp_testing_only
from ocapn import Node


@far
class RemoteChat:
    def __init__(self) -> None:
        self._key = "sk-remote-secret"

    def complete(self, messages: list[dict[str, str]]) -> str:
        return f"pid {os.getpid()} answers {messages[-1]['content']!r}"


async def main() -> None:
    async with Node(tcp_testing_only()) as node:
        print(node.publish(RemoteChat(), b"chat"), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main)
