"""The ``tcp-testing-only`` netlayer: plain TCP over IPv4, for tests and local use only.

It has no encryption and no authentication: anyone on the network can read
the traffic and claim any designator.  It exists because the conformance
suite, Endo and our own tests use it (spec section 13.1, ocapn/ocapn PR #104).

Locator: ``<ocapn-peer 'tcp-testing-only "<designator>" {"host": "<ipv4>", "port": "<decimal>"}>``
(the port is a *string*).  The designator is any unique string; by default a
random one per netlayer.

Under asyncio the connections are :class:`~netlayers.asyncio_tcp.ProtocolChannel`
protocols (the fast path); under trio (or with ``fast_path=False``) they are
anyio socket streams in a :class:`~netlayers.stream.StreamChannel`.  Both
behave the same: every connection is served in its own task, sends never
block (a burst is written at once), and closing is graceful (FIN, not RST).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import anyio.abc
import sniffio
from anyio.abc import TaskStatus

from captp import Channel
from netlayers import asyncio_tcp
from netlayers.stream import StreamChannel
from ocapn.errors import LocatorError
from ocapn.locators import PeerLocation
from ocapn.netlayer import ConnectionHandler

__all__ = ["TRANSPORT", "TcpTestingNetlayer", "tcp_testing_only"]

TRANSPORT = "tcp-testing-only"

log = logging.getLogger("ocapn.netlayers")


class TcpTestingNetlayer:
    """Listen on ``host:port`` (0: any free port) and dial ``tcp-testing-only`` peers.

    ``advertise``: the host to put in our locator when it differs from the
    listening address (e.g. listening on ``0.0.0.0``).
    """

    transport = TRANSPORT
    framing: Literal["stream"] = "stream"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        designator: str | None = None,
        advertise: str | None = None,
        fast_path: bool = True,
    ) -> None:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise LocatorError(f"{TRANSPORT} listens on an IPv4 address, not {host!r}") from None
        self.host = host
        self.port = port
        self.designator = designator or secrets.token_hex(16)
        self.advertise = advertise or host
        self.fast_path = fast_path
        self._location: PeerLocation | None = None

    def __repr__(self) -> str:
        return f"<TcpTestingNetlayer {self.host}:{self.port}>"

    @property
    def location(self) -> PeerLocation:
        """Our locator (the port is known once :meth:`serve` has started)."""
        if self._location is None:
            raise RuntimeError("the netlayer is not listening yet")
        return self._location

    def _use_fast_path(self) -> bool:
        return self.fast_path and sniffio.current_async_library() == "asyncio"

    async def serve(
        self, handler: ConnectionHandler, *, task_status: TaskStatus[PeerLocation]
    ) -> None:
        """Listen, report our location, and serve each connection in a task of its own."""
        async with anyio.create_task_group() as tg:

            async def run(channel: Channel) -> None:
                try:
                    await handler(channel)
                except Exception:  # one connection's failure must not end the listener
                    log.exception("error while serving a tcp-testing-only connection")
                finally:
                    with anyio.CancelScope(shield=True):
                        await channel.aclose()

            if self._use_fast_path():
                await self._serve_asyncio(tg, run, task_status)
            else:
                await self._serve_anyio(tg, run, task_status)

    def _started(self, port: int, task_status: TaskStatus[PeerLocation]) -> None:
        self.port = port
        self._location = PeerLocation(
            TRANSPORT, self.designator, {"host": self.advertise, "port": str(port)}
        )
        task_status.started(self._location)

    async def _serve_asyncio(
        self, tg: anyio.abc.TaskGroup, run: Any, task_status: TaskStatus[PeerLocation]
    ) -> None:
        loop = asyncio.get_running_loop()

        def accepted() -> asyncio_tcp.ProtocolChannel:
            channel = asyncio_tcp.ProtocolChannel()
            tg.start_soon(run, channel)
            return channel

        server = await loop.create_server(accepted, self.host, self.port, backlog=512)
        try:
            self._started(server.sockets[0].getsockname()[1], task_status)
            await anyio.sleep_forever()
        finally:
            server.close()

    async def _serve_anyio(
        self, tg: anyio.abc.TaskGroup, run: Any, task_status: TaskStatus[PeerLocation]
    ) -> None:
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.port, backlog=512
        )
        async with listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)

            async def wrap(stream: anyio.abc.SocketStream) -> None:
                async with StreamChannel(stream) as channel:
                    await run(channel)

            self._started(port, task_status)
            await listener.serve(wrap, task_group=tg)

    @contextlib.asynccontextmanager
    async def connect(self, location: PeerLocation) -> AsyncIterator[Channel]:
        """A channel to the ``tcp-testing-only`` peer at ``location``."""
        host, port = address_of(location)
        if self._use_fast_path():
            channel = await asyncio_tcp.connect(host, port)
            try:
                yield channel
            finally:
                with anyio.CancelScope(shield=True):
                    await channel.aclose()
        else:
            stream = await anyio.connect_tcp(host, port)
            async with StreamChannel(stream) as stream_channel:
                yield stream_channel


def address_of(location: PeerLocation) -> tuple[str, int]:
    """``(host, port)`` from a ``tcp-testing-only`` locator's hints."""
    if location.transport != TRANSPORT:
        raise LocatorError(f"not a {TRANSPORT} locator: {location}")
    hints = location.hints or {}
    host, port = hints.get("host"), hints.get("port")
    if type(host) is not str or not isinstance(port, str | int) or type(port) is bool:
        raise LocatorError(f"a {TRANSPORT} locator needs host and port hints: {location}")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        raise LocatorError(f"bad host or port in {location}") from None
    if not 0 < number < 65536:
        raise LocatorError(f"port out of range in {location}")
    return host, number


def tcp_testing_only(
    host: str = "127.0.0.1", port: int = 0, *, designator: str | None = None,
    advertise: str | None = None,
) -> TcpTestingNetlayer:
    """A ``tcp-testing-only`` netlayer listening on ``host:port`` (0: any free port)."""
    return TcpTestingNetlayer(host, port, designator=designator, advertise=advertise)
