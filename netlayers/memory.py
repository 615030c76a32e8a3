"""The in-memory netlayer: connected channels in one process.

It carries real encoded bytes, one message per send, so a test of your own
far objects exercises exactly the code a socket would, without the socket.
:func:`connect_pair` joins two bare connections; a :class:`MemoryNetwork`
lets several OCapN nodes in one process find each other by designator
(transport ``memory-testing-only``, a message transport).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import anyio
import anyio.abc
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from captp._connection import Channel, Connection
from captp._vat import open_vat, running_loop
from ocapn.locators import PeerLocation
from ocapn.netlayer import ConnectionHandler
from ocapn.wire import SPEC_PROFILE, OCapNWire, WireProfile

__all__ = [
    "MEMORY_TRANSPORT",
    "MemoryChannel",
    "MemoryNetlayer",
    "MemoryNetwork",
    "connect_pair",
    "memory_pipe",
]

MEMORY_TRANSPORT: Final = "memory-testing-only"

_Push = Callable[[Callable[[bytes], None], Callable[[BaseException], None]], None]


class _Mailbox:
    """One direction of the pipe: queued messages and at most one waiting reader.

    A reader that took the messages with :meth:`MemoryChannel.push` gets them
    from an event-loop callback instead (``on_data``): one callback hands over
    every message queued since the last, with no task wake-up.
    """

    __slots__ = ("closed", "due", "items", "loop", "on_data", "on_end", "scheduled", "waiter")

    def __init__(self) -> None:
        self.items: deque[bytes] = deque()
        self.due: deque[float] = deque()  # arrival time of each item, with latency
        self.waiter: Any = None  # an asyncio future or an anyio event
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.on_end: Callable[[BaseException], None] | None = None
        self.scheduled = False

    def wake(self) -> None:
        if self.on_data is not None:
            if not self.scheduled and self.loop is not None:
                self.scheduled = True
                self.loop.call_soon(self.hand_over)
            return
        waiter, self.waiter = self.waiter, None
        if waiter is None:
            return
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(None)
        else:
            waiter.set()

    def hand_over(self) -> None:
        # Push mode: every message queued so far, then the end if it came.
        self.scheduled = False
        items = self.items
        while items and self.on_data is not None:
            self.on_data(items.popleft())
        if self.closed and self.on_end is not None:
            on_end, self.on_end, self.on_data = self.on_end, None, None
            on_end(anyio.EndOfStream())

    async def wait(self) -> None:
        loop = running_loop()
        if loop is not None:
            fut = loop.create_future()
            self.waiter = fut
            try:
                await fut
            finally:
                if self.waiter is fut:
                    self.waiter = None
        else:
            event = anyio.Event()
            self.waiter = event
            try:
                await event.wait()
            finally:
                if self.waiter is event:
                    self.waiter = None


class MemoryChannel:
    """One end of an in-memory pipe (a message channel: each send is one message).

    ``latency`` (seconds) delays every message, to simulate a network link.
    """

    def __init__(self, inbox: _Mailbox, outbox: _Mailbox, latency: float = 0.0) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False
        self._latency = latency

    def send_nowait(self, data: bytes) -> None:
        """Queue one message for the other end."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._outbox.closed:
            raise anyio.BrokenResourceError
        if self._latency:
            self._outbox.due.append(time.monotonic() + self._latency)
        outbox = self._outbox
        outbox.items.append(data)
        if outbox.waiter is not None or (outbox.on_data is not None and not outbox.scheduled):
            outbox.wake()

    @property
    def push(self) -> _Push | None:
        """Hand each message to a callback instead of :meth:`receive` (asyncio, no latency only).

        ``None`` where it is not offered: under trio, and on a pipe with latency.
        """
        if self._latency or running_loop() is None:
            return None
        return self._push

    def _push(
        self, on_data: Callable[[bytes], None], on_end: Callable[[BaseException], None]
    ) -> None:
        # From now on each message goes to on_data from an event-loop callback
        # (what was queued already, at once), the end of stream to on_end.
        inbox = self._inbox
        inbox.loop = running_loop()
        inbox.on_data = on_data
        inbox.on_end = on_end
        inbox.hand_over()

    async def receive(self) -> bytes:
        """The next message; :class:`anyio.EndOfStream` once the other end closed."""
        inbox = self._inbox
        while not inbox.items:
            if self._closed:
                raise anyio.ClosedResourceError
            if inbox.closed:
                raise anyio.EndOfStream
            await inbox.wait()
        if inbox.due:
            delay = inbox.due.popleft() - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
        return inbox.items.popleft()

    async def aclose(self) -> None:
        """Close this end: the other end reads what was sent, then end of stream."""
        if self._closed:
            return
        self._closed = True
        self._outbox.closed = True
        self._outbox.wake()
        self._inbox.closed = True
        self._inbox.on_data = self._inbox.on_end = None  # our own reader stops, as receive would
        self._inbox.items.clear()
        self._inbox.due.clear()
        self._inbox.wake()


