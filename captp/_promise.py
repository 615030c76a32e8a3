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
from collections.abc import Callable, Generator
from typing import Any, Final

import anyio

from captp.errors import BrokenPromise

__all__ = ["Promise", "Resolver", "make_promise"]

PENDING: Final = 0
FORWARDED: Final = 1
FULFILLED: Final = 2
BROKEN: Final = 3

Reaction = Callable[["Promise"], None]


def _send_into(
    target: Any, method: str | None, args: tuple[Any, ...], resolver: Resolver | None
) -> None:  # pragma: no cover - replaced by captp._eventual.send_into at import
    raise NotImplementedError


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


class Promise:
    """An eventual value.  ``await promise`` gives the value or raises the reason.

    A promise broken with an exception raises that exception; one broken with
    any other passable raises :class:`~captp.errors.BrokenPromise` carrying it.
    """

    _captp_promise_: Final = True
    __slots__ = ("__weakref__", "_handler", "_queue", "_reactions", "_state", "_value")

    def __init__(self, handler: PromiseHandler | None = None) -> None:
        self._state: int = PENDING
        self._value: Any = None
        self._reactions: list[Reaction] | None = None
        # messages queued on a local pending promise: (method, args, resolver or None)
        self._queue: list[tuple[str | None, tuple[Any, ...], Resolver | None]] | None = None
        self._handler = handler

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
            raise reason_to_exception(p._value)
        raise RuntimeError("promise is not settled yet")

    def reason(self) -> Any:
        """The reason of a broken promise (``None`` if it is not broken)."""
        p = self._shorten()
        return p._value if p._state == BROKEN else None

    def __repr__(self) -> str:
        p = self._shorten()
        state = ("pending", "forwarded", "fulfilled", "broken")[p._state]
        return f"<Promise {state}{'' if p._state < FULFILLED else f' {p._value!r}'}>"

    # -- settling --------------------------------------------------------------

    def _resolve(self, value: Any) -> bool:
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
            return self._settle(target._state, target._value)
        return self._settle(FULFILLED, value)

    def _break(self, reason: Any) -> bool:
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
                result = target._send(method, args, resolver is not None)
                if resolver is not None:
                    resolver.resolve(result)
        if reactions:
            for reaction in reactions:
                target._react(reaction)

    def _settle(self, state: int, value: Any) -> bool:
        self._state = state
        self._value = value
        self._handler = None
        queue, self._queue = self._queue, None
        reactions, self._reactions = self._reactions, None
        if queue:
            for method, args, resolver in queue:
                if state == BROKEN:
                    if resolver is not None:
                        resolver.break_(value)
                else:
                    _send_into(value, method, args, resolver)
        if reactions:
            for reaction in reactions:
                reaction(self)
        return True

    # -- reacting and sending ----------------------------------------------------

    def _react(self, reaction: Reaction) -> None:
        """Call ``reaction(settled_promise)`` once this promise settles (now, if it has)."""
        p = self._shorten()
        if p._state >= FULFILLED:
            reaction(p)
            return
        if p._reactions is None:
            p._reactions = [reaction]
        else:
            p._reactions.append(reaction)

    def _send(self, method: str | None, args: tuple[Any, ...], want_result: bool) -> Promise | None:
        """Send to a pending promise: pipeline through its handler, or queue it here."""
        p = self._shorten()
        if p._state != PENDING:
            if p._state == BROKEN:
                return broken(p._value) if want_result else None
            result, resolver = make_promise() if want_result else (None, None)
            _send_into(p._value, method, args, resolver)
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

    def __await__(self) -> Generator[Any, None, Any]:
        p = self._shorten()
        if p._state < FULFILLED:
            loop = asyncio._get_running_loop()
            if loop is not None:
                fut = loop.create_future()

                def wake(_: Promise) -> None:
                    if not fut.done():
                        fut.set_result(None)

                p._react(wake)
                yield from fut.__await__()
            else:
                event = anyio.Event()
                p._react(lambda _p: event.set())
                yield from event.wait().__await__()
            p = p._shorten()
        if p._state == FULFILLED:
            return p._value
        raise reason_to_exception(p._value)


def reason_to_exception(reason: Any) -> BaseException:
    """The exception ``await`` raises for a promise broken with ``reason``."""
    if isinstance(reason, BaseException):
        return reason
    return BrokenPromise(reason)


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
            p._resolve(value)

    fulfill = resolve

    def break_(self, reason: Any) -> None:
        """Break the promise with ``reason``."""
        p, self._promise = self._promise, None
        if p is not None:
            p._break(reason)

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
    p._resolve(value)
    return p


# Methods a peer may call on a resolver, by wire name.  Settling a resolver
# runs no user code, so the engine may do it at once instead of in a new turn.
RESOLVER_METHODS: Final[dict[str, Callable[[Resolver, Any], None]]] = {
    "fulfill": Resolver.resolve,
    "resolve": Resolver.resolve,
    "break": Resolver.break_,
}
