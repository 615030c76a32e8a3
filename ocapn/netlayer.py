"""What the node needs of a netlayer: a way to be reached by peers and to reach them.

The netlayers themselves live in the :mod:`netlayers` package (which builds on
this one); this module only states the interface, so that the node depends on
no particular transport.

A netlayer speaks one OCapN *transport* (the ``transport`` of a locator,
e.g. ``tcp-testing-only``).  It hands the node one :class:`~captp.Channel`
per connection, in either direction, and says how that channel carries
messages:

* ``framing = "stream"``: the channel carries a byte stream (TCP, TCP+Noise);
  each ``receive()`` returns any slice of it and the OCapN layer frames
  messages itself (unframed Syrup or ``len:``);
* ``framing = "message"``: each ``receive()`` returns exactly one message and
  each ``send_nowait()`` sends one (WebSocket, the in-memory pipe).

A channel may also offer ``push(on_data, on_end)``: from then on it hands
every read to ``on_data`` from its own transport callback and the end of
the stream to ``on_end``, instead of waiting for ``receive()`` calls.  The
node uses it, when offered, once a session's handshake is done (it saves a
task wake-up per read; the asyncio TCP fast path offers it).

A channel may also have an ``encoding`` attribute, ``"syrup"`` or ``"cbor"``:
the encoding its netlayer negotiated with the peer (np's encoding field,
numbered by ``ocapn.cbor.ENCODING_SYRUP`` (0) / ``ENCODING_CBOR`` (1)).  The session
then writes that encoding, whatever its wire profile says.

The node runs :meth:`Netlayer.serve` in its task group; the netlayer runs the
handler for each inbound connection in a task it owns and closes the channel
(gracefully) when the handler returns.  :meth:`Netlayer.connect` is an async
context manager around one outbound channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from anyio.abc import TaskStatus

from captp import Channel
from ocapn.locators import PeerLocation

__all__ = ["ChannelFraming", "ConnectionHandler", "Netlayer"]

ChannelFraming = Literal["stream", "message"]

ConnectionHandler = Callable[[Channel], Awaitable[None]]
"""Runs one inbound connection until it ends."""


class Netlayer(Protocol):
    """A transport the node can listen on and dial out with."""

    @property
    def transport(self) -> str:
        """The locator transport this netlayer speaks (``"tcp-testing-only"``)."""

    @property
    def framing(self) -> ChannelFraming:
        """``"stream"`` (bytes; the OCapN layer frames) or ``"message"`` (one per receive)."""

    @property
    def location(self) -> PeerLocation:
        """Where peers reach us: valid once :meth:`serve` has started."""

    async def serve(
        self, handler: ConnectionHandler, *, task_status: TaskStatus[PeerLocation]
    ) -> None:
        """Listen; report our location through ``task_status``; run ``handler`` per connection.

        Runs until cancelled.  Each connection's handler runs in its own
        task, so no connection can hold up another.
        """

    def connect(self, location: PeerLocation) -> AbstractAsyncContextManager[Channel]:
        """A channel to the peer at ``location``, closed when the block ends."""