def memory_pipe(latency: float = 0.0) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected channels: what one sends, the other receives, in order.

    ``latency``: seconds each message spends in flight (default none).
    """
    ab, ba = _Mailbox(), _Mailbox()
    return MemoryChannel(ba, ab, latency), MemoryChannel(ab, ba, latency)


@asynccontextmanager
async def connect_pair(
    bootstrap_a: Any = None,
    bootstrap_b: Any = None,
    *,
    profile: WireProfile = SPEC_PROFILE,
    latency: float = 0.0,
) -> AsyncIterator[tuple[Connection, Connection]]:
    """Two OCapN connections joined by an in-memory pipe, running until the block ends.

    ``a`` serves ``bootstrap_a`` and ``b`` serves ``bootstrap_b``;
    ``a.bootstrap()`` is a promise for ``b``'s bootstrap object and vice versa.
    Messages travel as real Syrup bytes, each ``latency`` seconds in flight
    (default none).  The body runs in the pair's vat, so
    eventual sends to local objects work inside it too.
    """
    async with open_vat() as vat, anyio.create_task_group() as tg:
        chan_a, chan_b = memory_pipe(latency)
        a = Connection(
            chan_a, lambda s: OCapNWire(s, profile), vat, bootstrap=bootstrap_a, name="a"
        )
        b = Connection(
            chan_b, lambda s: OCapNWire(s, profile), vat, bootstrap=bootstrap_b, name="b"
        )
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        try:
            yield a, b
        finally:
            await a.aclose("pair closed")
            await b.aclose("pair closed")
            tg.cancel_scope.cancel()


class MemoryNetwork:
    """A registry of in-memory netlayers: several nodes in one process can reach each other.

    Each :class:`MemoryNetlayer` joined to the same network is a peer at
    ``<ocapn-peer 'memory-testing-only "<designator>" false>``.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self._listeners: dict[str, MemoryObjectSendStream[Channel]] = {}

    def netlayer(self, designator: str | None = None) -> MemoryNetlayer:
        """A new netlayer on this network (``designator``: random if not given)."""
        return MemoryNetlayer(self, designator)

    def _listen(self, designator: str, inbox: MemoryObjectSendStream[Channel]) -> None:
        if designator in self._listeners:
            raise ValueError(f"designator {designator!r} is taken on this memory network")
        self._listeners[designator] = inbox

    def _unlisten(self, designator: str) -> None:
        self._listeners.pop(designator, None)

    def _dial(self, designator: str) -> Channel:
        inbox = self._listeners.get(designator)
        if inbox is None:
            raise ConnectionRefusedError(f"nobody listens at {designator!r} on this memory network")
        ours, theirs = self._pipe()
        try:
            inbox.send_nowait(theirs)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ConnectionRefusedError(f"{designator!r} is not accepting connections") from None
        return ours

    def _pipe(self) -> tuple[Channel, Channel]:
        """The two ends of a new connection (the dialer's first)."""
        return memory_pipe(self.latency)


class MemoryNetlayer:
    """A netlayer on a :class:`MemoryNetwork`: one message per send, no sockets."""

    transport = MEMORY_TRANSPORT
    framing: Literal["message"] = "message"

    def __init__(self, network: MemoryNetwork, designator: str | None = None) -> None:
        self.network = network
        self.designator = designator or secrets.token_hex(8)
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
        """Accept connections from the network until cancelled, each in a task of its own."""
        send, receive = anyio.create_memory_object_stream[Channel](1024)
        self.network._listen(self.designator, send)
        self._location = PeerLocation(MEMORY_TRANSPORT, self.designator)
        try:
            async with anyio.create_task_group() as tg, receive:

                async def run(channel: Channel) -> None:
                    try:
                        await handler(channel)
                    finally:
                        await channel.aclose()

                task_status.started(self._location)
                async for channel in receive:
                    tg.start_soon(run, channel)
        finally:
            self.network._unlisten(self.designator)
            send.close()

    @asynccontextmanager
    async def connect(self, location: PeerLocation) -> AsyncIterator[Channel]:
        """A channel to the peer with that designator on this network."""
        if location.transport != MEMORY_TRANSPORT:
            raise ValueError(f"not a {MEMORY_TRANSPORT} locator: {location}")
        channel = self.network._dial(location.designator)
        try:
            yield channel
        finally:
            await channel.aclose()
