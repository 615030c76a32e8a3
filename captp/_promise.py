"""Promises that settle once, can be pipelined on, and can be awaited under asyncio or trio.

A :class:`Promise` is pure data plus callbacks: it does no I/O and never runs
user code itself.  Its states:

* *pending*: nothing known yet.  A pending promise may have a *handler* (it
  stands for something on a peer: a question, an imported promise); messages
  sent to it go to the handler, which pipelines them to the peer.  Without a
  handler, messages sent to it queue in order until it resolves.
* *forwarded*: resolved to another promise; it behaves as that promise from
  then on (chains are shortened as they are walked).
* *fulfilled* with a value, or *broken* with a reason.  Either is final.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final, Generic, Protocol

import anyio

from captp._far import bound_method
from captp._passable import Tagged, is_remotable
from captp._refs import RemoteRef
from captp._typing import T_co
from captp._vat import Scheduler, current_vat, running_loop
from captp.errors import BrokenPromise, CapTPError, ConnectionLost

__all__ = ["Promise", "Resolver", "eventual_get", "eventual_send", "make_promise"]

log = logging.getLogger("captp")

PENDING: Final = 0
FORWARDED: Final = 1
FULFILLED: Final = 2
BROKEN: Final = 3

Reaction = Callable[["Promise"], None]

# Broken promises nobody has looked at yet: id -> the finalizer that reports
# one if it is garbage-collected unobserved (asyncio's "Task exception was
# never retrieved", for promises).  Only broken promises are ever tracked.
_unobserved: dict[int, weakref.finalize[..., Any]] = {}


def _track_unobserved(promise: Promise) -> None:
    key = id(promise)
    _unobserved[key] = weakref.finalize(promise, _report_unobserved, key, promise._value)


def watch_unobserved(promise: Promise) -> None:
    """Report ``promise`` (once) if it is broken and collected before anyone looks at it.

    ``E`` watches the promises it hands to user code.  Looking means
    awaiting it, asking its result or reason, sending to it, or resolving
    another promise with it.
    """
    p = promise._shorten()
    if p._state == BROKEN:
        if id(p) not in _unobserved:
            _track_unobserved(p)
    elif p._state == PENDING:
        p._watch = True


def _observed(promise: Promise) -> None:
    finalizer = _unobserved.pop(id(promise), None)
    if finalizer is not None:
        finalizer.detach()


def _report_unobserved(key: int, reason: Any) -> None:
    _unobserved.pop(key, None)
    error = reason_to_exception(reason)
    # A lost connection breaks every promise that travelled over it, and is
    # reported once where the session ends; a failed call is news.
    level = logging.DEBUG if isinstance(error, ConnectionLost) else logging.WARNING
    log.log(
        level, "a promise was broken and nobody awaited it: %s: %s", type(error).__name__, error
    )


class PromiseHandler:
    """What a pending promise that stands for something remote does with messages."""

    __slots__ = ()

    def send(
        self, promise: Promise, method: str | None, args: tuple[Any, ...], want_result: bool
    ) -> Promise | None:
        """Send ``method(*args)`` to the eventual value of ``promise``."""
        raise NotImplementedError

    def get(self, promise: Promise, kind: str, key: Any) -> Promise:
        """Ask for a field, element or tagged payload of the eventual value."""
        raise NotImplementedError


class Promise(Generic[T_co]):
    """An eventual value.  ``await promise`` gives the value or raises the reason.

    A promise broken with an exception raises that exception; one broken with
    any other passable raises :class:`~captp.errors.BrokenPromise` carrying it.
    """

    _captp_promise_: Final = True
    __slots__ = ("__weakref__", "_handler", "_queue", "_reactions", "_state", "_value", "_watch")

    def __init__(self, handler: PromiseHandler | None = None) -> None:
        self._state: int = PENDING
        self._value: Any = None
        self._reactions: list[Reaction] | None = None
        # messages queued on a local pending promise: (method, args, resolver or None)
        self._queue: list[tuple[str | None, tuple[Any, ...], Resolver | None]] | None = None
        self._handler = handler
        self._watch = False  # report it if it breaks and is collected unobserved

    # -- inspection ------------------------------------------------------------

    def _shorten(self) -> Promise:
        """The promise at the end of this one's forwarding chain."""
        p = self
        while p._state == FORWARDED:
            p = p._value
        if p is not self and self._state == FORWARDED:
            self._value = p
        return p

    def done(self) -> bool:
        """True once the promise is fulfilled or broken."""
        if self._state != FORWARDED:
            return self._state >= FULFILLED
        return self._shorten()._state >= FULFILLED

    def is_broken(self) -> bool:
        """True if the promise is broken."""
        return self._shorten()._state == BROKEN

    def result(self) -> Any:
        """The value of a settled promise, or raise its reason; error if still pending."""
        p = self._shorten()
        if p._state == FULFILLED:
            return p._value
        if p._state == BROKEN:
            _observed(p)
            raise reason_to_exception(p._value)
        raise RuntimeError("promise is not settled yet")

    def reason(self) -> Any:
        """The reason of a broken promise (``None`` if it is not broken)."""
        p = self._shorten()
        if p._state != BROKEN:
            return None
        _observed(p)
        return p._value

    def __repr__(self) -> str:
        p = self._shorten()
        state = ("pending", "forwarded", "fulfilled", "broken")[p._state]
        return f"<Promise {state}{'' if p._state < FULFILLED else f' {p._value!r}'}>"

    # -- the engine's API ------------------------------------------------------
    # What the engine (and the other modules of captp) may use besides the
    # public methods: settle a promise that has no resolver (an import),
    # react to settlement, send to it, and read how it settled.

    def outcome(self) -> tuple[bool, Any]:
        """``(True, value)`` if fulfilled, ``(False, reason)`` if broken; RuntimeError if not."""
        p = self if self._state != FORWARDED else self._shorten()
        if p._state < FULFILLED:
            raise RuntimeError("promise is not settled yet")
        if p._state == BROKEN:
            _observed(p)
        return p._state == FULFILLED, p._value

    @property
    def pending_handler(self) -> PromiseHandler | None:
        """The handler of a pending promise that stands for something remote (else None)."""
        return self._handler if self._state == PENDING else None

    # -- settling --------------------------------------------------------------

    def resolve_with(self, value: Any) -> bool:
        """Resolve with ``value`` (a promise means: follow it).  False if already resolved."""
        if self._state != PENDING:
            return False
        if isinstance(value, Promise):
            target = value._shorten()
            if target is self:
                return self._settle(
                    BROKEN, TypeError("a promise cannot be resolved with itself")
                )
            if target._state == PENDING:
                self._forward(target)
                return True
            if target._state == BROKEN:
                _observed(target)  # its reason goes on to this promise
            return self._settle(target._state, target._value)
        return self._settle(FULFILLED, value)

    def break_with(self, reason: Any) -> bool:
        """Break with ``reason``.  False if already resolved."""
        if self._state != PENDING:
            return False
        return self._settle(BROKEN, reason)

    def _forward(self, target: Promise) -> None:
        self._state = FORWARDED
        self._value = target
        self._handler = None
        queue, self._queue = self._queue, None
        reactions, self._reactions = self._reactions, None
        if queue:
            for method, args, resolver in queue:
                result = target.deliver(method, args, resolver is not None)
                if resolver is not None:
                    resolver.resolve(result)
        if reactions:
            for reaction in reactions:
                target.when_settled(reaction)

    def _settle(self, state: int, value: Any) -> bool:
        self._state = state
        self._value = value
        self._handler = None
        if self._watch and state == BROKEN:
            _track_unobserved(self)  # before the reactions: one may look at it
        queue, self._queue = self._queue, None
        reactions, self._reactions = self._reactions, None
        if queue:
            for method, args, resolver in queue:
                if state == BROKEN:
                    if resolver is not None:
                        resolver.break_(value)
                else:
                    send_into(value, method, args, resolver)
        if reactions:
            for reaction in reactions:
                reaction(self)
        return True

    # -- reacting and sending ----------------------------------------------------

    def when_settled(self, reaction: Reaction) -> None:
        """Call ``reaction(settled_promise)`` once this promise settles (now, if it has)."""
        p = self if self._state != FORWARDED else self._shorten()
        if p._state >= FULFILLED:
            if p._state == BROKEN:
                _observed(p)
            reaction(p)
            return
        if p._reactions is None:
            p._reactions = [reaction]
        else:
            p._reactions.append(reaction)

    def deliver(
        self, method: str | None, args: tuple[Any, ...], want_result: bool
    ) -> Promise | None:
        """Send to a pending promise: pipeline through its handler, or queue it here."""
        p = self._shorten()
        # Sent to: if it breaks, the reason reaches the promise of this send.
        self._watch = p._watch = False
        if p._state != PENDING:
            if p._state == BROKEN:
                _observed(p)  # its reason goes on to the new promise
                return broken(p._value) if want_result else None
            result, resolver = make_promise() if want_result else (None, None)
            send_into(p._value, method, args, resolver)
            return result
        if p._handler is not None:
            return p._handler.send(p, method, args, want_result)
        resolver = None
        result = None
        if want_result:
            result, resolver = make_promise()
        if p._queue is None:
            p._queue = []
        p._queue.append((method, args, resolver))
        return result

    # -- awaiting ----------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, T_co]:
        p = self if self._state != FORWARDED else self._shorten()
        if p._state >= FULFILLED:
            return _outcome_now(p)
        loop = running_loop()
        if loop is None:  # trio
            return _outcome_later(p)
        # Under asyncio the task waits on a future that carries the outcome:
        # it resumes straight into the future, with no frame of ours between.
        future: asyncio.Future[T_co] = loop.create_future()
        p.when_settled(functools.partial(_settle_future, future))
        return future.__await__()


