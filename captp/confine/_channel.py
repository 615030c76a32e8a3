"""The host <-> worker channel: a CapTP session over one connected Unix socket.

This is the only module of :mod:`captp.confine` that touches the project's
session machinery (:class:`~captp.Connection`, the OCapN wire), so a change
of the driver is ported here and nowhere else.

The session speaks OCapN's Syrup with ``len:`` framing: a frame's length
comes first, so a worker that announces a frame above ``max_message`` is cut
off before the host buffers it; and a position the peer never exported
aborts the session (fail-closed), which is what confinement needs.  The
codec lives in ``ocapn/``, a layer above ``captp/``; it is imported when a
session is built, never when :mod:`captp.confine` is imported (see
``spec-notes/0034-confinement.md``; the layering test lists this one edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.abc

from captp._connection import Connection
from captp._vat import Scheduler, running_loop
from captp.errors import ConnectionLost

__all__ = ["SocketChannel", "host_build", "open_channel", "preload", "session_over"]

# Bytes read but not yet handled above which reading pauses (the peer then
# blocks on a full socket buffer instead of growing ours).
MAX_BUFFERED: Final = 1 << 20

# Bytes asked for per read (a socketpair's buffer holds about this much).
READ_SIZE: Final = 1 << 16

OnData = Callable[[bytes], None]
OnEnd = Callable[[BaseException], None]


class _Protocol(asyncio.Protocol):
    """asyncio fast path: writes go straight to the transport; reads queue here or are pushed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.ended: BaseException | None = None
        # Push mode: each read goes to on_data from this callback (no task wake-up).
        self.on_data: OnData | None = None
        self.on_end: OnEnd | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > MAX_BUFFERED and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._end(anyio.EndOfStream())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(anyio.BrokenResourceError(repr(exc)) if exc is not None else anyio.EndOfStream())

    def _end(self, exc: BaseException) -> None:
        if self.ended is None:
            self.ended = exc
            on_end, self.on_end = self.on_end, None
            self.on_data = None
            if on_end is not None:
                on_end(exc)
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _BufferedProtocol(_Protocol, asyncio.BufferedProtocol):
    """For asyncio's own loop: its transport reads into one reused buffer.

    Given a plain ``Protocol``, that transport allocates a fresh 256 KiB
    ``bytes`` per read, which costs three system calls (mmap, mremap,
    munmap) per message.  uvloop reads into its own buffer and hands over
    bytes of the size read: there the plain protocol saves a copy.
    """

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray(READ_SIZE)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        with memoryview(self.buffer) as view:
            self.data_received(bytes(view[:nbytes]))


