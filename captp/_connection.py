"""Run a session over a transport: the small anyio driver around the I/O-free engine.

A :class:`Connection` joins three things: a :class:`Channel` (bytes in and
out; a netlayer provides it), a :class:`Wire` (the dialect and framing that
turn messages into bytes and back) and the :class:`~captp.session.Session`.
Its reader task feeds incoming bytes through the wire into the session;
messages the session sends are encoded and queued on the channel at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio

from captp._promise import Promise, fulfilled
from captp._vat import Scheduler
from captp.errors import ProtocolError
from captp.messages import Message
from captp.session import OCAPN_POLICY, Policy, Positions, Session

__all__ = ["Channel", "Connection", "Wire"]

log = logging.getLogger("captp")

# What a transport raises when the other end is gone.
TRANSPORT_ERRORS = (
    anyio.EndOfStream,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    OSError,
)


def lost_reason(exc: BaseException) -> str:
    """Why a session ends when its transport raised ``exc``."""
    if isinstance(exc, anyio.EndOfStream):
        return "peer closed the connection"
    return f"transport failed: {exc!r}"


def handle_messages(
    session: Session,
    messages: Iterable[Any],
    handle: Callable[[Any], None],
    abort: Callable[[str], None],
) -> None:
    """Handle decoded messages in order until the session ends; a bad one aborts it.

    The wire may decode lazily, so a decoding error surfaces here too.  When
    this returns, no message is held any more: the references it carried are
    free to be collected (the peer's GC depends on it).
    """
    try:
        for message in messages:
            handle(message)
            if session.dead is not None:
                break
    except ProtocolError as exc:
        log.info("%s: aborting: %s", session.name, exc)
        abort(f"protocol error: {exc}")
    except Exception as exc:  # a bug must not take down anything else
        log.exception("%s: internal error while handling a message", session.name)
        abort(f"internal error: {type(exc).__name__}: {exc}")


class Channel(Protocol):
    """A bidirectional transport as a connection sees it.

    ``receive`` returns the next chunk of bytes (a whole message on message
    transports, any slice of the stream on byte transports) and raises
    :class:`anyio.EndOfStream` when the peer has closed.  ``send_nowait``
    queues bytes for the peer and returns at once.
    """

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data`` for the peer."""

    async def receive(self) -> bytes:
        """The next chunk from the peer."""

    async def aclose(self) -> None:
        """Close gracefully: flush what is queued, then end the stream."""


class Wire(Protocol):
    """A wire dialect with its framing, bound to one session."""

    def encode(self, message: Message) -> bytes:
        """The framed bytes of ``message`` (empty: nothing to send)."""

    def feed(self, data: bytes) -> Iterable[Message]:
        """The messages completed by ``data``; raises ProtocolError on bad input.

        The connection handles each message before it takes the next, so a
        wire may decode lazily (a generator): a message can then refer to an
        answer the previous message in the same read created (pipelining).
        """


class Connection:
    """A session running over a channel.  Run :meth:`run` in a task; it returns at the end."""

    def __init__(
        self,
        channel: Channel,
        make_wire: Callable[[Session], Wire],
        vat: Scheduler,
        *,
        bootstrap: Any = None,
        policy: Policy = OCAPN_POLICY,
        positions: Positions | None = None,
        name: str = "connection",
    ) -> None:
        self._channel = channel
        self._vat = vat
        self.session = Session(
            self._send, vat, bootstrap=bootstrap, policy=policy, positions=positions, name=name
        )
        self.wire = make_wire(self.session)
        self._encode = self.wire.encode
        self._send_bytes = channel.send_nowait
        self._transport_failed = False

    def __repr__(self) -> str:
        return f"<Connection {self.session.name}>"

    def _send(self, message: Message) -> None:
        data = self._encode(message)
        if not data:
            return
        try:
            self._send_bytes(data)
        except TRANSPORT_ERRORS as exc:
            # Not reentrant: end the session in its own turn.
            if not self._transport_failed:
                self._transport_failed = True
                self._vat.call_soon(self.session.connection_lost, f"transport closed: {exc!r}")

    def bootstrap(self) -> Promise:
        """A promise for the peer's bootstrap object (``await`` it, or send to it at once)."""
        boot = self.session.bootstrap()
        return boot if isinstance(boot, Promise) else fulfilled(boot)

    async def run(self) -> None:
        """Read and act on messages until the session ends; then close the channel."""
        session = self.session
        receive = self._channel.receive
        feed = self.wire.feed
        try:
            while session.dead is None:
                try:
                    data = await receive()
                except TRANSPORT_ERRORS as exc:
                    session.connection_lost(lost_reason(exc))
                    break
                handle_messages(session, feed(data), session.receive, session.abort)
        finally:
            if session.dead is None:
                session.connection_lost("connection closed")
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(*TRANSPORT_ERRORS):
                    await self._channel.aclose()

    async def aclose(self, reason: str = "closed") -> None:
        """Abort the session and close the channel."""
        self.session.abort(reason)
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await self._channel.aclose()