def _outcome_now(p: Promise) -> Generator[Any, None, Any]:
    if p._state == FULFILLED:
        return p._value
    _observed(p)
    raise reason_to_exception(p._value)
    yield  # a generator: __await__ must return an iterator


def _outcome_later(p: Promise) -> Generator[Any, None, Any]:
    event = anyio.Event()
    p.when_settled(lambda _p: event.set())
    yield from event.wait().__await__()
    return (yield from _outcome_now(p._shorten()))


def _settle_future(future: asyncio.Future[Any], p: Promise) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if p._state == FULFILLED:
        future.set_result(p._value)
        return
    _observed(p)  # the awaiting task gets the reason
    error = reason_to_exception(p._value)
    if type(error) is StopIteration:  # a future cannot hold one (raised, it would become this)
        stop, error = error, RuntimeError("the promise was broken with StopIteration")
        error.__cause__ = stop
    future.set_exception(error)


def reason_to_exception(reason: Any) -> BaseException:
    """The exception ``await`` raises for a promise broken with ``reason``."""
    if isinstance(reason, BaseException):
        return reason
    return BrokenPromise(reason)


class Settles(Protocol):
    """What :func:`deliver_local` settles with a call's outcome: a :class:`Resolver`, or
    the engine's record of a peer's call (which makes a promise only if one is asked for)."""

    def resolve(self, value: Any) -> None: ...

    def break_(self, reason: Any) -> None: ...


