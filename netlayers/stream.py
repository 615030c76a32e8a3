"""A :class:`~captp.Channel` over any anyio byte stream (TCP, TLS, Unix sockets).

Sends are queued and written by one writer task, coalescing everything queued
since its last write into a single ``send`` (a burst of replies becomes one
TCP segment).  Closing is graceful: flush, send FIN (``send_eof``), then read
until the peer closes too or a short grace period ends, so the peer sees an
orderly end of stream rather than a reset.
"""

from __future__ import annotations

import contextlib
from typing import Final

import anyio
import anyio.abc

__all__ = ["StreamChannel"]

# Bytes asked for per read.  64 KiB matches the socket buffers of most
# systems; a larger read rarely returns more on loopback.
READ_SIZE: Final = 65536

# How long a graceful close waits for the peer to finish after our FIN.
CLOSE_GRACE_SECONDS: Final = 2.0


class StreamChannel:
    """A channel over a byte stream.  Use ``async with``: it owns its writer task."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self._queue: list[bytes] = []
        self._queued = 0  # bytes in _queue and in the write under way
        self._wakeup = anyio.Event()
        self._flushed = anyio.Event()
        self._flushed.set()
        self._closing = False
        self._reading: anyio.Event | None = None  # set when the current read ends
        self._eof = anyio.Event()
        self._closed = anyio.Event()
        self._failed: BaseException | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._grace: anyio.CancelScope | None = None  # the graceful close under way
        self._aborted = False

    async def __aenter__(self) -> StreamChannel:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._writer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)

    @property
    def unsent(self) -> int:
        """Bytes queued for the peer that it has not taken yet."""
        return self._queued

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data``; the writer task sends it soon."""
        if self._failed is not None:
            raise anyio.BrokenResourceError from self._failed
        if self._closing:
            raise anyio.ClosedResourceError
        self._queue.append(data)
        self._queued += len(data)
        if self._flushed.is_set():
            self._flushed = anyio.Event()
        self._wakeup.set()

    async def _writer(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                while self._queue:
                    data = b"".join(self._queue) if len(self._queue) > 1 else self._queue[0]
                    self._queue.clear()
                    await self.stream.send(data)
                    self._queued -= len(data)
                self._flushed.set()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._failed = exc
            self._queue.clear()
            self._flushed.set()

    async def receive(self) -> bytes:
        """The next bytes from the peer (any amount); EndOfStream when it closed."""
        if self._closed.is_set():
            raise anyio.ClosedResourceError
        self._reading = done = anyio.Event()
        try:
            return await self.stream.receive(READ_SIZE)
        except anyio.EndOfStream:
            self._eof.set()
            raise
        finally:
            self._reading = None
            done.set()

    def abort(self) -> None:
        """Give up on a graceful close: what is under way (or comes) ends at once."""
        self._aborted = True
        if self._grace is not None:
            self._grace.cancel()

    async def aclose(self) -> None:
        """Flush, send FIN, wait briefly for the peer's FIN (reading what is left), close."""
        if self._closing:
            with anyio.CancelScope(shield=True):
                await self._closed.wait()
            return
        self._closing = True
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(CLOSE_GRACE_SECONDS) as self._grace:
                if self._aborted:
                    self._grace.cancel()
                await self._flushed.wait()
                if self._failed is None:
                    with contextlib.suppress(Exception):
                        await self.stream.send_eof()
                    # Read and discard until the peer's FIN, so we never reset
                    # the connection with unread data (another reader may be
                    # mid-read: let it finish first).
                    with contextlib.suppress(Exception):
                        while not self._eof.is_set():
                            if self._reading is not None:
                                await self._reading.wait()
                            else:
                                await self.stream.receive(READ_SIZE)
            with contextlib.suppress(Exception):
                await self.stream.aclose()
            self._closed.set()
