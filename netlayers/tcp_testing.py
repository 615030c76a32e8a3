"""The ``tcp-testing-only`` netlayer: plain TCP over IPv4, for tests and local use only.

It has no encryption and no authentication: anyone on the network can read
the traffic and claim any designator.  It exists because the conformance
suite, Endo and our own tests use it (spec section 13.1, ocapn/ocapn PR #104).

Locator: ``<ocapn-peer 'tcp-testing-only "<designator>" {"host": "<ipv4>", "port": "<decimal>"}>``
(the port is a *string*).  The designator is any unique string; by default a
random one per netlayer.

Connections are the channels of :mod:`netlayers.tcp` (the asyncio fast path
under asyncio, anyio streams elsewhere or with ``fast_path=False``): every
connection is served in its own task, sends never block, and closing is
graceful (FIN, not RST).
"""

from __future__ import annotations

import ipaddress
import secrets
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, Literal

import anyio
from anyio.abc import TaskStatus

from captp import Channel
from netlayers.tcp import connect_channel, serve_channels
from ocapn import syrup
from ocapn.errors import LocatorError
from ocapn.locators import PeerLocation
from ocapn.netlayer import ConnectionHandler

__all__ = ["TRANSPORT", "TcpTestingNetlayer", "tcp_testing_only"]

TRANSPORT = "tcp-testing-only"


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
        self._chosen = (designator is not None, port != 0)  # what a state dir may not override
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

    async def serve(
        self, handler: ConnectionHandler, *, task_status: TaskStatus[PeerLocation]
    ) -> None:
        """Listen, report our location, and serve each connection in a task of its own."""
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                partial(serve_channels, self.host, self.port, handler, fast_path=self.fast_path)
            )
            self.port = port
            self._location = PeerLocation(
                TRANSPORT, self.designator, {"host": self.advertise, "port": str(port)}
            )
            task_status.started(self._location)

    # -- identity kept in a node's state directory (ocapn.persist.PersistentIdentity) --

    def identity_material(self) -> bytes:
        """What a state directory keeps: the designator and the port (Syrup)."""
        return syrup.encode({"designator": self.designator, "port": self.port})

    def restore_identity(self, material: bytes) -> None:
        """Take up a kept designator and port, except those given to the constructor."""
        try:
            kept: Any = syrup.decode(material)
            designator, port = kept["designator"], kept["port"]
        except (syrup.SyrupDecodeError, TypeError, KeyError) as exc:
            raise LocatorError(f"bad {TRANSPORT} identity in the state directory: {exc}") from exc
        if type(designator) is not str or not designator or type(port) is not int:
            raise LocatorError(f"bad {TRANSPORT} identity in the state directory: {kept!r:.200}")
        if not self._chosen[0]:
            self.designator = designator
        if not self._chosen[1] and 0 < port < 65536:
            self.port = port

    def connect(self, location: PeerLocation) -> AbstractAsyncContextManager[Channel]:
        """A channel to the ``tcp-testing-only`` peer at ``location``."""
        host, port = address_of(location)
        return connect_channel(host, port, fast_path=self.fast_path)


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
