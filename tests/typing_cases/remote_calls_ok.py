"""Typed remote calls that mypy --strict accepts, with the types it infers."""

from typing import Any, assert_type

from captp import E, Promise, RemoteRef
from ocapn import Node

from .far_interfaces import Counter, Store


async def typed(node: Node, uri: str) -> None:
    store: RemoteRef[Store] = await node.enliven(uri)
    assert_type(await E(store).get("a"), str)
    assert_type(E(store).keys(), Promise[list[str]])
    assert_type(await E(store).put("a", "1"), None)
    counter = E(store).counter(41)  # not awaited: pipelined
    assert_type(counter, Promise[RemoteRef[Counter]])
    assert_type(await E(counter).incr(), int)
    assert_type(await E(E(store).counter(1)).incr(), int)
    ref = await counter
    assert_type(ref, RemoteRef[Counter])
    n: int = await E(ref).incr()
    print(n)


async def untyped(node: Node, uri: str) -> None:
    anything = await node.enliven(uri)  # no interface declared: calls are not checked
    assert_type(E(anything).whatever(1, 2), Any)
    bare: RemoteRef = anything
    assert_type(E(bare).whatever(), Any)
    assert_type(await E(bare).whatever(), Any)