class SocketChannel:
    """A :class:`captp.Channel` over a connected stream socket, on any anyio backend.

    Under asyncio it also offers ``push(on_data, on_end)``: from then on each
    read is handed to ``on_data`` from the transport's callback, and the end
    of the stream to ``on_end``.  Elsewhere ``push`` is ``None``.
    """

    push: Callable[[OnData, OnEnd], None] | None

    def __init__(self) -> None:
        self._protocol: _Protocol | None = None
        self._stream: anyio.abc.SocketStream | None = None
        self._queue: list[bytes] = []
        self._wakeup: anyio.Event | None = None
        self._closed = False
        self._failed: BaseException | None = None
        self._writer_done = anyio.Event()
        self.push = None

    async def _start(self, sock: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        sock.setblocking(False)
        loop = running_loop()
        if loop is not None:
            factory = _BufferedProtocol if isinstance(loop, asyncio.BaseEventLoop) else _Protocol
            _, protocol = await loop.connect_accepted_socket(factory, sock)
            self._protocol = protocol
            self.push = self._push
        else:
            self._stream = await anyio.abc.SocketStream.from_socket(sock)
            self._wakeup = anyio.Event()
            tg.start_soon(self._writer)

    def _push(self, on_data: OnData, on_end: OnEnd) -> None:
        protocol = self._protocol
        assert protocol is not None
        while protocol.chunks:  # what arrived before push mode began
            on_data(protocol.chunks.popleft())
        protocol.buffered = 0
        if protocol.paused and protocol.transport is not None:
            protocol.paused = False
            protocol.transport.resume_reading()
        if protocol.ended is not None:
            on_end(protocol.ended)
            return
        protocol.on_data = on_data
        protocol.on_end = on_end

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data`` for the peer."""
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        if protocol is not None:
            if protocol.ended is not None or protocol.transport is None:
                raise anyio.BrokenResourceError
            protocol.transport.write(data)
            return
        if self._failed is not None:
            raise anyio.BrokenResourceError from self._failed
        self._queue.append(data)
        assert self._wakeup is not None
        self._wakeup.set()

    async def _writer(self) -> None:
        assert self._stream is not None and self._wakeup is not None
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                while self._queue:
                    data = b"".join(self._queue)
                    self._queue.clear()
                    await self._stream.send(data)
                if self._closed:
                    break
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._failed = exc
        finally:
            self._writer_done.set()

    async def receive(self) -> bytes:
        """The next bytes from the peer; :class:`anyio.EndOfStream` when it closed."""
        protocol = self._protocol
        if protocol is None:
            assert self._stream is not None
            return await self._stream.receive(READ_SIZE)
        while not protocol.chunks:
            if protocol.ended is not None:
                raise protocol.ended
            protocol.waiter = asyncio.get_running_loop().create_future()
            await protocol.waiter
        data = protocol.chunks.popleft() if len(protocol.chunks) == 1 else b"".join(
            protocol.chunks
        )
        protocol.chunks.clear()
        protocol.buffered = 0
        if protocol.paused and protocol.transport is not None:
            protocol.paused = False
            protocol.transport.resume_reading()
        return data

    async def aclose(self) -> None:
        """Close the socket (what is queued is written first)."""
        if self._closed:
            return
        self._closed = True
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        if self._stream is not None:
            assert self._wakeup is not None
            self._wakeup.set()  # the writer flushes what is queued, then ends
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(1):
                    await self._writer_done.wait()
                with contextlib.suppress(Exception):
                    await self._stream.aclose()


async def open_channel(sock: socket.socket, tg: anyio.abc.TaskGroup) -> SocketChannel:
    """A channel over ``sock`` (which it now owns); ``tg`` runs its writer where one is needed."""
    channel = SocketChannel()
    await channel._start(sock, tg)
    return channel


def session_over(
    channel: SocketChannel,
    vat: Scheduler,
    *,
    bootstrap: Any = None,
    max_message: int,
    name: str,
    on_lost: Callable[[ConnectionLost], None] | None = None,
) -> Connection:
    """A CapTP connection over ``channel``: OCapN Syrup, ``len:`` frames of ``max_message`` at most.

    ``on_lost(error)`` is called once when the session ends.  Run it with
    :meth:`Connection.run`.
    """
    from ocapn.syrup import Limits
    from ocapn.wire import OCapNWire

    limits = Limits(max_size=max_message)

    def make_wire(session: Any) -> OCapNWire:
        wire = OCapNWire(session, framing="len", limits=limits)
        wire.out_framing = "len"
        return wire

    return Connection(channel, make_wire, vat, bootstrap=bootstrap, name=name, on_lost=on_lost)


async def rehearse(bootstrap: Any) -> None:
    """One call to ``bootstrap`` over a session with ourselves (warms a fresh fork)."""
    from captp._eventual import E
    from captp._vat import open_vat

    a, b = socket.socketpair()
    async with open_vat() as vat, anyio.create_task_group() as tg:
        a_channel = await open_channel(a, tg)
        b_channel = await open_channel(b, tg)
        serving = session_over(a_channel, vat, bootstrap=bootstrap, max_message=1 << 20, name="r")
        asking = session_over(b_channel, vat, max_message=1 << 20, name="q")
        tg.start_soon(serving.run)
        tg.start_soon(asking.run)
        await E(asking.bootstrap()).report()
        await serving.aclose()
        await asking.aclose()
        tg.cancel_scope.cancel()


def host_build() -> str:
    """``"compiled"`` when this process runs the compiled (mypyc) build, else ``"pure"``.

    A worker starts with an empty environment, so ``OCAPN_PURE`` cannot reach
    it; the host passes this on its command line instead, and the worker loads
    the same build (``spec-notes/0034``).
    """
    from captp._native import COMPILED

    return "compiled" if COMPILED else "pure"


def preload() -> None:
    """Import the codec now (a confined worker cannot import anything later)."""
    import ocapn.syrup
    import ocapn.wire  # noqa: F401
