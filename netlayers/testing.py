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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
import anyio.abc
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from captp import Channel
from netlayers.memory import MemoryNetlayer, MemoryNetwork, connect_pair
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


class SimNetwork(MemoryNetwork):
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
        super().__init__(latency)
        self.loss = loss
        self._random = random.Random(seed)
        self._links: set[_Link] = set()

    def netlayer(self, designator: str | None = None) -> SimNetlayer:
        """A new netlayer on this network (``designator``: random if not given)."""
        return SimNetlayer(self, designator)

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

    def _dial(self, designator: str) -> Channel:
        ours = super()._dial(designator)
        if isinstance(ours, SimChannel):  # always: _pipe made it
            self._links.add(ours._link)
        return ours

    def _pipe(self) -> tuple[Channel, Channel]:
        link = _Link(self)
        a_send, b_receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
        b_send, a_receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)
        link.streams = [a_send, b_send]
        return SimChannel(link, a_send, a_receive), SimChannel(link, b_send, b_receive)


class SimNetlayer(MemoryNetlayer):
    """A netlayer on a :class:`SimNetwork` (transport ``memory-testing-only``)."""

    def __init__(self, network: SimNetwork, designator: str | None = None) -> None:
        super().__init__(network, designator)
        self.network: SimNetwork = network


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
