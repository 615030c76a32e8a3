"""The tcp-testing-only netlayer (both its paths) and the in-memory network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from captp import E, far
from netlayers import MemoryNetwork, TcpTestingNetlayer
from netlayers.tcp_testing import address_of
from ocapn import LocatorError, Node, PeerLocation, PeerUnreachable, Sturdyref

pytestmark = pytest.mark.anyio

PATHS = pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "generic"])


@far
class Echo:
    def echo(self, x: Any) -> Any:
        return x


@asynccontextmanager
async def server(fast_path: bool) -> AsyncIterator[tuple[Node, Sturdyref]]:
    async with Node(TcpTestingNetlayer(fast_path=fast_path)) as node:
        yield node, node.publish(Echo())


def test_locator_hints_are_checked() -> None:
    good = PeerLocation("tcp-testing-only", "d", {"host": "127.0.0.1", "port": "22045"})
    assert address_of(good) == ("127.0.0.1", 22045)
    for hints in [None, {"host": "127.0.0.1"}, {"host": "localhost", "port": "1"},
                  {"host": "127.0.0.1", "port": "0"}, {"host": "127.0.0.1", "port": "x"},
                  {"host": "127.0.0.1", "port": True}]:
        with pytest.raises(LocatorError):
            address_of(PeerLocation("tcp-testing-only", "d", hints))
    with pytest.raises(LocatorError):
        address_of(PeerLocation("onion", "d"))
    with pytest.raises(LocatorError):
        TcpTestingNetlayer("::1")


async def test_location_carries_the_port_as_a_string() -> None:
    async with Node(TcpTestingNetlayer(designator="me")) as node:
        location = node.location
        assert location.designator == "me"
        assert location.hints is not None
        assert type(location.hints["port"]) is str and int(location.hints["port"]) > 0


@PATHS
async def test_many_concurrent_connections(fast_path: bool) -> None:
    """Idle sockets that never speak, and many clients calling at once, on one listener."""
    async with server(fast_path) as (node, sturdyref), AsyncExitStack() as stack:
        host, port = address_of(node.location)
        for _ in range(100):  # connections that never send a byte
            await stack.enter_async_context(await anyio.connect_tcp(host, port))
        clients = [await stack.enter_async_context(Node(TcpTestingNetlayer(fast_path=fast_path)))
                   for _ in range(20)]
        results: dict[int, list[Any]] = {}

        async def calls(i: int, client: Node) -> None:
            echo = await client.enliven(sturdyref)
            promises = [E(echo).echo([i, j]) for j in range(50)]
            results[i] = [await p for p in promises]

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i, client in enumerate(clients):
                    tg.start_soon(calls, i, client)
        assert results == {i: [[i, j] for j in range(50)] for i in range(20)}
        assert len(node.sessions) == 20


@PATHS
async def test_abort_is_followed_by_fin_not_reset(fast_path: bool) -> None:
    """The node aborts a bad peer, and the peer then reads an orderly end of stream."""
    async with server(fast_path) as (node, _):
        host, port = address_of(node.location)
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"<3'bad>" + b"x" * 10_000)  # unread data must not cause a reset
            received = b""
            with anyio.fail_after(10):
                while True:
                    try:
                        received += await stream.receive()
                    except anyio.EndOfStream:
                        break
        assert b"<8'op:abort" in received
        assert b"unknown operation <bad>" in received


@PATHS
async def test_unreachable_peer_fails_the_dial_only(fast_path: bool) -> None:
    async with server(fast_path) as (_, sturdyref), Node(
        TcpTestingNetlayer(fast_path=fast_path)
    ) as client:
        nobody = PeerLocation("tcp-testing-only", "x", {"host": "127.0.0.1", "port": "1"})
        with pytest.raises(PeerUnreachable):
            await client.enliven(Sturdyref(nobody, b"s"))
        assert await E(await client.enliven(sturdyref)).echo(3) == 3


async def test_memory_network() -> None:
    network = MemoryNetwork()
    async with Node(network.netlayer("a")) as a, Node(network.netlayer("b")) as b:
        assert a.location.to_uri() == "ocapn://a.memory-testing-only"
        echo = await b.enliven(a.publish(Echo()))
        assert await E(echo).echo([1, "two"]) == [1, "two"]
        with pytest.raises(PeerUnreachable, match="nobody listens"):
            await b.connect(PeerLocation("memory-testing-only", "c"))
        with pytest.raises(ValueError, match="taken"):
            async with Node(network.netlayer("a")):
                pass


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio", ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"]
)
async def test_protocol_channel_push_hands_over_reads_in_order() -> None:
    from netlayers import asyncio_tcp

    listener = await asyncio_tcp.listen("127.0.0.1", 0)
    client = await asyncio_tcp.connect("127.0.0.1", listener.port)
    server = await listener.accept()
    listener.close()
    got: list[bytes] = []
    ended: list[BaseException] = []
    client.send_nowait(b"before push ")
    with anyio.fail_after(10):
        while not server.buffered:  # it is received, not yet handed to anyone
            await anyio.sleep(0.001)
    server.push(got.append, ended.append)
    assert got == [b"before push "]
    for i in range(100):
        client.send_nowait(b"%d " % i)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.aclose)  # flush, FIN, then wait for the server's FIN
        with anyio.fail_after(10):
            while not ended:
                await anyio.sleep(0.001)
        assert b"".join(got) == b"before push " + b"".join(b"%d " % i for i in range(100))
        assert type(ended[0]) is anyio.EndOfStream
        await server.aclose()