class Resolver:
    """The right to settle one promise.  It is a far object: it can be sent to peers.

    Its remote methods are ``fulfill(value)``, ``resolve(value)`` and
    ``break(reason)`` (``break_`` in Python).  Settling twice does nothing.
    """

    _captp_far_: Final = "Resolver"
    __slots__ = ("__weakref__", "_promise")

    def __init__(self, promise: Promise) -> None:
        self._promise: Promise | None = promise

    @property
    def promise(self) -> Promise | None:
        """The promise this resolver settles, until it is settled."""
        return self._promise

    def resolve(self, value: Any) -> None:
        """Resolve the promise with ``value`` (another promise means: follow it)."""
        p, self._promise = self._promise, None
        if p is not None:
            p.resolve_with(value)

    fulfill = resolve

    def break_(self, reason: Any) -> None:
        """Break the promise with ``reason``."""
        p, self._promise = self._promise, None
        if p is not None:
            p.break_with(reason)

    def __repr__(self) -> str:
        return f"<Resolver of {self._promise!r}>" if self._promise else "<Resolver (done)>"


def make_promise(handler: PromiseHandler | None = None) -> tuple[Promise, Resolver]:
    """A new pending promise and the resolver that settles it."""
    p = Promise(handler)
    return p, Resolver(p)


def broken(reason: Any) -> Promise:
    """A promise already broken with ``reason``."""
    p = Promise()
    p._state = BROKEN
    p._value = reason
    return p


def fulfilled(value: Any) -> Promise:
    """A promise resolved with ``value`` (which may itself be a promise)."""
    p = Promise()
    p.resolve_with(value)
    return p


# == eventual send ====================================================================


def eventual_send(
    target: Any,
    method: str | None,
    args: tuple[Any, ...],
    want_result: bool = True,
    vat: Scheduler | None = None,
) -> Promise | None:
    """Send ``method(*args)`` to ``target`` in a later turn; a promise for the result.

    ``target`` may be a far object, a remote reference or a promise for
    either.  With ``want_result`` false nothing is returned and nobody hears
    about the result.  Sending to something that is not a reference gives a
    broken promise (a :class:`TypeError`).
    """
    if isinstance(target, Promise):
        return target.deliver(method, args, want_result)
    if type(target) is RemoteRef:
        sent: Promise | None = target._session.send_deliver(target, method, args, want_result)
        return sent
    if is_remotable(target):
        if vat is None:
            vat = current_vat()
        if want_result:
            promise, resolver = make_promise()
            vat.call_soon(deliver_local, vat, target, method, args, resolver)
            return promise
        vat.call_soon(deliver_local, vat, target, method, args, None)
        return None
    error = TypeError(
        f"cannot send {method or 'a call'!r} to {type(target).__name__}: "
        "it is not a far object, a remote reference or a promise"
    )
    return broken(error) if want_result else None


