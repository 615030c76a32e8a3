"""Endo CapTP connections: TCP client and server, and the question timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import anyio
import anyio.abc

from captp._connection import Channel, Connection
from captp._passable import is_remotable
from captp._promise import Promise
from captp._vat import Vat, open_vat
from captp.endo.framing import DEFAULT_MAX_FRAME_SIZE
from captp.endo.marshal import BodyFormat
from captp.endo.wire import EndoPositions, EndoWire, Framing, Trace
from captp.errors import CapTPError, ConnectionLost
from captp.session import ENDO_POLICY, Session
from netlayers import asyncio_tcp
from netlayers.stream import StreamChannel

__all__ = [
    "DEFAULT_QUESTION_TIMEOUT",
    "EndoConnection",
    "EndoServer",
    "QuestionTimeout",
    "connect_tcp",
    "open_connection",
    "serve_tcp",
]

log = logging.getLogger("captp.endo")

# @endo/captp never answers a message it cannot handle (an unknown target or
# export, a bad slot, a malformed body: spec section 11, gotcha 2), so a
# question can hang forever.  A minute is far longer than any ordinary call
# and short enough to surface the problem.  Methods that legitimately wait
# longer (the daemon's request/follow APIs) need question_timeout=None.
DEFAULT_QUESTION_TIMEOUT: Final = 60.0

Bootstrap = Any
"""A bootstrap object, or a plain function ``(connection) -> object`` (see :func:`serve_tcp`)."""


class QuestionTimeout(CapTPError, TimeoutError):
    """The peer sent no answer to a question within the connection's ``question_timeout``."""

    def __init__(self, question: str, seconds: float) -> None:
        self.question = question
        self.seconds = seconds
        super().__init__(
            f"no answer to question {question} within {seconds:g} s: @endo/captp drops a "
            "message it cannot handle without replying (unknown target or export, bad "
            "slot, malformed body); its onReject log says which"
        )


