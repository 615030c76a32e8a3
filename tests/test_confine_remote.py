"""An endowment that lives on another machine: a compartment's guest calls a chat served by
an OCapN node in a second process, over tcp-testing-only, through the host."""

from __future__ import annotations

import os

import pytest
from procs import spawn

from captp.confine import Compartment, Invocation, caretaker, membrane, probe
from netlayers import tcp_testing_only
from ocapn import Node

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.interop,
    pytest.mark.skipif(
        not all(layer.ok for layer in probe().values()),
        reason=f"kernel layers missing: {[n for n, x in probe().items() if not x.ok]}",
    ),
]


async def test_guest_calls_an_object_on_another_node() -> None:
    with spawn("tests/confine_chat_node.py") as uri:
        async with Node(tcp_testing_only()) as node:
            remote_chat = await node.enliven(uri)
            seen: list[Invocation] = []
            logged, _ = membrane(remote_chat, seen.append)
            chat, revoke = caretaker(logged)
            async with Compartment({"chat": chat}) as c:
                reply = await c.evaluate(
                    "result = await E(chat).complete([{'role': 'user', 'content': 'hi'}])"
                )
                pid = int(reply.split()[1])
                assert reply == f"pid {pid} answers 'hi'"
                assert pid not in (os.getpid(), c.pid)  # answered by the other process
                assert [(i.method, i.ok) for i in seen] == [("complete", True)]
                secret = await c.evaluate("""
try:
    result = await E(chat)['_key']()
except Exception as e:
    result = str(e)
""")
                assert secret.startswith("TypeError: RemoteChat has no method '_key'")
                revoke()
                gone = await c.evaluate("""
try:
    result = await E(chat).complete([{'role': 'user', 'content': 'again'}])
except Exception as e:
    result = str(e)
""")
                assert gone.startswith("Revoked: ")
