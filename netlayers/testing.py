"""Testing helpers: a connected pair, and a small in-memory network of nodes.

Nothing here opens a socket; messages travel as real encoded bytes, so a
test of your own far objects exercises the code a network would.

* :func:`connect_pair`: two bare CapTP connections joined by a pipe (from
  :mod:`netlayers.memory`, re-exported here);
* :class:`SimNetwork`: an in-memory network whose links can be slow
  (``latency``) and can fail (``loss``, or :meth:`SimNetwork.break_links`);
* :func:`open_network`: a :class:`SimNetwork` plus :class:`~ocapn.Node`\\ s
  started on it (:meth:`NodeSet.node`), all closed when the block ends.

The pytest fixtures built on these live in :mod:`netlayers.pytest_plugin`
(anyio's pytest plugin) and :mod:`netlayers.pytest_asyncio_plugin`
(pytest-asyncio).

What ``loss`` means: CapTP runs over reliable, ordered transports (TCP,
WebSocket), which never drop one message and deliver the next; what a real
network does to them is end the connection.  So each message sent on a
:class:`SimNetwork` link ends that link with probability ``loss``: both
ends see the connection lost, and every promise that travelled over it breaks
with :class:`~captp.ConnectionLost`.  A node dials again on the next
``enliven``.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal

import anyio
import anyio.abc
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from netlayers.memory import connect_pair
from ocapn.locators import PeerLocation
from ocapn.netlayer import ConnectionHandler
from ocapn.node import Node
from ocapn.wire import SPEC_PROFILE, WireProfile

__all__ = ["SIM_TRANSPORT", "NodeSet", "SimChannel", "SimNetlayer", "SimNetwork",
           "connect_pair", "open_network"]

SIM_TRANSPORT: Final = "memory-testing-only"


class _Link:
    """One connection: two directions, and whether the network has cut it."""

    __slots__ = ("failed", "network", "open_ends", "streams")

    def __init__(self, network: SimNetwork) -> None:
        self.network = network
        self.failed = False
        self.open_ends = 2
        self.streams: list[MemoryObjectSendStream[tuple[float, bytes]]] = []

    def fail(self) -> None:
        if self.failed:
            return
        self.failed = True
        for stream in self.streams:
            stream.close()
        self.network._links.discard(self)


class SimChannel:
    """One end of a :class:`SimNetwork` link (a message channel: one message per send)."""

    def __init__(
        self,
        link: _Link,
        send: MemoryObjectSendStream[tuple[float, bytes]],
        receive: MemoryObjectReceiveStream[tuple[float, bytes]],
    ) -> None:
        self._link = link
        self._send = send
        self._receive = receive
        self._closed = False

    def send_nowait(self, data: bytes) -> None:
        """Queue one message for the other end (or end the link, with probability ``loss``)."""
        link = self._link
        if self._closed:
            raise anyio.ClosedResourceError
        if link.failed:
            raise anyio.BrokenResourceError("the simulated link failed")
        network = link.network
        if network.loss and network._random.random() < network.loss:
            link.fail()
            raise anyio.BrokenResourceError("the simulated link failed")
        due = time.monotonic() + network.latency if network.latency else 0.0
        self._send.send_nowait((due, data))

    async def receive(self) -> bytes:
        """The next message; :class:`anyio.EndOfStream` once the other end closed."""
        if self._link.failed:
            raise anyio.BrokenResourceError("the simulated link failed")
        due, data = await self._receive.receive()
        if due:
            delay = due - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
        if self._link.failed:
            raise anyio.BrokenResourceError("the simulated link failed")
        return data

    async def aclose(self) -> None:
        """Close this end: the other end reads what was sent, then end of stream."""
        if self._closed:
            return
        self._closed = True
        self._send.close()
        self._receive.close()
        self._link.open_ends -= 1
        if not self._link.open_ends:
            self._link.network._links.discard(self._link)


class SimNetwork:
    """An in-memory network for tests: nodes find each other by designator.

    ``latency``: seconds each message spends in flight; ``loss``: the
    probability that a message ends its link instead of arriving (see the
    module docs); ``seed``: makes the losses repeatable.
    """

    def __init__(self, *, latency: float = 0.0, loss: float = 0.0, seed: int | None = None) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss is a probability between 0 and 1, not {loss!r}")
        if latency < 0 or not math.isfinite(latency):
            raise ValueError(f"latency is a non-negative number of seconds, not {latency!r}")
        self.latency = latency
        self.loss = loss
        self._random = random.Random(seed)
        self._listeners: dict[str, MemoryObjectSendStream[SimChannel]] = {}
        self._links: set[_Link] = set()

    def netlayer(self, designator: str | None = None) -> SimNetlayer:
        """A new netlayer on this network (``designator``: random if not given)."""
        return SimNetlayer(self, designator or secrets.token_hex(8))

    @property
    def links(self) -> int:
        """How many links are open now."""
        return len(self._links)

    def break_links(self) -> int:
        """End every open link now, as a network failure would; how many there were."""
        links = list(self._links)
        for link in links:
            link.fail()
        return len(links)

    def _dial(self, designator: str) -> SimChannel:
        inbox = self._listeners.get(designator)
        if inbox is None:
            raise ConnectionRefusedError(f"nobody listens at {designator!r} on this network")
        link = _Link(self)
        a_send, b_receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
        b_send, a_receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
        link.streams = [a_send, b_send]
        ours, theirs = SimChannel(link, a_send, a_receive), SimChannel(link, b_send, b_receive)
        try:
            inbox.send_nowait(theirs)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ConnectionRefusedError(f"{designator!r} is not accepting connections") from None
        self._links.add(link)
        return ours


class SimNetlayer:
    """A netlayer on a :class:`SimNetwork` (transport ``memory-testing-only``)."""

    transport = SIM_TRANSPORT
    framing: Literal["message"] = "message"

    def __init__(self, network: SimNetwork, designator: str) -> None:
        self.network = network
        self.designator = designator
        self._location: PeerLocation | None = None

    @property
    def location(self) -> PeerLocation:
        """Our locator (valid once :meth:`serve` has started)."""
        if self._location is None:
            raise RuntimeError("the netlayer is not serving yet")
        return self._location

    async def serve(
        self, handler: ConnectionHandler, *, task_status: TaskStatus[PeerLocation]
    ) -> None:
        """Accept connections until cancelled, each in a task of its own."""
        if self.designator in self.network._listeners:
            raise ValueError(f"designator {self.designator!r} is taken on this network")
        send, receive = anyio.create_memory_object_stream[SimChannel](1024)
        self.network._listeners[self.designator] = send
        self._location = PeerLocation(SIM_TRANSPORT, self.designator)
        try:
            async with anyio.create_task_group() as tg, receive:

                async def run(channel: SimChannel) -> None:
                    try:
                        await handler(channel)
                    finally:
                        await channel.aclose()

                task_status.started(self._location)
                async for channel in receive:
                    tg.start_soon(run, channel)
        finally:
            self.network._listeners.pop(self.designator, None)
            send.close()

    @asynccontextmanager
    async def connect(self, location: PeerLocation) -> AsyncIterator[SimChannel]:
        """A channel to the peer with that designator on this network."""
        if location.transport != SIM_TRANSPORT:
            raise ValueError(f"not a {SIM_TRANSPORT} locator: {location}")
        channel = self.network._dial(location.designator)
        try:
            yield channel
        finally:
            await channel.aclose()


class NodeSet:
    """Nodes on one :class:`SimNetwork`, each running until :func:`open_network` ends."""

    def __init__(
        self, network: SimNetwork, task_group: anyio.abc.TaskGroup, profile: WireProfile
    ) -> None:
        self.network = network
        self.nodes: list[Node] = []
        self._task_group = task_group
        self._profile = profile

    async def node(self, designator: str | None = None) -> Node:
        """Start a new node on the network; it runs until the ``open_network`` block ends."""
        node = Node(self.network.netlayer(designator), profile=self._profile)
        await self._task_group.start(self._run, node)
        self.nodes.append(node)
        return node

    @staticmethod
    async def _run(node: Node, *, task_status: TaskStatus[None]) -> None:
        async with node:
            task_status.started()
            await anyio.sleep_forever()


@asynccontextmanager
async def open_network(
    *,
    latency: float = 0.0,
    loss: float = 0.0,
    seed: int | None = None,
    profile: WireProfile = SPEC_PROFILE,
) -> AsyncIterator[NodeSet]:
    """A :class:`SimNetwork` to start nodes on; they all close when the block ends.

    ::

        async with open_network(latency=0.01) as net:
            alice, bob = await net.node(), await net.node()
            uri = bob.publish(Greeter())
            greeter = await alice.enliven(uri)
    """
    network = SimNetwork(latency=latency, loss=loss, seed=seed)
    async with anyio.create_task_group() as tg:
        try:
            yield NodeSet(network, tg, profile)
        finally:
            tg.cancel_scope.cancel()
