"""The CapTP session: one peer's tables and the rules that keep them, with no I/O.

A :class:`Engine` is fed decoded messages with :meth:`Engine.receive` and
hands the messages it wants sent to the ``send`` callable it was built with.
Local calls run in turns of the :class:`~captp._vat.Scheduler` it was given.
It never touches a socket, never sleeps and never awaits, so tests can drive
it message by message.

The four tables (``spec/ocapn.md`` section 8), named by who owns the position:

* exports: positions *we* chose for our objects and promises, with the number
  of times each was sent (the peer's drops subtract from it);
* imports: positions the *peer* chose, with the number of times each arrived
  (sent back as the drop delta when our last proxy dies);
* questions: answer positions *we* chose, waiting for a result;
* answers: answer positions the *peer* chose, holding our results (a call
  of one of our objects keeps a :class:`_LocalAnswer`, which becomes a
  promise only if something asks for one).
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from captp._passable import PassStyleError, encode_custom, is_remotable, unpassable_message
from captp._promise import (
    Promise,
    PromiseHandler,
    Resolver,
    broken,
    deliver_local,
    eventual_get,
    eventual_send,
    fulfilled,
    make_promise,
)
from captp._refs import RemoteRef
from captp._typing import mypyc_attr
from captp._vat import Scheduler
from captp.errors import ConnectionLost, EncodeError, ProtocolError, UsageError, WrongThread
from captp.limits import LimitExceeded, Limits
from captp.messages import (
    Abort,
    BootstrapQuestion,
    Deliver,
    Desc,
    DescKind,
    GcAnswers,
    GcExports,
    Get,
    Listen,
    Message,
    Position,
    Resolve,
    Return,
)

__all__ = ["ENDO_POLICY", "OCAPN_POLICY", "Engine", "Policy", "Positions"]

log = logging.getLogger("captp")

_WATCH_IDS = itertools.count()

# Drops and released answers are not urgent: they are batched for this long
# (or until this many are pending) so that a busy session sends one gc
# message per batch instead of two per call.
GC_DELAY_SECONDS: Final = 0.01
GC_BATCH: Final = 256

# A table cap where no Limits are given (more than any table can hold).
_UNBOUNDED: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class Policy:
    """How results and bootstraps travel: the two families of CapTP differ here.

    ``implicit_returns``: the answerer reports every answer with a
    :class:`~captp.messages.Return`, and every exported promise with a
    :class:`~captp.messages.Resolve` (Endo).  Otherwise results go to
    resolver objects named in the request or in a ``Listen`` (OCapN).
    ``pass_answers``: a question may be passed back as ``<desc:answer N>``;
    otherwise it goes out as a fresh promise export.  ``bootstrap_position``:
    where the bootstrap object sits in both export tables (OCapN: 0); ``None``
    means it is asked for with a :class:`~captp.messages.Bootstrap` question.
    ``send_only``: a message may ask for no answer at all.
    """

    implicit_returns: bool
    pass_answers: bool
    bootstrap_position: Position | None
    send_only: bool


OCAPN_POLICY: Final = Policy(
    implicit_returns=False, pass_answers=True, bootstrap_position=0, send_only=True
)
ENDO_POLICY: Final = Policy(
    implicit_returns=True, pass_answers=False, bootstrap_position=None, send_only=False
)


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled, EndoPositions subclasses it
class Positions:
    """Chooses new export and question positions: integers counting up (OCapN).

    Export 0 is the bootstrap object, so exports count from 1.  A dialect with
    other names (Endo's ``"o+1"``) passes its own instance to the session.
    """

    def __init__(self) -> None:
        self._exports = itertools.count(1)
        self._questions = itertools.count(0)

    def next_export(self, is_promise: bool) -> Position:
        """A fresh position for an object (or promise) we export."""
        return next(self._exports)

    def next_question(self) -> Position:
        """A fresh answer position for a question we ask."""
        return next(self._questions)


class _Export:
    __slots__ = ("count", "pinned", "value")

    def __init__(self, value: Any, pinned: bool = False) -> None:
        self.value = value
        self.count = 0
        self.pinned = pinned


class _Staged:
    """An export the message being encoded makes: it enters the table if the message encodes."""

    __slots__ = ("count", "is_promise", "position", "value")

    def __init__(self, position: Position, value: Any, is_promise: bool) -> None:
        self.position = position
        self.value = value
        self.is_promise = is_promise
        self.count = 1


class _Arrival:
    """An import the message being decoded carries: it enters the table once the message is in."""

    __slots__ = ("count", "fresh", "value")

    def __init__(self, value: Any, fresh: bool) -> None:
        self.value = value
        self.count = 1
        self.fresh = fresh  # made for this message (no proxy was alive)


class _Import:
    """One import position: a weak reference to its proxy and how often it arrived."""

    __slots__ = ("count", "engine", "pinned", "position", "ref")

    def __init__(self, session: Engine, position: Position) -> None:
        self.engine = session
        self.position = position
        self.count = 0
        self.ref: weakref.ref[Any] | None = None
        self.pinned: Any = None  # a strong reference that is never dropped (the bootstrap)

    def dropped(self, ref: weakref.ref[Any]) -> None:
        # Called by the garbage collector, possibly in the middle of anything:
        # touch only this entry and a pending list, never the tables.
        if self.ref is not ref:
            return
        self.ref = None
        delta, self.count = self.count, 0
        if delta:
            self.engine._import_dropped(self, delta)


class _RemoteHandler(PromiseHandler):
    """A pending promise that stands for a question we asked or a promise we imported."""

    __slots__ = ("engine", "kind", "position")

    def __init__(self, session: Engine, kind: DescKind, position: Position) -> None:
        self.engine = session
        self.kind: DescKind = kind  # "answer" (our question) or "export" (the peer's promise)
        self.position = position

    def send(
        self, promise: Promise, method: str | None, args: tuple[Any, ...], want_result: bool
    ) -> Promise | None:
        return self.engine.send_deliver(promise, method, args, want_result)

    def get(self, promise: Promise, kind: str, key: Any) -> Promise:
        return self.engine.send_get(promise, kind, key)


class _LocalAnswer:
    """A peer's call of one of our objects: where its answer goes, until it settles.

    ``deliver_local`` settles it as it would a resolver.  Its promise is made
    only if something asks for it (the peer names the answer in a later
    message, or the result is itself a promise to follow): a call that
    returns a value makes none, and the peer is told at once.
    """

    __slots__ = ("_settle", "answer", "done", "engine", "ok", "promise", "resolver", "value")

    def __init__(self, session: Engine, answer: Position | None, resolver: Any) -> None:
        self.engine = session
        self.answer = answer
        self.resolver = resolver  # the peer's resolve-me-desc (None: none)
        self.promise: Promise | None = None
        self._settle: Resolver | None = None  # settles self.promise while it is pending
        self.done = False
        self.ok = True
        self.value: Any = None

    def as_promise(self) -> Promise:
        """The answer as a promise (made on first use; from then on it carries the outcome)."""
        promise = self.promise
        if promise is None:
            if self.done:  # settled, and the peer told, before anyone asked
                promise = fulfilled(self.value) if self.ok else broken(self.value)
            else:
                promise, self._settle = make_promise()
                self.engine._when_answered(self.answer, self.resolver, promise)
                self.resolver = None  # (the reaction keeps it until it has told it)
            self.promise = promise
        return promise

    def resolve(self, value: Any) -> None:
        """The call returned ``value`` (a promise: the answer follows it)."""
        if self.done:
            return
        if self._settle is None and not isinstance(value, Promise):
            self._settled(True, value)
            return
        self.as_promise()
        settle, self._settle = self._settle, None
        self.done = True
        assert settle is not None
        settle.resolve(value)

    def break_(self, reason: Any) -> None:
        """The call raised (or could not be made): the answer is broken with ``reason``."""
        if self.done:
            return
        settle, self._settle = self._settle, None
        if settle is None:
            self._settled(False, reason)
            return
        self.done = True
        settle.break_(reason)

    def _settled(self, ok: bool, value: Any) -> None:
        self.done = True
        self.ok = ok
        self.value = value
        resolver, self.resolver = self.resolver, None  # told once: the import may go
        self.engine._answered(self.answer, resolver, ok, value)


class _Question:
    """One of our questions: the resolver of its promise (the one the peer gets, in OCapN).

    Settling it, by whatever route (the peer's ``fulfill`` or ``break``, an
    Endo return, expiry, the end of the session, a message that cannot be
    sent), releases the question first; only the first settlement counts.
    It is a far object as :class:`~captp.Resolver` is, and so a peer may
    also pass it on or call it as any far object.
    """

    _captp_far_: ClassVar[str] = "Resolver"
    __slots__ = ("_engine", "_position", "_promise")

    def __init__(self, session: Engine, position: Position, promise: Promise) -> None:
        self._engine = session
        self._position = position
        self._promise: Promise | None = promise

    def resolve(self, value: Any) -> None:
        """Resolve the question's promise with ``value`` (another promise: follow it)."""
        promise, self._promise = self._promise, None
        if promise is not None:
            self._engine._question_settled(self._position, self)
            promise.resolve_with(value)

    def fulfill(self, value: Any) -> None:
        """The peer's name for :meth:`resolve`."""
        self.resolve(value)

    def break_(self, reason: Any) -> None:
        """Break the question's promise with ``reason``."""
        promise, self._promise = self._promise, None
        if promise is not None:
            self._engine._question_settled(self._position, self)
            promise.break_with(reason)

    def __repr__(self) -> str:
        return f"<Resolver of question {self._position!r}>"


def _run_calls(
    vat: Scheduler,
    calls: list[tuple[Any, str | None, tuple[Any, ...], _LocalAnswer | None]],
) -> None:
    # The calls one read brought, in one turn of the vat: deliver_local keeps
    # each call's error to that call, so they behave as turns of their own.
    for target, method, args, resolver in calls:
        try:
            deliver_local(vat, target, method, args, resolver)
        except Exception:  # pragma: no cover - a bug in deliver_local
            log.exception("uncaught error in a vat turn")


def session_ended(message: Any) -> Any:
    """What an ended session's encode (and its driver's receive) become: ConnectionLost."""
    raise ConnectionLost("the session has ended")


def _handler_of(value: Promise, session: Engine) -> _RemoteHandler | None:
    handler = value.pending_handler
    if type(handler) is _RemoteHandler and handler.engine is session:
        return handler
    return None


_KIND_NAMES: Final[dict[type, str]] = {RemoteRef: "an object", Promise: "a promise"}


class Engine:
    """One CapTP session with one peer.  See the module docstring.

    ``encode(message)`` turns a message into what the driver writes (bytes,
    or a list of frames; ``None`` or empty: nothing).  It may ask the session
    to :meth:`describe` references while it runs: those table changes are
    staged and commit only if the whole message encodes.  If it raises
    :class:`~captp.errors.EncodeError` nothing changes and only the promise of
    that message breaks.  Encoded messages wait in an outbox that the driver
    drains with :meth:`data_to_send`; ``on_output()`` is called when the
    outbox stops being empty.

    ``on_lost(error)`` is called once when the session ends.  ``driven``:
    the driver calls :meth:`run_local_calls` after every read it hands the
    engine (otherwise a turn of the vat runs them).
    """

    def __init__(
        self,
        encode: Callable[[Message], Any],
        vat: Scheduler,
        *,
        bootstrap: Any = None,
        policy: Policy = OCAPN_POLICY,
        positions: Positions | None = None,
        name: str = "session",
        on_output: Callable[[], None] | None = None,
        on_lost: Callable[[ConnectionLost], None] | None = None,
        handoff: Callable[[Any], Any] | None = None,
        driven: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self._encode = encode
        # Per-session caps on the tables (None: unbounded, as for local tools),
        # and the four checked on every message, as ints (compiled, an int field
        # is read directly; a Limits field is looked up by name).
        self.limits = limits
        self._max_exports = limits.max_exports if limits is not None else _UNBOUNDED
        self._max_imports = limits.max_imports if limits is not None else _UNBOUNDED
        self._max_questions = limits.max_questions if limits is not None else _UNBOUNDED
        self._max_answers = limits.max_answers if limits is not None else _UNBOUNDED
        self.limit_hits = 0
        self._driven = driven
        self._on_output = on_output
        self._outbox: list[bytes] = []
        self._vat = vat
        # (not "_thread": compiled, that becomes the C name "__thread", a keyword)
        self._loop_thread: int | None = getattr(vat, "thread", None)  # None: a ManualVat
        self._watchers: dict[int, Callable[[ConnectionLost], None]] = {}
        self.policy = policy
        self.name = name
        self._positions = positions or Positions()
        self._bootstrap = bootstrap
        self._exports: dict[Position, _Export] = {}
        self._export_ids: dict[int, Position] = {}
        self._imports: dict[Position, _Import] = {}
        self._questions: dict[Position, _Question] = {}
        self._answers: dict[Position, Promise | _LocalAnswer] = {}
        self._gc_exports: dict[Position, int] = {}
        self._gc_imports: list[_Import] = []
        self._gc_answers: list[Position] = []
        self._gc_scheduled = False  # a flush is due after GC_DELAY_SECONDS
        self._gc_soon = False  # a flush is due in the next turn (a full batch)
        self._to_listen: list[Promise] = []
        self._expired: set[Position] = set()
        # Why the session ended, or None while it is alive (read it; never set it).
        self.dead: ConnectionLost | None = None
        # The message being encoded: exports it makes (id -> _Staged), more
        # sends of existing exports, and what to run once it has encoded.
        self._encoding = False
        self._new_exports: dict[int, _Staged] = {}
        self._more_sends: dict[Position, int] = {}
        self._after_send: list[Callable[[], None]] = []
        # The message being decoded: its imports (position -> _Arrival).
        self._decoding = False
        self._arrivals: dict[Position, _Arrival] = {}
        self._on_receipt: list[Callable[[], None]] = []
        # Calls from the peer to our objects, run after the read that brought
        # them (see run_local_calls), in the order they arrived.
        self._local_calls: list[tuple[Any, str | None, tuple[Any, ...], _LocalAnswer | None]] = []
        # Called with a reference from another session that is about to be sent
        # here; returns (what to write instead, what to do once it is sent),
        # e.g. an OCapN handoff and its deposit, or None to export a proxy.
        self._handoff = handoff
        self._on_lost = on_lost
        if bootstrap is not None and policy.bootstrap_position is not None:
            pos = policy.bootstrap_position
            self._exports[pos] = _Export(bootstrap, pinned=True)
            self._export_ids[id(bootstrap)] = pos
        self._handlers: dict[type, Callable[[Any], None]] = {
            Deliver: self._recv_deliver,
            Listen: self._recv_listen,
            Get: self._recv_get,
            GcExports: self._recv_gc_exports,
            GcAnswers: self._recv_gc_answers,
            Abort: self._recv_abort,
            BootstrapQuestion: self._recv_bootstrap,
            Return: self._recv_return,
            Resolve: self._recv_resolve,
        }

    def __repr__(self) -> str:
        state = f" dead: {self.dead.reason}" if self.dead else ""
        return f"<Engine {self.name}{state}>"

    def use_encoder(self, encode: Callable[[Message], Any]) -> None:
        """Encode with ``encode`` from now on (for a wire made after its engine)."""
        self._encode = encode

    # == state ====================================================================

    @property
    def bootstrap_object(self) -> Any:
        """The local object this session serves as its bootstrap."""
        return self._bootstrap

    def stats(self) -> dict[str, int]:
        """Sizes of the four tables (for tests and monitoring)."""
        return {
            "exports": len(self._exports),
            "imports": len(self._imports),
            "questions": len(self._questions),
            "answers": len(self._answers),
        }

    def _over(self, limit: str, value: int, detail: str) -> LimitExceeded:
        self.limit_hits += 1
        return LimitExceeded(limit, value, detail)

    def _over_later(self, error: LimitExceeded) -> None:
        # Found while we encode or answer: end the session in its own turn.
        self._vat.call_soon(self.abort, str(error))

    # == encoding and decoding references (called by wire dialects) ==============

    def describe(self, value: Any) -> Any:
        """How to write a reference in an argument: a :class:`Desc`, or a replacement value.

        Exports ``value`` (counting the send) when it is ours; a reference
        from another session goes through the ``handoff`` hook first.  While
        a message is being encoded the change is staged (see :class:`Engine`).
        """
        if type(value) is RemoteRef:
            if value._session is self:
                return Desc("export", value._position)
            if self._handoff is not None:
                replacement = self._handoff(value)
                if replacement is not None:
                    written, then = replacement
                    self._after(then)
                    return written
            return self._export(value, False)
        if isinstance(value, Promise):
            handler = _handler_of(value, self)
            if handler is not None and (handler.kind == "export" or self.policy.pass_answers):
                return Desc(handler.kind, handler.position)
            return self._export(value, True)
        if is_remotable(value):
            return self._export(value, False)
        custom = encode_custom(value)  # a type registered with captp.register_passable
        if custom is not None:
            return custom
        raise PassStyleError(unpassable_message(value))

    def describe_target(self, target: Any) -> Desc:
        """How to write the target of a message we send: ``export`` or ``answer``."""
        if type(target) is RemoteRef and target._session is self:
            return Desc("export", target._position)
        if isinstance(target, Promise):
            handler = _handler_of(target, self)
            if handler is not None:
                return Desc(handler.kind, handler.position)
        raise UsageError(f"{target!r} is not a reference on {self.name}")

    def _export(self, value: Any, is_promise: bool) -> Desc:
        kind: DescKind = "import-promise" if is_promise else "import-object"
        pos = self._export_ids.get(id(value))
        if pos is not None:
            if self._encoding:
                self._more_sends[pos] = self._more_sends.get(pos, 0) + 1
            else:
                self._exports[pos].count += 1
            return Desc(kind, pos)
        if self._encoding:
            staged = self._new_exports.get(id(value))
            if staged is not None:
                staged.count += 1
                return Desc(kind, staged.position)
        pos = self._positions.next_export(is_promise)
        staged = _Staged(pos, value, is_promise)
        if self._encoding:
            self._new_exports[id(value)] = staged
        else:
            self._add_export(staged)
            self._report_settlement(staged)
        return Desc(kind, pos, first=True)

    def _add_export(self, staged: _Staged) -> None:
        pos, value = staged.position, staged.value
        entry = _Export(value)
        entry.count = staged.count
        self._exports[pos] = entry
        self._export_ids[id(value)] = pos
        if len(self._exports) > self._max_exports:
            self._over_later(self._over("max_exports", self._max_exports, "exports"))

    def _report_settlement(self, staged: _Staged) -> None:
        # Endo: the exporter of a promise reports how it settles, unasked (now,
        # if it has: so only once the message that carried it is queued).
        if staged.is_promise and self.policy.implicit_returns:
            pos = staged.position
            staged.value.when_settled(lambda p: self._promise_settled(pos, p))

    def _after(self, action: Callable[[], None]) -> None:
        if self._encoding:
            self._after_send.append(action)
        else:
            action()

    def begin_decoding(self) -> None:
        """A wire starts decoding a message: its imports wait for :meth:`receive`.

        Until the message is received whole, the imports it carries are
        staged; a message that fails to decode leaves the tables as they were.
        Without this call (tests, tools) imports enter the table at once.
        """
        if self._arrivals:  # a message decoded but never received changes nothing
            self._arrivals.clear()
        if self._on_receipt:
            self._on_receipt.clear()
        self._decoding = True

    def end_decoding(self) -> None:
        """The wire ran out of data between messages: forget what a message not received staged."""
        self._arrivals.clear()
        self._on_receipt.clear()
        self._decoding = False

    def pause_decoding(self) -> None:
        """The wire ran out of data in the middle of a message it has partly decoded.

        What that part staged stays staged until the message is received
        (:meth:`resume_decoding` goes on with it): a stream decoder reports
        each record once, even when its message arrives over several reads.
        """
        self._decoding = False

    def resume_decoding(self) -> None:
        """The rest of a paused message arrived: go on staging its imports."""
        self._decoding = True

    def when_received(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the message being decoded is received (never, if it is not)."""
        if self._decoding:
            self._on_receipt.append(action)
        else:
            action()

    def import_object(self, position: Position, iface: str | None = None) -> RemoteRef:
        """The proxy for the peer's export ``position`` (one more arrival of it)."""
        ref: RemoteRef = self._arrival(position, RemoteRef, iface)
        return ref

    def import_promise(self, position: Position) -> Promise:
        """The promise for the peer's exported promise ``position`` (one more arrival)."""
        promise: Promise = self._arrival(position, Promise, None)
        return promise

    def _arrival(self, position: Position, kind: type, iface: str | None) -> Any:
        """The local stand-in for import ``position``, made if none is alive; counts the arrival."""
        staged = self._arrivals.get(position)
        if staged is not None:
            value = staged.value
            fresh = False
        else:
            entry = self._imports.get(position)
            value = entry.ref() if entry is not None and entry.ref is not None else None
            fresh = value is None
            if fresh:
                if kind is RemoteRef:
                    value = RemoteRef(self, position, iface)
                else:
                    value = Promise(_RemoteHandler(self, "export", position))
        if type(value) is not kind:
            raise ProtocolError(
                f"import {position!r} was sent as {_KIND_NAMES[type(value)]} "
                f"and is now sent as {_KIND_NAMES[kind]}"
            )
        if staged is not None:
            staged.count += 1
        else:
            self._arrivals[position] = _Arrival(value, fresh)
        if not self._decoding:  # not from a message: into the table now (a paused one's too)
            self._commit_arrivals()
        return value

    def _commit_arrivals(self) -> None:
        self._decoding = False
        arrivals = self._arrivals
        for position, arrival in arrivals.items():
            entry = self._imports.get(position)
            if entry is None:
                entry = self._imports[position] = _Import(self, position)
            value = arrival.value
            if entry.ref is None or entry.ref() is not value:
                entry.ref = weakref.ref(value, entry.dropped)
            entry.count += arrival.count
            if arrival.fresh and type(value) is Promise and not self.policy.implicit_returns:
                # OCapN: ask to hear how it settles, once the message carrying it is in.
                self._to_listen.append(value)
        arrivals.clear()
        if len(self._imports) > self._max_imports:
            raise self._over("max_imports", self._max_imports, "references the peer gave us")

    def lookup_export(self, position: Position) -> Any:
        """Our object at export ``position``, named by the peer; ProtocolError if none."""
        entry = self._exports.get(position)
        if entry is None:
            raise ProtocolError(f"no export at position {position!r}")
        return entry.value

    def lookup_answer(self, position: Position) -> Promise:
        """Our answer promise at ``position``, named by the peer; ProtocolError if none."""
        answer = self._answers.get(position)
        if answer is None:
            raise ProtocolError(f"no answer at position {position!r}")
        if isinstance(answer, _LocalAnswer):
            return answer.as_promise()
        return answer

    # == sending ===================================================================

    def _emit(self, message: Message) -> None:
        """Encode ``message`` into the outbox; its table changes commit only if it encodes.

        Raises what the encoder raised (an :class:`EncodeError`), and then
        nothing changed.
        """
        if self._encoding:
            raise RuntimeError("a message was sent while another one was being encoded")
        self._encoding = True
        try:
            data = self._encode(message)
        except BaseException:
            self._encoding = False
            self._new_exports.clear()
            self._more_sends.clear()
            self._after_send.clear()
            raise
        self._encoding = False
        # Commit: the tables first, then the frames, then what may send more
        # (a settled promise's Resolve, a handoff's deposit) behind them.
        staged = self._new_exports
        if staged:
            self._new_exports = {}
            for export in staged.values():
                self._add_export(export)
        if self._more_sends:
            more, self._more_sends = self._more_sends, {}
            for pos, count in more.items():
                self._exports[pos].count += count
        if data:
            outbox = self._outbox
            was_empty = not outbox
            if type(data) is list:
                outbox.extend(data)
            else:
                outbox.append(data)
            if was_empty and self._on_output is not None:
                self._on_output()
        if staged:
            for export in staged.values():
                self._report_settlement(export)
        if self._after_send:
            actions, self._after_send = self._after_send, []
            for action in actions:
                action()

    def data_to_send(self) -> list[Any]:
        """Take what the session wants written, in order (what ``encode`` returned)."""
        out = self._outbox
        if not out:
            return out
        self._outbox = []
        return out

    def write_raw(self, data: Any) -> None:
        """Queue data the wire made itself (an echo) behind what is already queued."""
        was_empty = not self._outbox
        self._outbox.append(data)
        if was_empty and self._on_output is not None:
            self._on_output()

    def bootstrap(self) -> Any:
        """The peer's bootstrap object (a reference, or a promise for one)."""
        if self.dead is not None:
            return broken(self.dead)
        pos = self.policy.bootstrap_position
        if pos is None:
            return self._ask(lambda answer, _: BootstrapQuestion(answer))
        ref = self.import_object(pos)
        entry = self._imports[pos]
        entry.pinned = ref
        entry.count = 0  # nobody sends gc for the bootstrap
        return ref

    def send_deliver(
        self, target: Any, method: str | None, args: tuple[Any, ...], want_result: bool = True
    ) -> Promise | None:
        """Send ``method(*args)`` to ``target`` (a reference on this session)."""
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            raise self._wrong_thread()
        if self.dead is not None:
            return broken(self.dead) if want_result else None
        if not want_result and self.policy.send_only:
            try:
                self._emit(Deliver(target, method, args))
            except EncodeError as exc:
                log.warning("send-only %s to %r not sent: %s", method, target, str(exc))
            return None
        if self.policy.implicit_returns:
            return self._ask(lambda answer, _: Deliver(target, method, args, answer))
        return self._ask(lambda answer, r: Deliver(target, method, args, answer, r))

    def send_get(self, target: Any, kind: str, key: Any) -> Promise:
        """Ask for a field, element or tagged payload of ``target``'s value."""
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            raise self._wrong_thread()
        if self.dead is not None:
            return broken(self.dead)
        promise = self._ask(lambda answer, _: Get(target, kind, key, answer))  # type: ignore[arg-type]
        if not self.policy.implicit_returns and not promise.done():
            self._listen(promise)  # OCapN's op:get names no resolver: listen on the answer
        return promise

    def _ask(self, build: Callable[[Position, _Question], Message]) -> Promise:
        pos = self._positions.next_question()
        if pos in self._questions:
            raise RuntimeError(f"question position {pos!r} is still in use")
        if len(self._questions) >= self._max_questions:
            error = self._over("max_questions", self._max_questions, "calls awaiting answers")
            self._over_later(error)
            return broken(error)
        promise = Promise(_RemoteHandler(self, "answer", pos))
        question = _Question(self, pos, promise)
        self._questions[pos] = question
        try:
            self._emit(build(pos, question))
        except EncodeError as exc:
            del self._questions[pos]
            question.break_(exc)
        return promise

    def exported_pending(self) -> list[Promise]:
        """Our promises the peer holds that have not settled (what we still owe it)."""
        return [
            entry.value for entry in self._exports.values()
            if type(entry.value) is Promise and not entry.value.done()
        ]

    @property
    def questions_waiting(self) -> int:
        """How many of our questions wait for the peer's answer."""
        return len(self._questions)

    def pending_questions(self) -> list[Position]:
        """Positions of the questions still waiting for an answer, oldest first."""
        return list(self._questions)

    def expire_question(self, position: Position, reason: Any) -> bool:
        """Give up on a question the peer never answered: break it with ``reason``.

        For peers known to drop requests silently (Endo's CapTP ignores a
        message it cannot handle).  A late answer to it is ignored.
        Returns False if the question was not pending.
        """
        resolver = self._questions.pop(position, None)
        if resolver is None:
            return False
        self._expired.add(position)
        resolver.break_(reason)
        return True

    def _question_settled(self, pos: Position, question: _Question) -> None:
        # The answer is in (or the question given up): the peer may forget it.
        if self._questions.get(pos) is not question:
            return  # released already (a return, expiry, the end of the session)
        del self._questions[pos]
        if not self.policy.implicit_returns:
            self._gc_answers.append(pos)
            self._schedule_gc()

    def _listen(self, promise: Promise) -> None:
        # OCapN: learn how an imported promise (or a Get answer) settles.
        if self.dead is not None or promise.done():
            return
        try:
            self._emit(Listen(promise, Resolver(promise)))
        except EncodeError as exc:  # pragma: no cover - nothing to encode
            promise.break_with(exc)

    def _notify(self, resolver: Any, settled: Promise) -> None:
        """Tell a resolver how a promise settled (``fulfill`` / ``break``)."""
        ok, value = settled.outcome()
        self._tell(resolver, ok, value)

    def _tell(self, resolver: Any, ok: bool, value: Any) -> None:
        if self.dead is not None:
            return
        method = "fulfill" if ok else "break"
        if type(resolver) is not RemoteRef or resolver._session is not self:
            eventual_send(resolver, method, (value,), False, self._vat)
            return
        try:
            self._emit(Deliver(resolver, method, (value,)))
        except EncodeError as exc:  # the result cannot travel: say why
            self._emit(Deliver(resolver, "break", (exc,)))

    def _promise_settled(self, pos: Position, settled: Promise) -> None:
        # Endo: the exporter of a promise reports its settlement unasked.
        if self.dead is not None or pos not in self._exports:
            return
        ok, value = settled.outcome()
        try:
            self._emit(Resolve(pos, ok, value))
        except EncodeError as exc:
            self._emit(Resolve(pos, False, exc))

    def _send_return(self, answer: Position, ok: bool, value: Any) -> None:
        if self.dead is not None:
            return
        try:
            self._emit(Return(answer, ok, value))
        except EncodeError as exc:
            self._emit(Return(answer, False, exc))

    # == receiving =================================================================

    def receive(self, message: Message) -> None:
        """Act on one message from the peer.

        Raises :class:`~captp.errors.ProtocolError` if the message breaks the
        protocol; the caller then aborts the session with that reason.
        """
        if self.dead is not None:
            return
        if self._arrivals:
            self._commit_arrivals()
        else:
            self._decoding = False
        if self._on_receipt:
            actions = self._on_receipt[:]
            self._on_receipt.clear()
            for action in actions:
                action()
        if self._to_listen:
            promises, self._to_listen = self._to_listen, []
            for promise in promises:
                self._listen(promise)
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"unexpected message {type(message).__name__}")
        handler(message)

    def _new_answer(self, answer: Position | None) -> None:
        if answer is not None and answer in self._answers:
            raise ProtocolError(f"answer position {answer!r} is already in use")
        if len(self._answers) >= self._max_answers:
            raise self._over("max_answers", self._max_answers, "answers the peer holds")

    def _recv_deliver(self, msg: Deliver) -> None:
        target = msg.target
        answer = msg.answer
        resolver = msg.resolver
        if (
            answer is None and resolver is None and len(msg.args) == 1
            and (type(target) is _Question or type(target) is Resolver)
        ):
            # Settling a resolver (ours, or a question's) runs no user code: do it now.
            method = msg.method
            if method == "fulfill" or method == "resolve":
                target.resolve(msg.args[0])
                return
            if method == "break":
                target.break_(msg.args[0])
                return
        want = answer is not None or resolver is not None
        if want:
            self._new_answer(answer)
        if type(target) is RemoteRef or isinstance(target, Promise) or not is_remotable(target):
            result = eventual_send(target, msg.method, msg.args, want, self._vat)
            if want:
                assert result is not None
                self._keep_answer(answer, result, resolver)
            return
        # Our own object: the call runs once the read that brought it is handled.
        slot = _LocalAnswer(self, answer, resolver) if want else None
        if answer is not None:
            assert slot is not None
            self._answers[answer] = slot
        if not self._local_calls and not self._driven:
            self._vat.call_soon(self.run_local_calls)
        self._local_calls.append((target, msg.method, msg.args, slot))

    def run_local_calls(self) -> None:
        """Run the calls the peer made to our objects, in order (each in a turn of the vat).

        The driver calls this once it has handled a read, so the replies go
        out with that read's other replies; otherwise a turn scheduled when
        the first call arrived runs them.  User code never runs inside the
        engine's bookkeeping, nor in the turn of its caller.
        """
        while self._local_calls:
            calls, self._local_calls = self._local_calls, []
            self._vat.run_now(_run_calls, self._vat, calls)

    def _keep_answer(self, answer: Position | None, result: Promise, resolver: Any) -> None:
        if answer is not None:
            self._answers[answer] = result
        self._when_answered(answer, resolver, result)

    def _when_answered(self, answer: Position | None, resolver: Any, result: Promise) -> None:
        # Tell the peer how the answer settles, once it has.
        if resolver is not None or (answer is not None and self.policy.implicit_returns):
            result.when_settled(lambda p: self._answered(answer, resolver, *p.outcome()))

    def _answered(self, answer: Position | None, resolver: Any, ok: bool, value: Any) -> None:
        """An answer settled: tell the peer's resolver, or (Endo) return it to the peer."""
        if resolver is not None:
            self._tell(resolver, ok, value)
        elif answer is not None and self.policy.implicit_returns:
            self._send_return(answer, ok, value)

    def _recv_listen(self, msg: Listen) -> None:
        target, resolver = msg.target, msg.resolver
        if isinstance(target, Promise):
            target.when_settled(lambda p: self._notify(resolver, p))
        else:
            self._notify(resolver, fulfilled(target))

    def _recv_get(self, msg: Get) -> None:
        self._new_answer(msg.answer)
        self._keep_answer(msg.answer, eventual_get(msg.target, msg.kind, msg.key), None)

    def _recv_bootstrap(self, msg: BootstrapQuestion) -> None:
        self._new_answer(msg.answer)
        self._keep_answer(msg.answer, fulfilled(self._bootstrap), None)

    def _recv_return(self, msg: Return) -> None:
        resolver = self._questions.pop(msg.answer, None)
        if resolver is None:
            if msg.answer in self._expired:
                self._expired.discard(msg.answer)
                return
            raise ProtocolError(f"an answer for question {msg.answer!r}, which is not pending")
        if msg.ok:
            resolver.resolve(msg.value)
        else:
            resolver.break_(msg.value)

    def _recv_resolve(self, msg: Resolve) -> None:
        entry = self._imports.get(msg.position)
        promise = entry.ref() if entry is not None and entry.ref is not None else None
        if type(promise) is Promise:
            if msg.ok:
                promise.resolve_with(msg.value)
            else:
                promise.break_with(msg.value)

    def _recv_gc_exports(self, msg: GcExports) -> None:
        if len(msg.positions) != len(msg.deltas):
            raise ProtocolError("gc-exports: positions and deltas differ in length")
        for pos, delta in zip(msg.positions, msg.deltas, strict=True):
            if type(delta) is not int or delta <= 0:
                raise ProtocolError(f"gc-exports: wire delta must be a positive integer: {delta!r}")
            entry = self._exports.get(pos)
            if entry is None or entry.pinned:
                continue
            entry.count -= delta
            if entry.count <= 0:
                del self._exports[pos]
                if self._export_ids.get(id(entry.value)) == pos:
                    del self._export_ids[id(entry.value)]

    def _recv_gc_answers(self, msg: GcAnswers) -> None:
        for pos in msg.positions:
            self._answers.pop(pos, None)

    def _recv_abort(self, msg: Abort) -> None:
        self._lost(ConnectionLost(f"peer aborted: {msg.reason}"))

    # == garbage collection ========================================================

    def _import_dropped(self, entry: _Import, delta: int) -> None:
        if self.dead is not None:
            return
        pos = entry.position
        self._gc_exports[pos] = self._gc_exports.get(pos, 0) + delta
        self._gc_imports.append(entry)
        self._schedule_gc()

    def _schedule_gc(self) -> None:
        # Called once per settled question: the usual case (a flush is already
        # due, the batch is not full) does nothing.
        if self._gc_soon:
            return
        full = len(self._gc_exports) + len(self._gc_answers) >= GC_BATCH
        if self._gc_scheduled and not full:
            return
        try:
            if full:  # once: a burst of settlements must not queue a flush each
                self._gc_soon = True
                self._vat.call_soon(self.flush_gc)
            else:
                self._gc_scheduled = True
                self._vat.call_later(GC_DELAY_SECONDS, self.flush_gc)
        except RuntimeError:  # the loop is gone: nobody to tell
            self._gc_scheduled = self._gc_soon = False

    def flush_gc(self) -> None:
        """Send the drops and released answers collected since the last flush."""
        self._gc_scheduled = self._gc_soon = False
        if self.dead is not None:
            return
        if self._gc_imports:
            entries, self._gc_imports = self._gc_imports, []
            for entry in entries:
                if (
                    entry.ref is None
                    and entry.count == 0
                    and entry.pinned is None
                    and self._imports.get(entry.position) is entry
                ):
                    del self._imports[entry.position]
        if self._gc_exports:
            drops, self._gc_exports = self._gc_exports, {}
            self._emit(GcExports(tuple(drops), tuple(drops.values())))
        if self._gc_answers:
            answers, self._gc_answers = self._gc_answers, []
            self._emit(GcAnswers(tuple(answers)))

    # == ending ====================================================================

    def abort(self, reason: str) -> None:
        """Tell the peer we are ending the session, then end it here."""
        if self.dead is not None:
            return
        try:
            self._emit(Abort(reason))
        except Exception as exc:  # the abort is best effort; the session ends regardless
            log.debug("could not send abort on %s: %r", self.name, exc)
        self._lost(ConnectionLost(reason))

    def _wrong_thread(self) -> WrongThread:
        return WrongThread(
            f"{self.name} belongs to the event loop of another thread: call it there "
            "(ocapn.sync, or anyio.from_thread), not from this thread"
        )

    def when_lost(self, callback: Callable[[ConnectionLost], None]) -> Callable[[], None]:
        """Call ``callback(error)`` once when the session ends (in a later turn if it has).

        Returns a function that cancels the watch.
        """
        if self.dead is not None:
            self._vat.call_soon(callback, self.dead)
            return lambda: None
        key = next(_WATCH_IDS)
        self._watchers[key] = callback
        return lambda: self._watchers.pop(key, None) and None

    def connection_lost(self, reason: str) -> None:
        """The transport is gone: end the session without telling the peer."""
        self._lost(ConnectionLost(reason))

    def release(self) -> None:
        """The driver is done with this ended session: drop what ties it into cycles.

        The callbacks into the driver, the dispatch table (bound methods of
        this engine) and the bootstrap object go, so the session's objects are
        freed as soon as nobody holds them.  What it says of itself (``dead``,
        ``stats()``) stays.
        """
        if self.dead is None:
            raise RuntimeError("release() is for a session that has ended")
        self._encode = session_ended
        self._on_output = self._on_lost = self._handoff = None
        self._handlers = {}
        self._bootstrap = None

    def _lost(self, error: ConnectionLost) -> None:
        if self.dead is not None:
            return
        self.dead = error
        questions = list(self._questions.values())
        promises = [
            p for entry in self._imports.values()
            if entry.ref is not None and type(p := entry.ref()) is Promise
        ]
        for entry in self._imports.values():
            entry.pinned = None  # (the peer's bootstrap: it would keep this engine in a cycle)
        self._questions.clear()
        self._exports.clear()
        self._export_ids.clear()
        self._imports.clear()
        self._answers.clear()
        self._gc_exports.clear()
        self._gc_imports.clear()
        self._gc_answers.clear()
        self._arrivals.clear()
        self._on_receipt.clear()
        self._decoding = False
        for resolver in questions:
            resolver.break_(error)
        for promise in promises:
            promise.break_with(error)  # does nothing to a promise that already settled
        if self._on_lost is not None:
            self._on_lost(error)
        watchers, self._watchers = list(self._watchers.values()), {}
        for callback in watchers:
            try:
                callback(error)
            except Exception:  # one watcher's bug must not stop the others
                log.exception("%s: error in a when_broken callback", self.name)

