"""Eventual send: ``E(x).method(*args)`` returns a promise and never runs ``x`` now."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import Any, Final

from captp import _promise as _promise_module
from captp._far import invoke, wire_name
from captp._passable import Tagged, is_remotable
from captp._promise import Promise, Resolver, broken, fulfilled, make_promise
from captp._refs import RemoteRef
from captp._vat import Scheduler, current_vat

__all__ = ["E", "eventual_get", "eventual_send"]

log = logging.getLogger("captp")


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
        return target._send(method, args, want_result)
    if type(target) is RemoteRef:
        return target._session.send_deliver(target, method, args, want_result)
    if is_remotable(target):
        if vat is None:
            vat = current_vat()
        if want_result:
            promise, resolver = make_promise()
            vat.call_soon(_deliver_local, vat, target, method, args, resolver)
            return promise
        vat.call_soon(_deliver_local, vat, target, method, args, None)
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
        vat.call_soon(_deliver_local, vat, target, method, args, resolver)
        return
    result = eventual_send(target, method, args, resolver is not None, vat)
    if resolver is not None:
        resolver.resolve(result)


_promise_module._send_into = send_into


def _deliver_local(
    vat: Scheduler, target: Any, method: str | None, args: tuple[Any, ...],
    resolver: Resolver | None,
) -> None:
    try:
        result = invoke(target, method, args)
    except Exception as exc:
        if resolver is not None:
            resolver.break_(exc)
        else:
            log.debug("error in a send-only call to %r: %r", target, exc)
        return
    if inspect.isawaitable(result) and not isinstance(result, Promise):
        vat.spawn(_await_into, result, resolver)
    elif resolver is not None:
        resolver.resolve(result)


async def _await_into(awaitable: Awaitable[Any], resolver: Resolver | None) -> None:
    try:
        result = await awaitable
    except Exception as exc:
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

            p._react(settle)
            return result
        if p._state == 3:
            return broken(p._value)
        target = p._value
    if type(target) is RemoteRef:
        return target._session.send_get(target, kind, key)
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


class _Method:
    __slots__ = ("_method", "_send_only", "_target")

    def __init__(self, target: Any, method: str | None, send_only: bool) -> None:
        self._target = target
        self._method = method
        self._send_only = send_only

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("CapTP calls take positional arguments only")
        return eventual_send(self._target, self._method, args, not self._send_only)


class _Proxy:
    """``E(x)``: attribute access names a method; calling applies ``x`` itself."""

    __slots__ = ("_send_only", "_target")

    def __init__(self, target: Any, send_only: bool) -> None:
        self._target = target
        self._send_only = send_only

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Method(self._target, wire_name(name), self._send_only)

    def __getitem__(self, name: str) -> _Method:
        if type(name) is not str:
            raise TypeError("method names are strings")
        return _Method(self._target, name, self._send_only)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("CapTP calls take positional arguments only")
        return eventual_send(self._target, None, args, not self._send_only)


class _GetProxy:
    """``E.get(x)``: ``.field`` / ``["field"]`` for struct fields, ``[i]`` for list items."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Promise:
        if name.startswith("__"):
            raise AttributeError(name)
        return eventual_get(self._target, "get", name)

    def __getitem__(self, key: str | int) -> Promise:
        if type(key) is int:
            return eventual_get(self._target, "index", key)
        if type(key) is str:
            return eventual_get(self._target, "get", key)
        raise TypeError("E.get(x)[key] takes a str field name or an int index")


class _E:
    """Eventual send.

    * ``E(x).method(*args)`` -> :class:`Promise` for the result (``E(x)["any-name"]``
      for names that are not Python identifiers; ``E(x)(*args)`` to call a far function);
    * ``E.send_only(x).method(*args)`` -> ``None``: nobody hears about the result;
    * ``E.get(x).field``, ``E.get(x)[i]`` -> promise for a struct field / list item;
    * ``E.untag(x, tag)`` -> promise for the payload of a tagged value;
    * ``await E.when(x)`` -> ``x`` itself, or the value of a promise.
    """

    __slots__ = ()

    def __call__(self, target: Any) -> Any:
        return _Proxy(target, False)

    def send_only(self, target: Any) -> Any:
        """Like ``E(target)``, but the call returns ``None`` and asks for no answer."""
        return _Proxy(target, True)

    def get(self, target: Any) -> Any:
        """Eventual property access: a promise for part of ``target``'s value."""
        return _GetProxy(target)

    def untag(self, target: Any, tag: str) -> Promise:
        """A promise for the payload of ``target`` (a tagged value) if its tag is ``tag``."""
        return eventual_get(target, "untag", tag)

    async def when(self, value: Any) -> Any:
        """The value of a promise (or ``value`` itself if it is not a promise)."""
        if isinstance(value, Promise):
            return await value
        return value


E: Final = _E()
