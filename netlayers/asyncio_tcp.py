"""A :class:`~captp.Channel` on a socket the asyncio loop watches: the fast path under asyncio.

:class:`~netlayers.stream.StreamChannel` works on any anyio byte stream, on
every backend.  On asyncio it pays for that generality on every message: a
writer task wakes to send (one more event-loop iteration per write), and
anyio's ``receive`` pauses and resumes reading around each read (two
``epoll_ctl`` calls).  :class:`SocketChannel` asks the loop to watch its
socket (``add_reader``), reads it from that callback and writes to it from
``send_nowait``: a request/response round trip costs one loop iteration
less, no extra system calls, and no asyncio transport in between (whose
layers of Python calls cost more per message than the socket calls
themselves).  Semantics are the same: ``receive`` returns any slice of the
stream and raises :class:`anyio.EndOfStream` at the end; ``aclose`` flushes,
sends FIN and waits briefly for the peer's.

A consumer that handles bytes synchronously may call
:meth:`SocketChannel.push` instead of looping on ``receive``: from then on
each read is handed to it from the loop's callback, with no task wake-up per
read (the OCapN node does this once a session's handshake is done).

Use :func:`connect` / :func:`listen` only under asyncio (uvloop too);
elsewhere use ``StreamChannel``.  This module is compiled with the engine
when the compiled build is in use (``captp._native``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

import anyio

__all__ = ["Listener", "SocketChannel", "connect", "listen"]

log = logging.getLogger("netlayers")

# How long a graceful close waits for the peer to finish after our FIN
# (the same grace as StreamChannel).  This and MAX_WRITE_BUFFER are not Final,
# which compiled code would read as constants: the tests change them, in both
# builds; neither is read on the path of a message.
CLOSE_GRACE_SECONDS = 2.0

# How much one read asks for.  It starts small; while reads fill what they
# asked for (bulk data) it doubles, up to MAX_READ, and a small read brings it
# back.  Nothing is kept between reads: an idle connection holds no buffer.
INITIAL_READ: Final = 4 * 1024
# Not more: blocks above glibc's mmap threshold (128 KiB at first) come as
# fresh pages, whose faults cost more than the copy (a 1 MB argument moved
# 2.5x faster with 64 KiB reads than with 256 KiB ones).
MAX_READ: Final = 64 * 1024
# A read at most this large brings the read size back to INITIAL_READ.
SMALL_READ: Final = 2 * 1024
# Bytes received and not yet taken by ``receive`` before reading pauses (TCP
# flow control then pushes back on the peer).
BUFFER_SIZE: Final = 256 * 1024

# Bytes queued for a peer that does not read before the connection is given
# up: a peer that stops reading must not make us buffer without bound.
MAX_WRITE_BUFFER = 64 * 1024 * 1024

# Connections a listening socket accepts per loop callback (a burst of them
# is taken without a loop iteration each).
ACCEPTS_PER_CALL: Final = 64

# SO_LINGER on, timeout 0: close() resets the connection (abort).
_RESET_ON_CLOSE: Final = struct.pack("ii", 1, 0)

OnData = Callable[[bytes], None]
OnEnd = Callable[[BaseException], None]


class SocketChannel:
    """One connected stream socket as a channel, read and written from the event loop.

    The loop calls us when the socket is readable (``add_reader``); a write
    goes to the socket at once, and only what the kernel does not take waits
    for the socket to become writable (``add_writer``).  The first write in a
    loop iteration goes out at once; later ones are joined and go out in one
    system call at the start of the next iteration, except the replies a
    consumer of a pushed read writes while it handles that read, which go out
    at once (they are all written together anyway).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._received = bytearray()  # read, and not yet taken by receive()
        self._unsent = bytearray()  # what the kernel has not taken yet
        self._read_size = INITIAL_READ
        self._reading = False  # the loop watches for reads
        self._paused = False  # reading paused by pause_reading()
        self._writing = False  # the loop watches for room to write
        self._waiter: asyncio.Future[None] | None = None  # a receive() or aclose() waits
        self._drained: asyncio.Future[None] | None = None  # aclose() waits for _unsent
        self._done: asyncio.Future[None] = self._loop.create_future()  # set once closed
        self._eof = False
        self._error: BaseException | None = None
        self._closing = False
        self._closed = False
        # Writes after the first in one loop iteration wait here for the next.
        self._batch: list[bytes] | None = None
        self._batched = 0  # bytes in _batch
        self._handling = False  # a pushed read is being handled
        self._on_data: OnData | None = None
        self._on_end: OnEnd | None = None
        self._watch_reads()

    # -- the loop's callbacks ---------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self._sock.recv(self._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        size = len(data)
        if not size:
            self._eof = True
            self._unwatch_reads()
            self._wake()
            self._ended()
            return
        if size >= self._read_size:
            if self._read_size < MAX_READ:
                self._read_size *= 2  # the read filled what it asked for: there is more
        elif size <= SMALL_READ:
            self._read_size = INITIAL_READ
        if self._closing:
            return  # draining after our FIN: nobody reads it any more
        on_data = self._on_data
        if on_data is not None:
            self._handling = True
            try:
                on_data(data)
            except Exception as exc:  # the consumer failed: so does the connection
                log.exception("the consumer of a connection's reads failed: dropping it")
                self._lost(exc)
            except BaseException as exc:
                self._lost(exc)
                raise
            finally:
                self._handling = False
            return
        self._received += data
        if len(self._received) >= BUFFER_SIZE:
            self._unwatch_reads()  # the consumer is behind: let TCP push back on the peer
        self._wake()

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._unsent[:sent]  # (from the front of a bytearray: no copy)
        if not self._unsent:
            self._unwatch_writes()
            drained, self._drained = self._drained, None
            if drained is not None and not drained.done():
                drained.set_result(None)

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        self._batched = 0
        if batch and not self._closed and self._error is None:
            self._write(b"".join(batch))

    # -- Channel ----------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """How many received bytes wait for :meth:`receive` (or :meth:`push`)."""
        return len(self._received)

    @property
    def read_size(self) -> int:
        """How many bytes the next read asks for."""
        return self._read_size

    @property
    def unsent(self) -> int:
        """Bytes queued for the peer that it has not taken yet."""
        return len(self._unsent) + self._batched

    def send_nowait(self, data: bytes) -> None:
        """Write ``data`` (now, or with the rest of this loop iteration's writes).

        Raises :class:`anyio.BrokenResourceError` once the connection has
        failed and :class:`anyio.ClosedResourceError` once it is closed here.
        """
        if self._batch is not None:
            self._batch.append(data)
            self._batched += len(data)
            return
        if self._error is not None:
            raise self._broken()
        if self._closing or self._closed:
            raise anyio.ClosedResourceError
        self._write(data)
        if not self._handling:
            self._batch = []
            self._loop.call_soon(self._flush)

    def _write(self, data: bytes) -> None:
        if self._unsent:
            self._unsent += data  # behind what waits already
        else:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                # Not from here (a send must not call back into its caller):
                # the loop reports it, as it would a failed read.
                self._error = exc
                self._loop.call_soon(self._lost, exc)
                return
            if sent == len(data):
                return
            self._unsent += memoryview(data)[sent:]
            self._watch_writes()
        if len(self._unsent) > MAX_WRITE_BUFFER:
            self._give_up()

    def _give_up(self) -> None:
        # A peer that stops reading must not make us buffer without bound.
        error = anyio.BrokenResourceError(
            f"the peer has not read the {MAX_WRITE_BUFFER} bytes queued for it"
        )
        self._error = error
        self._reset()
        self._loop.call_soon(self._lost, error)

    def push(self, on_data: OnData, on_end: OnEnd) -> None:
        """From now on hand each read to ``on_data``, and the end of stream to ``on_end``.

        Both run in the loop's callbacks; what was received before the call
        is handed to ``on_data`` at once.  After this, :meth:`receive` must
        not be used.
        """
        self._on_data = on_data
        self._on_end = on_end
        if self._received:
            on_data(self._take())
        if self._eof or self._closed:
            self._ended()

    async def receive(self) -> bytes:
        """The bytes received since the last call (any amount); EndOfStream when it closed."""
        while not self._received:
            if self._closing or self._closed:
                if self._error is not None and not self._closing:
                    raise self._broken()
                raise anyio.ClosedResourceError
            if self._eof:
                if self._error is not None:
                    raise self._broken()
                raise anyio.EndOfStream
            waiter = self._waiter = self._loop.create_future()
            await waiter
        return self._take()

    def _take(self) -> bytes:
        data = bytes(self._received)
        self._received.clear()
        if not self._paused and not self._eof:
            self._watch_reads()  # (if a full buffer had stopped it)
        return data

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading` (the consumer is behind)."""
        self._paused = True
        self._unwatch_reads()

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        self._paused = False
        if not self._eof and len(self._received) < BUFFER_SIZE:
            self._watch_reads()

    def abort(self) -> None:
        """Give up on a graceful close: drop the connection now (a reset)."""
        self._reset()

    async def aclose(self) -> None:
        """Flush, send FIN, wait briefly for the peer's FIN (discarding its data), close."""
        if self._closing or self._closed:
            with anyio.CancelScope(shield=True):
                await self._done
            return
        self._closing = True
        self._flush()
        self._received.clear()
        self._wake()
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE_SECONDS):
            while self._unsent and not self._closed:
                drained = self._drained = self._loop.create_future()
                await drained
            if not self._closed:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)  # after the queued data, as TCP orders it
                self._paused = False
                self._watch_reads()
            while not self._eof and not self._closed:
                waiter = self._waiter = self._loop.create_future()
                await waiter
        self._close()

    # -- helpers ----------------------------------------------------------------------

    def _watch_reads(self) -> None:
        if not self._reading and not self._closed and not self._paused:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)

    def _unwatch_reads(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _watch_writes(self) -> None:
        if not self._writing and not self._closed:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)

    def _unwatch_writes(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _wake(self) -> None:
        """Wake a receive() or aclose() that waits (for data, the end, or room to write)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _broken(self) -> anyio.BrokenResourceError:
        """What a send or receive raises once the connection has failed (its cause attached)."""
        broken = anyio.BrokenResourceError()
        broken.__cause__ = self._error  # (not `raise ... from`: compiled, that loses the cause)
        return broken

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None and not self._closing:
            if self._error is not None:
                error = self._error
                if not isinstance(error, anyio.BrokenResourceError):
                    error = anyio.BrokenResourceError(repr(error))
                on_end(error)
            else:
                on_end(anyio.EndOfStream())

    def _lost(self, exc: BaseException) -> None:
        """The connection failed (a reset, or we gave up on it): close it, tell whoever waits."""
        if self._error is None:
            self._error = exc
        self._eof = True
        self._close()
        self._ended()

    def _reset(self) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._unwatch_reads()
        self._unwatch_writes()
        self._closed = True
        self._unsent.clear()
        self._sock.close()
        self._wake()
        if not self._done.done():
            self._done.set_result(None)


async def connect(host: str, port: int) -> SocketChannel:
    """A channel connected to ``host:port`` over TCP (``TCP_NODELAY`` on)."""
    loop = asyncio.get_running_loop()
    family = _address_family(host)
    if family is not None:  # an IP address needs no resolver (uvloop would ask a thread)
        addresses: list[tuple[int, Any]] = [(family, (host, port))]
    else:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [(info[0], info[4]) for info in infos]
    error: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return SocketChannel(sock)
    assert error is not None  # getaddrinfo gives at least one address or raises
    raise error


def _address_family(host: str) -> int | None:
    """``AF_INET`` or ``AF_INET6`` if ``host`` is an IP address (None for a name)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


class Listener:
    """Listening TCP sockets (one per address of the host) whose connections become channels."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.sockets = socks
        self.port: int = socks[0].getsockname()[1]
        self._ready: list[socket.socket] = []  # accepted, not yet taken
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._watching = False

    async def accept(self) -> SocketChannel:
        """The next incoming connection, on any of the sockets (one caller at a time)."""
        while not self._ready:
            if not self.sockets:
                raise anyio.ClosedResourceError
            if self._waiter is not None:
                raise anyio.BusyResourceError("accepting")
            # Watched only while someone waits: nobody accepts for us in between.
            self._watch(True)
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
                self._watch(False)
        return SocketChannel(self._ready.pop(0))

    def _watch(self, on: bool) -> None:
        if on != self._watching and self.sockets:
            self._watching = on
            for sock in self.sockets:
                if on:
                    self._loop.add_reader(sock.fileno(), self._acceptable, sock)
                else:
                    self._loop.remove_reader(sock.fileno())

    def _acceptable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_CALL):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                break
            except OSError:
                break  # (out of file descriptors, say: the loop calls again)
            self._ready.append(conn)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Stop listening (connections accepted and not taken are closed)."""
        self._watch(False)
        socks, self.sockets = self.sockets, []
        for sock in socks:
            sock.close()
        for conn in self._ready:
            conn.close()
        self._ready.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def listen(host: str | None, port: int, backlog: int = 1024) -> Listener:
    """Listen on ``host:port`` (``port`` 0: any free port; see ``Listener.port``).

    As asyncio's ``create_server``: one socket for each address ``host``
    resolves to (``None`` or ``""``: every interface).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:  # as asyncio words it: which address
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {address!r}: {reason}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return Listener(socks)
