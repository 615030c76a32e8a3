"""Run a session over a transport: the one anyio driver around the I/O-free engine.

A :class:`Connection` joins three things: a :class:`Channel` (bytes in and
out; a netlayer provides it), a :class:`Wire` (the dialect and framing that
turn messages into bytes and back) and the :class:`~captp.engine.Engine`.
It is the only place that reads and writes: every session (OCapN over any
netlayer, the Endo dialect, the in-memory pipe) runs in one.

* One read loop: it awaits ``channel.receive()``, or, when the channel
  offers ``push``, lets the channel hand it each read from the transport's
  own callback (no task wake-up per read).
* One send path: the session encodes into its outbox; the connection writes
  the outbox at once when a send comes from user code, and once per read
  (all the replies together) while it handles incoming messages.
* One abort policy: a message that breaks the protocol aborts the session
  with the reason; a bug aborts it as an internal error; nothing else is hurt.
* One place where a transport failure becomes
  :class:`~captp.errors.ConnectionLost`.

A :class:`Gate` may stand in front of the engine (the OCapN handshake): it
sees the first bytes and every message until it opens.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Final, Protocol

import anyio
import anyio.lowlevel

from captp._promise import Promise, fulfilled
from captp._vat import Scheduler, Timer, _current_vat
from captp.engine import OCAPN_POLICY, Engine, Policy, Positions, session_ended
from captp.errors import CapTPError, ConnectionLost, ProtocolError
from captp.limits import LimitExceeded, Limits
from captp.messages import Message

__all__ = ["BufferBudget", "Channel", "Connection", "Gate", "SessionCalls", "Trace", "Wire"]

log = logging.getLogger("captp")

# How many messages one session handles before the other sessions get a turn
# (about a millisecond of work): one session's flood cannot stall the rest.
BATCH_MESSAGES: Final = 128

# How often (in bytes written) to ask the channel how much the peer has not read.
UNSENT_CHECK_BYTES: Final = 64 * 1024

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
    return f"transport failed: {transport_error_text(exc)}"


def transport_error_text(exc: BaseException) -> str:
    """A transport failure in words (anyio's stream errors carry no message of their own)."""
    if isinstance(exc, anyio.EndOfStream):
        return "the peer closed the connection"
    if isinstance(exc, anyio.BrokenResourceError):
        cause = exc.__cause__ or exc.__context__
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return f"the connection broke{why}: the peer went away or the network failed"
    if isinstance(exc, anyio.ClosedResourceError):
        return "the connection was already closed on this side"
    return str(exc) or type(exc).__name__


class Channel(Protocol):
    """A bidirectional transport as a connection sees it.

    ``receive`` returns the next chunk of bytes (a whole message on message
    transports, any slice of the stream on byte transports) and raises
    :class:`anyio.EndOfStream` when the peer has closed.  ``send_nowait``
    queues bytes for the peer and returns at once.  A channel may also offer
    ``push(on_data, on_end)`` (see :mod:`ocapn.netlayer`).
    """

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data`` for the peer."""

    async def receive(self) -> bytes:
        """The next chunk from the peer."""

    async def aclose(self) -> None:
        """Close gracefully: flush what is queued, then end the stream."""


class Wire(Protocol):
    """A wire dialect with its framing, bound to one session.  It does no I/O."""

    def encode(self, message: Any) -> bytes | list[bytes]:
        """The framed bytes of ``message`` (a list: several frames; empty: nothing)."""

    def feed(self, data: bytes) -> Iterable[Any]:
        """The messages completed by ``data``; raises ProtocolError on bad input.

        The connection handles each message before it takes the next, so a
        wire may decode lazily (a generator): a message can then refer to an
        answer the previous message in the same read created (pipelining).
        """


class Gate(Protocol):
    """What stands in front of the engine until it opens (the OCapN handshake)."""

    @property
    def open(self) -> bool:
        """True once the peer is let in: the engine takes the messages from then on."""

    def start(self, connection: Connection) -> None:
        """The connection starts running (send a greeting, if we speak first)."""

    def received(self, connection: Connection, data: bytes) -> None:
        """Bytes arrived while the gate is closed (before they are decoded)."""

    async def admit(self, connection: Connection, message: Any) -> None:
        """Handle a message that arrived before the gate opened; ProtocolError refuses it."""

    def check(self, message: Any) -> Any:
        """A message after the gate opened, as the engine should see it (or raise)."""


class Connection:
    """A session running over a channel.  Run :meth:`run` in a task; it returns at the end.

    ``gate``: a handshake in front of the engine (None: the engine takes every
    message from the start).  ``on_lost(error)`` is called once when the
    session ends.  ``handoff``: see :class:`~captp.engine.Engine`.
    """

    def __init__(
        self,
        channel: Channel,
        make_wire: Callable[[Engine], Wire],
        vat: Scheduler,
        *,
        bootstrap: Any = None,
        policy: Policy = OCAPN_POLICY,
        positions: Positions | None = None,
        name: str = "connection",
        gate: Gate | None = None,
        on_lost: Callable[[ConnectionLost], None] | None = None,
        handoff: Callable[[Any], Any] | None = None,
        limits: Limits | None = None,
        budget: BufferBudget | None = None,
        probe: Callable[[], object] | None = None,
        trace: Trace | None = None,
    ) -> None:
        self._channel = channel
        self._vat = vat
        self._gate = gate
        self._user_on_lost = on_lost
        self.calls = SessionCalls(vat)
        self.limits = limits
        self._budget = budget
        self._probe = probe
        self.engine = Engine(
            _no_wire_yet, self.calls, bootstrap=bootstrap, policy=policy,
            positions=positions, name=name, on_output=self._flush, on_lost=self._lost,
            handoff=handoff, driven=True, limits=limits,
        )
        # What an operator sees (see stats()).
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_received = self.last_sent = self.started = time.monotonic()
        self._probe_sent: float | None = None
        self._held = 0  # bytes of a partial message counted in the budget
        # Fairness: a read's messages beyond one batch wait for a later turn.
        self._rest: Iterator[Any] | None = None
        self._backlog: list[bytes] = []
        self._end: BaseException | None = None
        self._pause: Callable[[], None] | None = getattr(channel, "pause_reading", None)
        self._resume: Callable[[], None] | None = getattr(channel, "resume_reading", None)
        # Bytes the peer has not read yet, if the channel can tell.
        self._unsent: Callable[[], int] | None = None
        self._max_unsent = limits.max_connection_buffer if limits is not None else 0
        self._check_unsent_at = 0
        self._seen = (0, 0)  # bytes_in and bytes_out at the last tick
        if limits is not None and hasattr(type(channel), "unsent"):
            self._unsent = lambda: channel.unsent  # type: ignore[attr-defined]
        self.wire = make_wire(self.engine)
        self._encode: Callable[[Any], Any] = self.wire.encode
        self._receive: Callable[[Any], Any] = self.engine.receive
        if trace is not None:  # opt-in: without it, nothing on the message path changes
            self._encode = _traced(trace, "out", self, self._encode)
            self._receive = _traced(trace, "in", self, self._receive)
        self.engine.use_encoder(self._encode)
        self._feed: Callable[[bytes], Iterable[Any]] = self.wire.feed
        self._send_bytes = channel.send_nowait
        self._join = not getattr(self.wire, "message_framing", True)
        self._handling = False
        self._transport_failed = False
        self._read_scope: anyio.CancelScope | None = None
        self._timer: Timer | None = None  # the liveness and idleness check
        self.ended = anyio.Event()

    def __repr__(self) -> str:
        return f"<Connection {self.engine.name}>"

    # == sending =====================================================================

    def send_control(self, message: Any) -> None:
        """Encode and write a message below the engine (a handshake greeting)."""
        self.engine.write_raw(self._encode(message))

    def _flush(self) -> None:
        # Called by the session when its outbox stops being empty.  While a
        # read is handled, the replies go out together after it.
        if not self._handling:
            self._write()

    def _write(self) -> None:
        frames = self.engine.data_to_send()
        if not frames:
            return
        try:
            if len(frames) == 1:  # the usual case: one reply, one call
                frame = frames[0]
                self.messages_out += 1
                self.bytes_out += len(frame)
                self._send_bytes(frame)
            else:
                self.messages_out += len(frames)
                self.bytes_out += sum(map(len, frames))
                if self._join:
                    self._send_bytes(b"".join(frames))
                else:
                    for frame in frames:
                        self._send_bytes(frame)
            if self._unsent is not None and self.bytes_out > self._check_unsent_at:
                self._check_unsent_at = self.bytes_out + UNSENT_CHECK_BYTES
                if self._unsent() > self._max_unsent:
                    self._over_unsent()
        except CapTPError as exc:
            # The netlayer cannot carry this message (np without chunking): say
            # so to the peer and end the session, rather than drop it silently.
            if not self._transport_failed:
                self._transport_failed = True
                self._vat.call_soon(self.engine.abort, f"netlayer refused a message: {exc}")
        except TRANSPORT_ERRORS as exc:
            # Not reentrant: end the session in its own turn.
            if not self._transport_failed:
                self._transport_failed = True
                why = f"transport closed: {transport_error_text(exc)}"
                self._vat.call_soon(self.engine.connection_lost, why)

    def bootstrap(self) -> Promise:
        """A promise for the peer's bootstrap object (``await`` it, or send to it at once)."""
        boot = self.engine.bootstrap()
        return boot if isinstance(boot, Promise) else fulfilled(boot)

    # == reading =====================================================================

    def _handle(self, batch: bytes | Iterator[Any]) -> None:
        """Handle the messages in ``batch`` (bytes read, or messages left from a read)
        in order until the session ends; a bad one aborts it.

        The wire decodes here (perhaps lazily), so a decoding error surfaces
        here too.  When this returns, no message is held any more: the
        references it carried are free to be collected (the peer's GC depends on it).
        """
        session = self.engine
        receive = self._receive
        check = self._gate.check if self._gate is not None else None
        budget = BATCH_MESSAGES
        self._handling = True
        # What the peer's messages set going (sends to local objects, pipelined
        # on answers) belongs to this session: it ends with it.
        token = _current_vat.set(self.calls)
        try:
            messages = iter(self._feed(batch)) if isinstance(batch, bytes) else batch
            for message in messages:
                self.messages_in += 1
                receive(message if check is None else check(message))
                if session.dead is not None:
                    break
                budget -= 1
                if not budget:  # enough for one turn: the rest after the other sessions
                    self._rest = messages
                    break
        except Exception as exc:
            self._abort_for(exc)
        finally:
            try:
                session.run_local_calls()  # the calls this read brought; replies go out below
            finally:
                _current_vat.reset(token)
                self._handling = False
            self._write()

    def _abort_for(self, exc: Exception) -> None:
        """The abort policy: a peer's protocol violation, or our own bug, ends the session."""
        session = self.engine
        if isinstance(exc, ProtocolError):
            log.info("%s: aborting: %s", session.name, exc)
            session.abort(f"protocol error: {exc}")
        else:  # a bug must not take down anything else
            log.error("%s: internal error while handling a message", session.name, exc_info=exc)
            session.abort(f"internal error: {type(exc).__name__}: {exc}")

    async def _handle_gated(self, gate: Gate, data: bytes) -> None:
        """Feed ``data`` while the gate is closed: messages go to it until it opens."""
        session = self.engine
        self._arrived(data)
        try:
            gate.received(self, data)
            messages = iter(self.wire.feed(data))
            message: Any = None
            for message in messages:
                if gate.open:
                    self._handle(_chain(message, messages))
                    return
                session.end_decoding()  # what it carried goes to the gate, not the tables
                await gate.admit(self, message)
                message = None  # hold no reference: the peer's gc depends on it
                if session.dead is not None:
                    break
        except Exception as exc:
            self._abort_for(exc)
        finally:
            self._write()

    async def run(self) -> None:
        """Read and act on messages until the session ends; then close the channel."""
        session = self.engine
        receive = self._channel.receive
        gate = self._gate
        push = getattr(self._channel, "push", None)
        error: BaseException | None = None
        try:
            if gate is not None:
                gate.start(self)
                self._write()
            self.start_timers()
            with anyio.CancelScope() as self._read_scope:  # cancelled when the session ends
                while session.dead is None:
                    gated = gate is not None and not gate.open
                    if push is not None and not gated:
                        # The channel hands us each read from its own callback.
                        push(self._on_data, self._on_end)
                        await self.ended.wait()
                        break
                    try:
                        data = await receive()
                    except TRANSPORT_ERRORS as exc:
                        session.connection_lost(lost_reason(exc))
                        break
                    if gated:
                        assert gate is not None
                        await self._handle_gated(gate, data)
                    else:
                        self._arrived(data)
                        self._handle(data)
                    if self._budget is not None:
                        self._account()
                    while self._rest is not None and session.dead is None:
                        await anyio.lowlevel.checkpoint()  # the other sessions' turn
                        rest, self._rest = self._rest, None
                        self._handle(rest)
                    self._rest = None
        except BaseException as exc:
            error = exc
        # Not in a `finally` or an `except`: closing awaits, and a compiled
        # coroutine that suspends inside one re-raises, when it resumes, the
        # exception the thread handles then (mypyc keeps no exception state
        # per coroutine), not its own.
        await self._close()
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no cycle through this frame

    async def _close(self) -> None:
        if self.engine.dead is None:
            self.engine.connection_lost("connection closed")
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await self._channel.aclose()
        self._release()

    def _release(self) -> None:
        # The session is over and its channel closed.  The engine, the wire, the
        # gate and the channel refer to each other (callbacks, dispatch tables):
        # drop those references, so that a connection's memory returns as soon
        # as nobody holds it, not at the cycle collector's next full pass (a
        # node that served thousands of short connections kept megabytes).
        self.engine.release()
        release = getattr(self.wire, "release", None)
        if release is not None:
            release()
        self._channel = _CLOSED
        self._send_bytes = _CLOSED.send_nowait
        self._gate = self._user_on_lost = self._probe = None
        self._unsent = self._pause = self._resume = None
        self._encode = self._receive = session_ended

    def _on_data(self, data: bytes) -> None:
        if self.engine.dead is None:
            self.bytes_in += len(data)  # (the timer turns it into last_received)
            if self._rest is not None or self._backlog:
                self._backlog.append(data)  # behind what waits for its turn
                return
            self._handle(data)
            if self._budget is not None:
                self._account()
            if self._waiting():
                self._later()

    def _on_end(self, exc: BaseException) -> None:
        if self._rest is not None or self._backlog:
            self._end = exc  # after what was received before it
            return
        self.engine.connection_lost(lost_reason(exc))

    def _waiting(self) -> bool:
        # Whether a read's messages wait for a later turn.  A method, not an
        # inline test: mypy keeps `self._rest` narrowed to None across the
        # `_handle` that sets it, and the compiled build would check that type.
        return self._rest is not None

    def _later(self) -> None:
        # Push mode: the rest of a read waits for a later turn; the transport
        # stops reading meanwhile (TCP pushes back on the peer).
        if self._pause is not None:
            self._pause()
        self._vat.call_soon(self._go_on)

    def _go_on(self) -> None:
        while self.engine.dead is None:
            rest, self._rest = self._rest, None
            if rest is not None:
                self._handle(rest)
            elif self._backlog:
                self._handle(self._backlog.pop(0))
            else:
                break
            if self._budget is not None:
                self._account()
            if self._waiting():
                self._vat.call_soon(self._go_on)
                return
        self._rest = None
        self._backlog.clear()
        if self._resume is not None:
            self._resume()
        end, self._end = self._end, None
        if end is not None:
            self.engine.connection_lost(lost_reason(end))

    def _lost(self, error: ConnectionLost) -> None:
        # Called by the engine, once, whatever ended the session.
        self.calls.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._budget is not None and self._held:
            self._budget.held -= self._held
            self._held = 0
        if self._read_scope is not None:
            self._read_scope.cancel()
        self.ended.set()
        if self._user_on_lost is not None:
            self._user_on_lost(error)

    # == limits, liveness, what an operator sees =========================================

    def _arrived(self, data: bytes) -> None:
        self.bytes_in += len(data)  # the timer turns it into last_received

    def _over_unsent(self) -> None:
        # The peer does not read what we send: end the session in its own turn.
        if self.engine.dead is None and not self._transport_failed:
            self._transport_failed = True
            self.engine.limit_hits += 1
            error = LimitExceeded(
                "max_connection_buffer", self._max_unsent, "the peer does not read what we send"
            )
            self._vat.call_soon(self.engine.connection_lost, str(error))

    def _account(self) -> None:
        # The partial message this connection holds counts against the node's budget.
        budget = self._budget
        assert budget is not None
        held = getattr(self.wire, "buffered", 0)
        budget.held += held - self._held
        self._held = held
        if held and budget.held > budget.limit and self.engine.dead is None:
            self.engine.limit_hits += 1
            budget.hits += 1
            self.engine.abort(str(LimitExceeded(
                "max_node_buffer", budget.limit,
                f"partial messages held for all connections ({budget.held} bytes)",
            )))
            self._write()

    def start_timers(self) -> None:
        """Watch the session: liveness while questions wait, idleness (see :class:`Limits`)."""
        limits = self.limits
        if limits is None:
            return
        periods = [t for t in (limits.liveness_timeout, limits.idle_timeout) if t is not None]
        if periods and self.engine.dead is None:
            period = min(periods) / 4
            # The timer holds the connection until _lost cancels it (a compiled
            # Connection takes no weak reference).
            self._timer = self._vat.call_later(period, _tick, self, period)

    def tick(self) -> bool:
        """Check liveness and idleness now; False once the session is over."""
        engine = self.engine
        limits = self.limits
        if engine.dead is not None or limits is None:
            return False
        now = time.monotonic()
        if self.bytes_in != self._seen[0]:
            self.last_received = now
            self._probe_sent = None
        if self.bytes_out != self._seen[1]:
            self.last_sent = now
        self._seen = (self.bytes_in, self.bytes_out)
        idle = limits.idle_timeout
        if idle is not None and now - max(self.last_received, self.last_sent) > idle:
            engine.limit_hits += 1
            engine.abort(str(LimitExceeded("idle_timeout", idle, "no message either way")))
            self._write()
            return False
        window = limits.liveness_timeout
        if window is None or self._probe is None or not engine.questions_waiting:
            self._probe_sent = None
            return True
        silent = now - self.last_received
        if self._probe_sent is not None:
            if silent > window:  # asked half a window ago, and still nothing at all
                engine.limit_hits += 1
                engine.connection_lost(str(LimitExceeded(
                    "liveness_timeout", window,
                    "the peer sent nothing while calls waited, not even after a probe",
                )))
                return False
        elif silent > window / 2:
            self._probe_sent = now
            self._probe()
        return True

    def stats(self) -> dict[str, Any]:
        """What this session holds and has done (table sizes, traffic, limit hits)."""
        engine = self.engine
        now = time.monotonic()
        return {
            **engine.stats(),
            "calls_running": self.calls.running,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds_since_received": round(now - self.last_received, 3),
            "seconds_since_sent": round(now - self.last_sent, 3),
            "limit_hits": engine.limit_hits,
        }

    async def aclose(self, reason: str = "closed") -> None:
        """Abort the session and close the channel."""
        self.engine.abort(reason)
        self._write()
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await self._channel.aclose()


class SessionCalls:
    """The vat as one session's engine sees it: the calls it starts end with it.

    Turns run in ``vat``.  While a call from the peer runs, this object is the
    current vat, so what the call sends on (to local objects, pipelined on
    answers) and the tasks it starts stay with the session.  Every task the
    session spawns (the peer's calls to async methods) runs in a cancel scope
    of its own that :meth:`cancel` cancels: when the session ends, the far
    methods it started see cancellation and their memory returns.  A task
    spawned after that is cancelled at its first ``await``.
    """

    __slots__ = ("_cancelled", "_scopes", "_vat", "call_later", "call_soon", "thread", "vat")

    peer_calls = True  # the calls run here come from a peer: their errors are logged

    def __init__(self, vat: Scheduler) -> None:
        self.vat = self._vat = vat
        self.thread: int | None = getattr(vat, "thread", None)  # the event loop's thread
        self.call_soon = vat.call_soon
        self.call_later = vat.call_later
        self._scopes: set[anyio.CancelScope] = set()
        self._cancelled = False

    @property
    def running(self) -> int:
        """How many of the session's async calls are still running."""
        return len(self._scopes)

    def run_now(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` now as a turn of the vat, with this session as the current vat."""
        if _current_vat.get() is self:  # the driver handles a read: the context is ours
            self._vat.run_now(fn, *args)
        else:
            self._vat.run_now(self._in_session, fn, args)

    def _in_session(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        token = _current_vat.set(self)
        try:
            fn(*args)
        finally:
            _current_vat.reset(token)

    def spawn(self, fn: Callable[..., Awaitable[object]], /, *args: Any) -> None:
        """Run ``await fn(*args)`` in a task of the vat, cancelled when the session ends."""
        self._vat.spawn(self._guarded, fn, args)

    async def _guarded(self, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
        _current_vat.set(self)  # this task's own context
        with anyio.CancelScope() as scope:
            if self._cancelled:
                scope.cancel()
            self._scopes.add(scope)
            try:
                await fn(*args)
            finally:
                self._scopes.discard(scope)

    def cancel(self) -> None:
        """Cancel every async call of the session, and those spawned from now on."""
        self._cancelled = True
        scopes, self._scopes = self._scopes, set()
        for scope in scopes:
            scope.cancel()


Trace = Callable[[str, "Connection", Any], None]
"""A message trace hook: ``trace(direction, connection, message)``, direction "in" or "out"."""


def _traced(
    trace: Trace, direction: str, connection: Connection, fn: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    def traced(message: Any) -> Any:
        try:
            trace(direction, connection, message)
        except Exception:  # a broken hook must not break the session
            log.exception("the message trace hook failed")
        return fn(message)

    return traced


class BufferBudget:
    """Bytes of partial messages held for every connection of a node, against one limit."""

    __slots__ = ("held", "hits", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.hits = 0


def _tick(connection: Connection, period: float) -> None:
    if connection.tick():
        connection._timer = connection._vat.call_later(period, _tick, connection, period)


class _Closed:
    """What a connection holds instead of its channel once it has closed it."""

    def send_nowait(self, data: bytes) -> None:
        """Nothing more goes out."""
        raise anyio.ClosedResourceError

    async def receive(self) -> bytes:
        """Nothing more comes in."""
        raise anyio.ClosedResourceError

    async def aclose(self) -> None:
        """Closed already."""


_CLOSED: Final = _Closed()


def _no_wire_yet(message: Message) -> bytes:
    raise RuntimeError("the connection's wire is not made yet")


def _chain(first: Any, rest: Iterable[Any]) -> Iterator[Any]:
    yield first
    yield from rest