class EndoConnection:
    """One Endo CapTP session over a channel.

    Get one from :func:`connect_tcp`, :func:`serve_tcp` or
    :func:`open_connection`.  ``await conn.bootstrap()`` gives the peer's
    bootstrap object; use it with :data:`captp.E`.
    """

    def __init__(
        self,
        channel: Channel,
        vat: Vat,
        *,
        bootstrap: Bootstrap = None,
        name: str = "python",
        question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
        framing: Framing = "netstring",
        body_format: BodyFormat = "capdata",
        epoch: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        trace: Trace | None = None,
    ) -> None:
        if question_timeout is not None and not question_timeout > 0:
            raise ValueError("question_timeout must be positive, or None to wait forever")
        self.name = name
        self.question_timeout = question_timeout
        if callable(bootstrap) and not is_remotable(bootstrap):
            bootstrap = bootstrap(self)

        def make_wire(session: Session) -> EndoWire:
            return EndoWire(
                session,
                framing=framing,
                body_format=body_format,
                epoch=epoch,
                max_frame_size=max_frame_size,
                send_raw=channel.send_nowait,
                trace=trace,
            )

        self._connection = Connection(
            channel,
            make_wire,
            vat,
            bootstrap=bootstrap,
            policy=ENDO_POLICY,
            positions=EndoPositions(),
            name=name,
        )
        self.session: Session = self._connection.session
        self.wire: EndoWire = self._connection.wire  # type: ignore[assignment]
        self._bootstrap: Promise | None = None
        self._cancel: anyio.CancelScope | None = None
        self._done = anyio.Event()

    def __repr__(self) -> str:
        return f"<EndoConnection {self.name}{' closed' if self.closed else ''}>"

    @property
    def closed(self) -> bool:
        """True once the session has ended (for any reason)."""
        return self.session.dead is not None

    @property
    def lost_reason(self) -> ConnectionLost | None:
        """Why the session ended, or ``None`` while it is alive."""
        return self.session.dead

    async def bootstrap(self) -> Any:
        """The peer's bootstrap object, once the peer has answered for it.

        Asked once per connection and kept: JS records the bootstrap answer a
        microtask late and drops calls pipelined on it, and it never
        re-registers an export it freed, so the reference is neither
        pipelined on nor dropped.
        """
        if self._bootstrap is None:
            self._bootstrap = self.session.bootstrap()
        return await self._bootstrap

    def stats(self) -> dict[str, int]:
        """Sizes of the session's tables (exports, imports, questions, answers)."""
        return self.session.stats()

    def abort(self, reason: str = "connection closed") -> None:
        """Send ``CTP_DISCONNECT``, break every pending promise, and close."""
        self.session.abort(reason)
        if self._cancel is not None:
            self._cancel.cancel()

    async def aclose(self, reason: str = "connection closed") -> None:
        """Abort (if still open) and wait until the channel is closed."""
        if not self.closed:
            self.abort(reason)
        elif self._cancel is not None:
            self._cancel.cancel()
        await self._done.wait()

    async def wait_closed(self) -> None:
        """Wait until the session has ended and the channel is closed."""
        await self._done.wait()

    async def run(self) -> None:
        """Read and handle messages until the session ends; then close the channel."""
        try:
            async with anyio.create_task_group() as tg:
                self._cancel = tg.cancel_scope
                if self.session.dead is not None:
                    tg.cancel_scope.cancel()
                if self.question_timeout is not None:
                    tg.start_soon(self._expire_questions, self.question_timeout)
                await self._connection.run()
                tg.cancel_scope.cancel()
        finally:
            if self.session.dead is None:
                self.session.connection_lost("connection closed")
            self._done.set()

    async def _expire_questions(self, timeout: float) -> None:
        # A snapshot per tick: no cost per message.  A question first seen
        # pending at time t was asked at or before t, so it is expired no
        # earlier than `timeout` after it was asked (and at most two ticks late).
        tick = min(max(timeout / 10, 0.01), 1.0)
        first_seen: dict[Any, float] = {}
        session = self.session
        while session.dead is None:
            await anyio.sleep(tick)
            now = anyio.current_time()
            still: dict[Any, float] = {}
            for question in session.pending_questions():
                seen = first_seen.get(question, now)
                if now - seen >= timeout:
                    log.warning("%s: question %s timed out (%g s)", self.name, question, timeout)
                    session.expire_question(question, QuestionTimeout(str(question), timeout))
                else:
                    still[question] = seen
            first_seen = still