def send_into(
    target: Any, method: str | None, args: tuple[Any, ...], resolver: Resolver | None,
    vat: Scheduler | None = None,
) -> None:
    """Like :func:`eventual_send`, settling ``resolver`` (if any) with the result."""
    if type(target) is not RemoteRef and not isinstance(target, Promise) and is_remotable(target):
        if vat is None:
            vat = current_vat()
        vat.call_soon(deliver_local, vat, target, method, args, resolver)
        return
    result = eventual_send(target, method, args, resolver is not None, vat)
    if resolver is not None:
        resolver.resolve(result)


def deliver_local(
    vat: Scheduler, target: Any, method: str | None, args: tuple[Any, ...],
    resolver: Settles | None,
) -> None:
    """Run ``target.method(*args)`` now (in a turn of ``vat``) and settle ``resolver``.

    When ``vat`` runs a peer's calls (``vat.peer_calls``), an exception the
    method raises is logged here with its traceback on ``captp.calls``: the
    peer gets only its name and message.
    """
    try:
        # A method the target does not have is the caller's mistake: not logged.
        call = bound_method(target, method)
    except TypeError as exc:
        if resolver is not None:
            resolver.break_(exc)
        return
    try:
        result = call(*args)
    except Exception as exc:
        if getattr(vat, "peer_calls", False):
            _report(target, method, exc)
        if resolver is not None:
            resolver.break_(exc)
        else:
            log.debug("error in a send-only call to %r: %r", target, exc)
        return
    if type(result) not in _NOT_AWAITABLE and _is_awaitable(result):
        label = (target, method) if getattr(vat, "peer_calls", False) else None
        vat.spawn(_await_into, result, resolver, label)
    elif resolver is not None:
        resolver.resolve(result)


# What most methods return: no need to ask whether it is awaitable.
_NOT_AWAITABLE: Final = frozenset(
    {type(None), bool, int, float, str, bytes, list, tuple, dict, Promise}
)


def _is_awaitable(value: Any) -> bool:
    return inspect.isawaitable(value) and not isinstance(value, Promise)


calls_log = logging.getLogger("captp.calls")


def _report(target: Any, method: str | None, exc: Exception) -> None:
    if isinstance(exc, CapTPError):  # the protocol's own answers (unknown swiss, ...)
        return
    calls_log.warning(
        "a peer's call %s.%s raised %s (the peer gets only its name and message)",
        type(target).__name__, method or "__call__", type(exc).__name__, exc_info=exc,
    )


async def _await_into(
    awaitable: Awaitable[Any], resolver: Settles | None,
    label: tuple[Any, str | None] | None = None,
) -> None:
    try:
        result = await awaitable
    except Exception as exc:
        if label is not None:
            _report(label[0], label[1], exc)
        if resolver is not None:
            resolver.break_(exc)
        else:
            log.debug("error in a send-only async call: %r", exc)
        return
    if resolver is not None:
        resolver.resolve(result)


def eventual_get(target: Any, kind: str, key: Any) -> Promise:
    """A promise for a part of ``target``'s eventual value (see :class:`~captp.messages.Get`)."""
    if isinstance(target, Promise):
        p = target._shorten()
        if p._state < 2:  # pending
            if p._handler is not None:
                return p._handler.get(p, kind, key)
            result, resolver = make_promise()

            def settle(sp: Promise) -> None:
                if sp._state == 3:
                    resolver.break_(sp._value)
                else:
                    resolver.resolve(eventual_get(sp._value, kind, key))

            p.when_settled(settle)
            return result
        if p._state == 3:
            return broken(p._value)
        target = p._value
    if type(target) is RemoteRef:
        got: Promise = target._session.send_get(target, kind, key)
        return got
    try:
        return fulfilled(_select(target, kind, key))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return broken(exc)


def _select(value: Any, kind: str, key: Any) -> Any:
    if kind == "get":
        if type(value) is not dict:
            raise TypeError(f"cannot get field {key!r} of {type(value).__name__}: not a struct")
        if key not in value:
            raise KeyError(key)
        return value[key]
    if kind == "index":
        if type(value) not in (list, tuple):
            raise TypeError(f"cannot index {type(value).__name__}: not a list")
        if type(key) is not int or key < 0:
            raise TypeError(f"list index must be a non-negative int, not {key!r}")
        return value[key]
    if kind == "untag":
        if type(value) is not Tagged:
            raise TypeError(f"cannot untag {type(value).__name__}: not a tagged value")
        if value.tag != key:
            raise ValueError(f"tag is {value.tag!r}, not {key!r}")
        return value.payload
    raise ValueError(f"unknown get kind {kind!r}")
