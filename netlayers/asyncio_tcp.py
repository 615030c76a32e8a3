"""A TCP :class:`~captp.Channel` built on an asyncio protocol: the fast path under asyncio.

:class:`~netlayers.stream.StreamChannel` works on any anyio byte stream, on
every backend.  On asyncio it pays for that generality on every message: a
writer task wakes to send (one more event-loop iteration per write), and
anyio's ``receive`` pauses and resumes reading around each read (two
``epoll_ctl`` calls).  This channel writes straight to the transport from
``send_nowait`` and lets the transport read continuously into one reused
buffer (``recv_into``), so a request/response round trip costs one loop
iteration less, no extra system calls, and no allocation per read.
Semantics are the same: ``receive`` returns any slice of the stream and
raises :class:`anyio.EndOfStream` at the end; ``aclose`` flushes, sends FIN
and waits briefly for the peer's.

A consumer that handles bytes synchronously may call
:meth:`ProtocolChannel.push` instead of looping on ``receive``: from then on
each read is handed to it from the protocol callback, with no task wake-up
per read (the OCapN node does this once a session's handshake is done).

Use :func:`connect` / :func:`listen` only under asyncio (uvloop too);
elsewhere use ``StreamChannel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Final, cast

import anyio

__all__ = ["Listener", "ProtocolChannel", "connect", "listen"]

# How long a graceful close waits for the peer to finish after our FIN
# (the same grace as StreamChannel).
CLOSE_GRACE_SECONDS: Final = 2.0

# The receive buffer: reads go straight into it.  It starts small (an idle
# connection should cost little memory), the room offered to a read doubles
# while reads fill it (bulk data), up to MAX_READ, and the buffer shrinks back
# to INITIAL_BUFFER when a small read follows (see SMALL_READ).  When the consumer is
# BUFFER_SIZE behind, reading pauses (TCP flow control then pushes back).
INITIAL_BUFFER: Final = 4 * 1024
# Not more: each read is copied out into a ``bytes``, and blocks above glibc's
# mmap threshold (128 KiB at first) come as fresh pages, whose faults cost
# more than the copy (a 1 MB argument moved 2.5x faster with 64 KiB reads
# than with 256 KiB ones).
MAX_READ: Final = 64 * 1024
# A hand-over at most this large, from a grown buffer, shrinks it back (bursts
# of small messages hand over more than this, and keep their buffer).
SMALL_READ: Final = 2 * 1024
BUFFER_SIZE: Final = 256 * 1024

# Bytes queued for a peer that does not read before the connection is given
# up: a peer that stops reading must not make us buffer without bound.
MAX_WRITE_BUFFER: Final = 64 * 1024 * 1024


class ProtocolChannel(asyncio.BufferedProtocol):
    """One TCP connection as a channel: an asyncio protocol reading into one reused buffer.

    It is a ``BufferedProtocol``: the transport reads with ``recv_into``
    straight into our buffer.  (With a plain ``Protocol`` the transport
    allocates a fresh 256 KiB ``bytes`` for every read, which costs more than
    the rest of a small message's trip.)
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray(INITIAL_BUFFER)
        self._end = 0  # bytes received and not yet handed over
        self._read_size = INITIAL_BUFFER  # the room the next read is offered
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._error: BaseException | None = None
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        # Writes after the first in one event-loop iteration wait here and go
        # out together at the start of the next: a burst of replies becomes
        # one system call, a lone reply is not delayed.
        self._batch: list[bytes] | None = None
        self._batched = 0  # bytes in _batch
        # True while a pushed read is handled: the consumer then writes all its
        # replies to the read at once, so that write needs no batch (and no
        # loop iteration of its own to flush one).
        self._handling = False
        self._on_data: Callable[[bytes], None] | None = None
        self._on_end: Callable[[BaseException], None] | None = None

    # -- asyncio.BufferedProtocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = self._buffer
        room = self._end + self._read_size
        if len(buffer) < room:
            buffer.extend(bytes(room - len(buffer)))  # bulk data, or the consumer is behind
        return memoryview(buffer)[self._end : room]

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return  # draining after our FIN: nobody reads it any more
        self._end += nbytes
        if nbytes >= self._read_size and self._read_size < MAX_READ:
            self._read_size *= 2  # the read filled the room it had: there is more
        if self._on_data is not None:
            self._handling = True
            try:
                self._on_data(self._take())
            finally:
                self._handling = False
            return
        if self._end >= BUFFER_SIZE and not self._paused and self._transport is not None:
            self._paused = True  # the consumer is behind: let TCP push back on the peer
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        self._ended()
        return True  # keep our side open: we may still be flushing

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake()
        self._ended()
        if not self._lost.done():
            self._lost.set_result(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None and not self._closing:
            if self._error is not None:
                on_end(anyio.BrokenResourceError(repr(self._error)))
            else:
                on_end(anyio.EndOfStream())

    def _take(self) -> bytes:
        end = self._end
        with memoryview(self._buffer) as view:
            data = bytes(view[:end])
        self._end = 0
        if end <= SMALL_READ and len(self._buffer) > INITIAL_BUFFER:
            # A small message after bulk data (or a burst): give the big
            # buffer back.  (A new object, not a resize: the transport may
            # still hold a view of the old one.)
            self._buffer = bytearray(INITIAL_BUFFER)
            self._read_size = INITIAL_BUFFER
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    # -- Channel ----------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """How many received bytes wait for :meth:`receive` (or :meth:`push`)."""
        return self._end

    @property
    def buffer_size(self) -> int:
        """The size of the receive buffer now (it grows with bulk reads, shrinks when idle)."""
        return len(self._buffer)

    @property
    def unsent(self) -> int:
        """Bytes queued for the peer that it has not taken yet."""
        transport = self._transport
        queued = transport.get_write_buffer_size() if transport is not None else 0
        return queued + self._batched

    def send_nowait(self, data: bytes) -> None:
        """Write ``data`` (now, or with the rest of this loop iteration's writes).

        The first write of an iteration goes out at once; later ones join it
        in one system call at the start of the next iteration.  A write from
        the consumer of a pushed read (its replies, written together) goes
        out at once and opens no batch.
        """
        if self._batch is not None:
            self._batch.append(data)
            self._batched += len(data)
            return
        transport = self._transport
        if self._error is not None:
            raise anyio.BrokenResourceError from self._error
        if self._closing or transport is None:
            raise anyio.ClosedResourceError
        if transport.is_closing():
            raise anyio.BrokenResourceError
        transport.write(data)
        if not self._handling:
            self._batch = []
            self._loop.call_soon(self._flush)
        elif transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._give_up(transport)

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        self._batched = 0
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if batch:
            transport.write(b"".join(batch))
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._give_up(transport)

    def _give_up(self, transport: asyncio.Transport) -> None:
        # A peer that stops reading must not make us buffer without bound.
        self._error = anyio.BrokenResourceError(
            f"the peer has not read the {MAX_WRITE_BUFFER} bytes queued for it"
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
            on_data(self._take())
        if self._eof:
            self._ended()

    async def receive(self) -> bytes:
        """The bytes received since the last call (any amount); EndOfStream when it closed."""
        while not self._end:
            if self._closing and self._transport is not None and self._transport.is_closing():
                raise anyio.ClosedResourceError
            if self._eof:
                if self._error is not None:
                    raise anyio.BrokenResourceError from self._error
                raise anyio.EndOfStream
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        return self._take()

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading` (the consumer is behind)."""
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        """Give up on a graceful close: drop the connection now (a reset)."""
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        """Flush, send FIN, wait briefly for the peer's FIN (discarding its data), close."""
        transport = self._transport
        if transport is None:
            return
        if self._closing:
            with anyio.CancelScope(shield=True):
                await self._lost
            return
        self._closing = True
        self._flush()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(CLOSE_GRACE_SECONDS):
                if not transport.is_closing() and transport.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        transport.write_eof()  # after the buffered data, as TCP orders it
                if self._paused:
                    self._paused = False
                    transport.resume_reading()
                self._end = 0
                while not self._eof:
                    waiter = self._waiter = asyncio.get_running_loop().create_future()
                    await waiter
            transport.close()
            with anyio.move_on_after(CLOSE_GRACE_SECONDS):
                await self._lost
            if not self._lost.done():  # pragma: no cover - a stuck transport
                transport.abort()


async def connect(host: str, port: int) -> ProtocolChannel:
    """A channel connected to ``host:port`` over TCP (``TCP_NODELAY`` on)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(ProtocolChannel, host, port)
    return protocol


class Listener:
    """A listening TCP socket whose connections are accepted as channels."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.port: int = sock.getsockname()[1]

    async def accept(self) -> ProtocolChannel:
        """The next incoming connection."""
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._sock)
        _, protocol = await loop.connect_accepted_socket(ProtocolChannel, conn)
        return protocol

    def close(self) -> None:
        """Stop listening."""
        self._sock.close()


async def listen(host: str, port: int, backlog: int = 1024) -> Listener:
    """Listen on ``host:port`` (``port`` 0: any free port; see ``Listener.port``)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return Listener(sock)
