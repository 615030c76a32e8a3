"""The asyncio fast path of the TCP netlayer: a channel that is an ``asyncio.BufferedProtocol``.

Under asyncio the generic path (an anyio socket stream driven by a writer
task, :class:`~netlayers.stream.StreamChannel`) costs two task switches and
a few ``Event`` objects per message.  This channel is the protocol itself:

* reads land with ``recv_into`` in one reused buffer (``BufferedProtocol``,
  about twice as fast as ``Protocol`` for small messages); ``receive()``
  hands back everything that arrived since the last call, or, once the
  consumer has called :meth:`AsyncioTcpChannel.push`, the protocol callback
  hands each read to the consumer directly (no task wake-up per read);
* the first send of a turn is written at once; the sends that follow it in
  the same turn go out together in one ``transport.write`` (one system call
  for a burst of replies);
* closing is graceful, as :class:`~netlayers.stream.StreamChannel` does it:
  flush, half-close (FIN), read and discard until the peer's FIN (or a short
  grace period), then close, so the peer sees an orderly end, never a reset.

It presents the same :class:`~captp.Channel` interface and raises the same
anyio exceptions, so the node cannot tell the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

import anyio

__all__ = ["AsyncioTcpChannel"]

# The receive buffer: reads go straight into it.  When the consumer falls this
# far behind, reading pauses (TCP flow control pushes back on the peer).
BUFFER_SIZE: Final = 256 * 1024
# A read asks for at least this much room; the buffer grows to provide it.
MIN_READ: Final = 64 * 1024
# Bytes we queue for a peer that does not read before giving up on it: a
# peer that stops reading must not make us buffer without bound.
MAX_WRITE_BUFFER: Final = 64 * 1024 * 1024
# How long a graceful close waits for the peer's FIN after ours (as StreamChannel).
CLOSE_GRACE_SECONDS: Final = 2.0


class AsyncioTcpChannel(asyncio.BufferedProtocol):
    """One TCP connection as a :class:`~captp.Channel` (asyncio only)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray(BUFFER_SIZE)
        self._end = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._closing = False
        self._closed = self._loop.create_future()
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._on_data: Callable[[bytes], None] | None = None
        self._on_end: Callable[[BaseException], None] | None = None

    # -- protocol callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buf) - self._end < MIN_READ:
            self._buf.extend(bytes(MIN_READ))
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return  # draining after our FIN: nobody reads it any more
        self._end += nbytes
        if self._on_data is not None:
            with memoryview(self._buf) as view:
                data = bytes(view[: self._end])
            self._end = 0
            self._on_data(data)
            return
        if self._end >= BUFFER_SIZE and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        self._ended()
        return True  # keep the transport: we may still write (an abort), then close

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None:
            self._error = exc
        self._pending.clear()
        self._wake()
        self._ended()
        if not self._closed.done():
            self._closed.set_result(None)

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        self._on_data = None
        if on_end is not None and not self._closing:
            if self._error is not None:
                on_end(anyio.BrokenResourceError(repr(self._error)))
            else:
                on_end(anyio.EndOfStream())

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- Channel ---------------------------------------------------------------

    def send_nowait(self, data: bytes) -> None:
        """Send ``data``: now if it is the first send of this turn, else with the others."""
        if self._closing:
            raise anyio.ClosedResourceError
        if self._lost:
            raise anyio.BrokenResourceError from self._error
        if self._flush_scheduled or self._transport is None:
            self._pending.append(data)  # a burst: goes out in one write, soon
            return
        self._transport.write(data)
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            return  # connection_made flushes
        if not self._pending or self._lost:
            self._pending.clear()
            return
        pending = self._pending
        data = b"".join(pending) if len(pending) > 1 else pending[0]
        pending.clear()
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._error = anyio.BrokenResourceError(
                f"the peer has not read {MAX_WRITE_BUFFER} bytes we sent it"
            )
            transport.abort()

    def push(
        self, on_data: Callable[[bytes], None], on_end: Callable[[BaseException], None]
    ) -> None:
        """From now on hand each read to ``on_data``, and the end of stream to ``on_end``.

        Both run in the protocol's callbacks; what was received before the
        call is handed to ``on_data`` at once.  After this, :meth:`receive`
        must not be used.
        """
        self._on_data = on_data
        self._on_end = on_end
        if self._end:
            with memoryview(self._buf) as view:
                data = bytes(view[: self._end])
            self._end = 0
            if self._paused and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            on_data(data)
        if self._eof or self._lost:
            self._ended()

    async def receive(self) -> bytes:
        """Everything received since the last call; EndOfStream once the peer closed."""
        while not self._end:
            if self._closing:
                raise anyio.ClosedResourceError
            if self._error is not None:
                raise anyio.BrokenResourceError from self._error
            if self._eof or self._lost:
                raise anyio.EndOfStream
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        with memoryview(self._buf) as view:
            data = bytes(view[: self._end])
        self._end = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def aclose(self) -> None:
        """Flush, send FIN, wait briefly for the peer's FIN (discarding its data), close."""
        if self._closing:
            with anyio.CancelScope(shield=True):
                await asyncio.shield(self._closed)
            return
        self._flush()
        self._closing = True
        self._end = 0
        self._wake()
        transport = self._transport
        if transport is None or self._lost:
            return
        with anyio.CancelScope(shield=True):
            if self._paused:
                self._paused = False
                transport.resume_reading()
            if transport.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write_eof()
            with anyio.move_on_after(CLOSE_GRACE_SECONDS):
                while not (self._eof or self._lost):
                    waiter = self._waiter = self._loop.create_future()
                    await waiter
            transport.close()
            with anyio.move_on_after(CLOSE_GRACE_SECONDS):
                await asyncio.shield(self._closed)


async def connect(host: str, port: int) -> AsyncioTcpChannel:
    """A connected :class:`AsyncioTcpChannel` to ``host:port``."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(AsyncioTcpChannel, host, port)
    return protocol
