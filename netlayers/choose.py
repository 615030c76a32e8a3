"""Make a netlayer by transport name, as the command line and the test peers do."""

from __future__ import annotations

import ssl
from typing import Final

from netlayers.np import NpNetlayer
from netlayers.tcp_testing import TcpTestingNetlayer
from netlayers.websocket import WebSocketNetlayer
from ocapn.errors import LocatorError, UnsupportedTransport
from ocapn.identity import NodeIdentity
from ocapn.netlayer import Netlayer

__all__ = ["NETLAYERS", "make_netlayer"]

NETLAYERS: Final = ("websocket", "np", "tcp-testing-only")


def make_netlayer(
    transport: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    advertise: str | None = None,
    identity: NodeIdentity | None = None,
    ssl_context: ssl.SSLContext | None = None,
    client_ssl_context: ssl.SSLContext | None = None,
) -> Netlayer:
    """A netlayer for ``transport`` (one of :data:`NETLAYERS`) listening on ``host:port``.

    ``advertise``: what to put in our locator instead of ``host``: a host
    name, or for ``websocket`` a whole ``ws://`` / ``wss://`` URL (reverse
    proxies).  ``ssl_context`` serves ``wss://``; ``client_ssl_context`` says
    whom to trust when dialing ``wss://``.
    """
    url = advertise if advertise is not None and "://" in advertise else None
    if transport == "websocket":
        return WebSocketNetlayer(
            host, port, identity=identity, public_url=url,
            advertise=None if url else advertise, ssl_context=ssl_context,
            client_ssl_context=client_ssl_context,
        )
    if url is not None:
        raise LocatorError(f"{transport} advertises a host, not a URL: {advertise!r}")
    if ssl_context is not None:
        raise UnsupportedTransport(f"TLS certificates are for websocket (wss://), not {transport}")
    if transport == "np":
        return NpNetlayer(host, port, identity=identity, advertise=advertise)
    if transport == "tcp-testing-only":
        return TcpTestingNetlayer(host, port, advertise=advertise)
    raise UnsupportedTransport(f"no netlayer named {transport!r} (choose from {NETLAYERS})")