@asynccontextmanager
async def open_connection(
    channel: Channel,
    *,
    bootstrap: Bootstrap = None,
    name: str = "python",
    question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
    framing: Framing = "netstring",
    body_format: BodyFormat = "capdata",
    vat: Vat | None = None,
    trace: Trace | None = None,
) -> AsyncIterator[EndoConnection]:
    """Run an Endo CapTP connection over an open channel for the ``async with`` body.

    ``framing``: ``"netstring"`` for byte streams, ``"message"`` for
    transports that keep message boundaries (WebSocket, :func:`memory_pipe`).
    Without a ``vat``, the connection opens its own for its lifetime.
    Leaving the block sends ``CTP_DISCONNECT`` if the session is still open.
    """
    async with AsyncExitStack() as stack:
        if vat is None:
            vat = await stack.enter_async_context(open_vat())
        conn = EndoConnection(
            channel,
            vat,
            bootstrap=bootstrap,
            name=name,
            question_timeout=question_timeout,
            framing=framing,
            body_format=body_format,
            trace=trace,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            try:
                yield conn
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.aclose()


@asynccontextmanager
async def connect_tcp(
    host: str,
    port: int,
    *,
    bootstrap: Bootstrap = None,
    name: str = "python",
    question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
    body_format: BodyFormat = "capdata",
    vat: Vat | None = None,
    trace: Trace | None = None,
) -> AsyncIterator[EndoConnection]:
    """Connect to an Endo CapTP peer over TCP (netstring framing, as the daemon uses).

    ``bootstrap`` is the object we offer the peer (it may ask for ours too).
    ``name`` is our CapTP id (it appears in error ids).  Example::

        async with captp.endo.connect_tcp("127.0.0.1", 8920) as conn:
            boot = await conn.bootstrap()
            print(await E(boot).ping())
    """
    options: dict[str, Any] = {
        "bootstrap": bootstrap, "name": name, "question_timeout": question_timeout,
        "body_format": body_format, "vat": vat, "trace": trace,
    }
    if _on_asyncio():  # the fast path: see netlayers.asyncio_tcp
        channel = await asyncio_tcp.connect(host, port)
        try:
            async with open_connection(channel, **options) as conn:
                yield conn
        finally:
            with anyio.CancelScope(shield=True):
                await channel.aclose()
        return
    stream = await anyio.connect_tcp(host, port)
    async with StreamChannel(stream) as stream_channel, open_connection(
        stream_channel, **options
    ) as conn:
        yield conn


def _on_asyncio() -> bool:
    return asyncio._get_running_loop() is not None


class EndoServer:
    """A TCP listener serving Endo CapTP; see :func:`serve_tcp`."""

    def __init__(
        self, port: int, host: str, make_connection: Callable[[Channel, str], EndoConnection]
    ) -> None:
        self.port = port
        self.host = host
        self.connections: set[EndoConnection] = set()
        self._make_connection = make_connection
        self._count = 0

    def __repr__(self) -> str:
        return f"<EndoServer {self.host}:{self.port} ({len(self.connections)} connections)>"

    async def _serve_stream(self, stream: anyio.abc.ByteStream) -> None:
        async with StreamChannel(stream) as channel:
            await self._serve(channel)

    async def _serve(self, channel: Channel) -> None:
        self._count += 1
        conn = self._make_connection(channel, f"conn{self._count}")
        self.connections.add(conn)
        try:
            await conn.run()  # closes the channel when it ends
        finally:
            self.connections.discard(conn)

    def abort_all(self, reason: str) -> None:
        """Abort every open connection with ``reason``."""
        for conn in list(self.connections):
            conn.abort(reason)


@asynccontextmanager
async def serve_tcp(
    bootstrap: Bootstrap = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    name: str = "python",
    question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
    body_format: BodyFormat = "capdata",
    trace: Trace | None = None,
) -> AsyncIterator[EndoServer]:
    """Serve Endo CapTP on ``host:port`` (``port=0``: any free port; see ``server.port``).

    ``bootstrap`` is the object every client gets, or a plain function (not a
    far function) called with each new :class:`EndoConnection` that returns
    that connection's bootstrap, as JS's ``makeCapTP`` accepts a function.  It
    is called while the connection is being built: keep the connection for
    later (its ``session`` does not exist yet).  Connection ``n`` is named
    ``<name>-conn<n>``.  Leaving the block disconnects every client.
    """
    async with AsyncExitStack() as stack:
        # The listener closes last, after the task group that accepts on it.
        accept: Callable[[], Awaitable[Channel]] | None = None
        if _on_asyncio():  # the fast path: see netlayers.asyncio_tcp
            listener = await asyncio_tcp.listen(host, port)
            stack.callback(listener.close)
            bound, accept = listener.port, listener.accept
        else:
            stream_listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            await stack.enter_async_context(stream_listener)
            bound = stream_listener.extra(anyio.abc.SocketAttribute.local_port)
        vat = await stack.enter_async_context(open_vat())
        tg = await stack.enter_async_context(anyio.create_task_group())

        def make_connection(channel: Channel, suffix: str) -> EndoConnection:
            return EndoConnection(
                channel,
                vat,
                bootstrap=bootstrap,
                name=f"{name}-{suffix}",
                question_timeout=question_timeout,
                body_format=body_format,
                trace=trace,
            )

        server = EndoServer(bound, host, make_connection)
        if accept is not None:

            async def accept_forever(accept: Callable[[], Awaitable[Channel]]) -> None:
                while True:
                    tg.start_soon(server._serve, await accept())

            tg.start_soon(accept_forever, accept)
        else:
            tg.start_soon(stream_listener.serve, server._serve_stream)
        try:
            yield server
        finally:
            server.abort_all("server closed")
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                with anyio.move_on_after(5):
                    for conn in list(server.connections):
                        await conn.wait_closed()
            tg.cancel_scope.cancel()
