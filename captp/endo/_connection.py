"""Endo CapTP connections over any channel, and the question timeout."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import anyio
import anyio.abc

from captp._connection import BufferBudget, Channel, Connection
from captp._passable import is_remotable
from captp._promise import Promise
from captp._vat import Timer, Vat, open_vat
from captp.endo._limits import limit_wire
from captp.endo.framing import DEFAULT_MAX_FRAME_SIZE
from captp.endo.marshal import BodyFormat
from captp.endo.wire import EndoFraming, EndoPositions, EndoWire, Trace
from captp.engine import ENDO_POLICY, Engine
from captp.errors import CapTPError, ConnectionLost
from captp.limits import Limits

__all__ = [
    "DEFAULT_QUESTION_TIMEOUT",
    "BootstrapArg",
    "EndoConnection",
    "QuestionTimeout",
    "open_connection",
]

log = logging.getLogger("captp.endo")

# @endo/captp never answers a message it cannot handle (an unknown target or
# export, a bad slot, a malformed body: spec section 11, gotcha 2), so a
# question can hang forever.  A minute is far longer than any ordinary call
# and short enough to surface the problem.  Methods that legitimately wait
# longer (the daemon's request/follow APIs) need question_timeout=None.
DEFAULT_QUESTION_TIMEOUT: Final = 60.0

BootstrapArg = Any
"""A bootstrap object, or a plain function ``(connection) -> object`` that makes one."""


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

    Get one from :func:`open_connection` (any channel), or over TCP from
    :func:`netlayers.endo_tcp.connect_tcp` / :func:`netlayers.endo_tcp.serve_tcp`.
    ``await conn.bootstrap()`` gives the peer's bootstrap object; use it
    with :data:`captp.E`.

    ``limits``: the :class:`~captp.limits.Limits` this connection enforces
    (those that apply to Endo CapTP: see :mod:`captp.endo._limits`); None:
    only ``max_frame_size`` and ``question_timeout``.
    """

    def __init__(
        self,
        channel: Channel,
        vat: Vat,
        *,
        bootstrap: BootstrapArg = None,
        name: str = "python",
        question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
        framing: EndoFraming = "netstring",
        body_format: BodyFormat = "capdata",
        epoch: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        trace: Trace | None = None,
        limits: Limits | None = None,
        budget: BufferBudget | None = None,
    ) -> None:
        self.limits = limits
        if limits is not None:
            max_frame_size = min(max_frame_size, limits.max_message_bytes)
        if question_timeout is not None and not question_timeout > 0:
            raise ValueError("question_timeout must be positive, or None to wait forever")
        self.name = name
        self.question_timeout = question_timeout
        if callable(bootstrap) and not is_remotable(bootstrap):
            bootstrap = bootstrap(self)

        def make_wire(session: Engine) -> EndoWire:
            wire = EndoWire(
                session,
                framing=framing,
                body_format=body_format,
                epoch=epoch,
                max_frame_size=max_frame_size,
                trace=trace,
            )
            if limits is not None:
                limit_wire(wire, limits)
            return wire

        self._connection = Connection(
            channel,
            make_wire,
            vat,
            bootstrap=bootstrap,
            policy=ENDO_POLICY,
            positions=EndoPositions(),
            name=name,
            limits=limits,
            budget=budget,
        )
        self.engine: Engine = self._connection.engine
        self.wire: EndoWire = self._connection.wire  # type: ignore[assignment]
        self._bootstrap: Promise | None = None
        self._cancel: anyio.CancelScope | None = None
        self._vat = vat
        self._timer: Timer | None = None  # the next question-timeout check
        self._done = anyio.Event()

    def __repr__(self) -> str:
        return f"<EndoConnection {self.name}{' closed' if self.closed else ''}>"

    @property
    def closed(self) -> bool:
        """True once the session has ended (for any reason)."""
        return self.engine.dead is not None

    @property
    def lost_reason(self) -> ConnectionLost | None:
        """Why the session ended, or ``None`` while it is alive."""
        return self.engine.dead

    async def bootstrap(self) -> Any:
        """The peer's bootstrap object, once the peer has answered for it.

        Asked once per connection and kept: JS records the bootstrap answer a
        microtask late and drops calls pipelined on it, and it never
        re-registers an export it freed, so the reference is neither
        pipelined on nor dropped.
        """
        if self._bootstrap is None:
            self._bootstrap = self.engine.bootstrap()
        return await self._bootstrap

    def stats(self) -> dict[str, int]:
        """Sizes of the session's tables (exports, imports, questions, answers)."""
        return self.engine.stats()

    def abort(self, reason: str = "connection closed") -> None:
        """Send ``CTP_DISCONNECT``, break every pending promise, and close."""
        self.engine.abort(reason)
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
            with anyio.CancelScope() as self._cancel:
                if self.engine.dead is not None:
                    self._cancel.cancel()
                if self.question_timeout is not None:
                    # Timer turns, not a task: nothing is left to cancel when the
                    # session ends (a cancelled task leaves cycles behind).
                    tick = min(max(self.question_timeout / 10, 0.01), 1.0)
                    self._timer = self._vat.call_later(
                        tick, _expire, weakref.ref(self), tick, {}
                    )
                await self._connection.run()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            if self.engine.dead is None:
                self.engine.connection_lost("connection closed")
            self._done.set()

    def _expire_questions(self, seen: dict[Any, float]) -> dict[Any, float]:
        # A snapshot per tick: no cost per message.  A question first seen
        # pending at time t was asked at or before t, so it is expired no
        # earlier than `timeout` after it was asked (and at most two ticks late).
        timeout = self.question_timeout
        assert timeout is not None
        now = time.monotonic()
        still: dict[Any, float] = {}
        session = self.engine
        for question in session.pending_questions():
            first = seen.get(question, now)
            if now - first >= timeout:
                log.warning("%s: question %s timed out (%g s)", self.name, question, timeout)
                session.expire_question(question, QuestionTimeout(str(question), timeout))
            else:
                still[question] = first
        return still


def _expire(ref: weakref.ref[EndoConnection], tick: float, seen: dict[Any, float]) -> None:
    conn = ref()
    if conn is None or conn.engine.dead is not None or conn._timer is None:
        return
    seen = conn._expire_questions(seen)
    if conn.engine.dead is None:
        conn._timer = conn._vat.call_later(tick, _expire, ref, tick, seen)


@asynccontextmanager
async def open_connection(
    channel: Channel,
    *,
    bootstrap: BootstrapArg = None,
    name: str = "python",
    question_timeout: float | None = DEFAULT_QUESTION_TIMEOUT,
    framing: EndoFraming = "netstring",
    body_format: BodyFormat = "capdata",
    vat: Vat | None = None,
    trace: Trace | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[EndoConnection]:
    """Run an Endo CapTP connection over an open channel for the ``async with`` body.

    ``framing``: ``"netstring"`` for byte streams, ``"message"`` for
    transports that keep message boundaries (WebSocket, :func:`memory_pipe`).
    Without a ``vat``, the connection opens its own for its lifetime.
    Leaving the block sends ``CTP_DISCONNECT`` if the session is still open.
    ``limits``: see :class:`EndoConnection`.
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
            limits=limits,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)
            try:
                yield conn
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.aclose()
