"""``E``, the eventual-send syntax: ``E(x).method(*args)`` returns a promise, never runs ``x`` now.

The sending itself (:func:`~captp._promise.eventual_send`,
:func:`~captp._promise.eventual_get`) lives with the promises it makes.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar, overload

from captp._far import wire_name
from captp._promise import Promise, eventual_get, eventual_send, watch_unobserved
from captp._refs import RemoteRef

__all__ = ["E"]

_I = TypeVar("_I")


class _Method:
    __slots__ = ("_method", "_send_only", "_target")

    def __init__(self, target: Any, method: str | None, send_only: bool) -> None:
        self._target = target
        self._method = method
        self._send_only = send_only

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("CapTP calls take positional arguments only")
        result = eventual_send(self._target, self._method, args, not self._send_only)
        if result is not None:
            watch_unobserved(result)
        return result


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
        result = eventual_send(self._target, None, args, not self._send_only)
        if result is not None:
            watch_unobserved(result)
        return result


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

    # Typed remote calls: for a ``RemoteRef[I]`` (or a promise for one) the
    # proxy is typed as ``I``, the far object's interface as a protocol whose
    # methods return promises; anything else gives an untyped proxy.
    @overload
    def __call__(self, target: RemoteRef[_I]) -> _I: ...
    @overload
    def __call__(self, target: Promise[RemoteRef[_I]]) -> _I: ...
    @overload
    def __call__(self, target: Any) -> Any: ...

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
