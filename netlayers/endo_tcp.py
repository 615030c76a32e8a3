"""Endo CapTP over TCP with netstring framing, as the Endo daemon speaks it.

Quick start::

    from captp import E
    from netlayers.endo_tcp import connect_tcp, serve_tcp

    async with connect_tcp("127.0.0.1", port) as conn:      # a client
        boot = await conn.bootstrap()
        assert await E(boot).ping() == "pong"

    async with serve_tcp(MyBootstrap(), port=0) as server:  # a server
        print("listening", server.port)
        await anyio.sleep_forever()

The dialect itself (marshal, ``CTP_*`` messages, :class:`EndoConnection`)
lives in :mod:`captp.endo`; this module only opens the sockets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import anyio

from captp import Channel
from captp._connection import BufferBudget
from captp._vat import Vat, open_vat
from captp.endo import (
    DEFAULT_QUESTION_TIMEOUT,
    BootstrapArg,
    EndoConnection,
    open_connection,
)
from captp.endo.marshal import BodyFormat
from captp.endo.wire import Trace
from captp.limits import LimitExceeded, Limits
from netlayers.tcp import connect_channel, serve_channels

__all__ = ["EndoServer", "connect_tcp", "serve_tcp"]

log = logging.getLogger("captp.endo")

# How long leaving serve_tcp waits for its clients to acknowledge the disconnect.
CLOSE_WAIT_SECONDS = 5.0


@asynccontextmanager
async def connect_tcp(
    host: str,
    port: int,
    *,
    bootstrap: BootstrapArg = None,
    name: str = "python",
    question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
    body_format: BodyFormat = "capdata",
    vat: Vat | None = None,
    trace: Trace | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[EndoConnection]:
    """Connect to an Endo CapTP peer over TCP (netstring framing, as the daemon uses).

    ``bootstrap`` is the object we offer the peer (it may ask for ours too).
    ``name`` is our CapTP id (it appears in error ids).  ``limits``: what the
    peer may make us hold (:class:`captp.limits.Limits`; None: no limits but
    the frame size and ``question_timeout``).
    """
    async with connect_channel(host, port) as channel, open_connection(
        channel,
        bootstrap=bootstrap,
        name=name,
        question_timeout=question_timeout,
        body_format=body_format,
        vat=vat,
        trace=trace,
        limits=limits,
    ) as conn:
        yield conn


class EndoServer:
    """A TCP listener serving Endo CapTP; see :func:`serve_tcp`."""

    def __init__(
        self,
        port: int,
        host: str,
        make_connection: Callable[[Channel, str], EndoConnection],
        limits: Limits | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self.limits = limits
        self.connections: set[EndoConnection] = set()
        self.refused = 0  # connections refused at a limit
        self._make_connection = make_connection
        self._count = 0

    def __repr__(self) -> str:
        return f"<EndoServer {self.host}:{self.port} ({len(self.connections)} connections)>"

    async def _serve(self, channel: Channel) -> None:
        self._count += 1
        conn = self._make_connection(channel, f"conn{self._count}")
        refusal = self._refusal()
        if refusal is not None:  # a CTP_DISCONNECT naming the limit, then FIN
            self.refused += 1
            log.warning("refusing an Endo CapTP connection: %s", refusal)
            await anyio.sleep(0)  # the transport may be connected a turn after the channel
            conn.abort(str(refusal))
        self.connections.add(conn)
        try:
            await conn.run()  # closes the channel when it ends
        finally:
            self.connections.discard(conn)

    def _refusal(self) -> LimitExceeded | None:
        # Endo CapTP has no handshake: a connection is its session.
        limits = self.limits
        if limits is None:
            return None
        if len(self.connections) >= limits.max_connections:
            return LimitExceeded("max_connections", limits.max_connections, "open connections")
        if len(self.connections) >= limits.max_sessions:
            return LimitExceeded("max_sessions", limits.max_sessions, "open sessions")
        return None

    def abort_all(self, reason: str) -> None:
        """Abort every open connection with ``reason``."""
        for conn in list(self.connections):
            conn.abort(reason)


@asynccontextmanager
async def serve_tcp(
    bootstrap: BootstrapArg = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    name: str = "python",
    question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
    body_format: BodyFormat = "capdata",
    trace: Trace | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[EndoServer]:
    """Serve Endo CapTP on ``host:port`` (``port=0``: any free port; see ``server.port``).

    ``bootstrap`` is the object every client gets, or a plain function (not a
    far function) called with each new :class:`EndoConnection` that returns
    that connection's bootstrap, as JS's ``makeCapTP`` accepts a function.  It
    is called while the connection is being built: keep the connection for
    later (its ``session`` does not exist yet).  Connection ``n`` is named
    ``<name>-conn<n>``.  Leaving the block disconnects every client.

    ``limits``: what clients may make the server hold, per connection and
    for all together (:class:`captp.limits.Limits`: pass ``Limits()`` for a
    server open to untrusted clients; None: no limits but the frame size and
    ``question_timeout``).
    """
    async with AsyncExitStack() as stack:
        vat = await stack.enter_async_context(open_vat())
        tg = await stack.enter_async_context(anyio.create_task_group())
        budget = BufferBudget(limits.max_node_buffer) if limits is not None else None

        def make_connection(channel: Channel, suffix: str) -> EndoConnection:
            return EndoConnection(
                channel,
                vat,
                bootstrap=bootstrap,
                name=f"{name}-{suffix}",
                question_timeout=question_timeout,
                body_format=body_format,
                trace=trace,
                limits=limits,
                budget=budget,
            )

        server = EndoServer(0, host, make_connection, limits)
        server.port = await tg.start(partial(serve_channels, host, port, server._serve))
        try:
            yield server
        finally:
            server.abort_all("server closed")
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                with anyio.move_on_after(CLOSE_WAIT_SECONDS):
                    for conn in list(server.connections):
                        await conn.wait_closed()
            tg.cancel_scope.cancel()

