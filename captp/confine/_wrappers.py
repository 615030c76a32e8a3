"""Caretakers, membranes and attenuation: far functions that stand between a caller and a target.

Each wrapper is a :class:`~captp.FarFunction`.  OCapN calls a far function
with the method name as a leading :class:`~captp.Symbol`, so one function
forwards every method: ``E(proxy).complete(x)`` arrives as
``proxy(Symbol("complete"), x)`` and goes on as ``E(target).complete(x)``.
The target may be a local far object, a reference from another session or
machine, or a promise for one; the caller cannot tell which.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from captp._eventual import E
from captp._far import FarFunction, interface_name
from captp._passable import Symbol, is_remotable, map_leaves
from captp._promise import Promise
from captp._refs import RemoteRef
from captp.confine._errors import Revoked

__all__ = ["Invocation", "attenuate", "caretaker", "membrane"]

log = logging.getLogger("captp.confine")

Revoke = Callable[[], None]


def _split(args: tuple[Any, ...]) -> tuple[str | None, tuple[Any, ...]]:
    if args and type(args[0]) is Symbol:
        return args[0].name, args[1:]
    return None, args


def _forward(target: Any, method: str | None, args: tuple[Any, ...]) -> Any:
    proxy = E(target)
    return proxy(*args) if method is None else proxy[method](*args)


def caretaker(target: Any) -> tuple[FarFunction, Revoke]:
    """A revocable forwarder for ``target``: ``(proxy, revoke)``.

    Every method sent to ``proxy`` goes on to ``target`` until ``revoke()``;
    from then on every call fails with :class:`Revoked` and the proxy no
    longer holds ``target`` (it can be collected).
    """
    holder: list[Any] = [target]
    name = f"caretaker of {interface_name(target)}"

    def forward(*args: Any) -> Any:
        if not holder:
            raise Revoked(f"{name}: capability revoked")
        method, rest = _split(args)
        return _forward(holder[0], method, rest)

    def revoke() -> None:
        holder.clear()

    return FarFunction(forward, name), revoke


def attenuate(target: Any, methods: Iterable[str]) -> FarFunction:
    """A forwarder for ``target`` that exposes only ``methods`` (wire names).

    Any other method, and calling the proxy as a function, fails with
    :class:`TypeError` before the target sees anything.
    """
    allowed = frozenset(methods)
    iface = interface_name(target)
    listed = sorted(allowed)

    def forward(*args: Any) -> Any:
        method, rest = _split(args)
        if method is None or method not in allowed:
            what = "a call" if method is None else f"method {method!r}"
            raise TypeError(f"attenuated {iface} does not expose {what}; it has {listed}")
        return _forward(target, method, rest)

    return FarFunction(forward, f"{iface} (attenuated)")


@dataclass(frozen=True, slots=True)
class Invocation:
    """One call through a membrane, reported once it has settled.

    ``target``: the interface name of the object called; ``method`` (``None``
    for a function call); ``args`` as the caller sent them; ``ok`` and
    ``outcome`` (the result, or the error it failed with); ``seq`` counts the
    membrane's calls from 1.
    """

    seq: int
    target: str
    method: str | None
    args: tuple[Any, ...]
    ok: bool
    outcome: Any


class _Membrane:
    """The shared state of one membrane: every proxy it made, one revocation."""

    def __init__(
        self,
        on_call: Callable[[Invocation], None],
        allow: Callable[[str | None, tuple[Any, ...]], bool] | None,
    ) -> None:
        self.on_call = on_call
        self.allow = allow
        self.revoked = False
        self.seq = itertools.count(1)
        self.holders: list[list[Any]] = []  # each proxy's target, in a list revoke empties
        self.proxies: dict[int, tuple[Any, FarFunction]] = {}  # id(target) -> (target, proxy)
        self.originals: dict[int, Any] = {}  # id(proxy) -> target

    def wrap(self, target: Any) -> FarFunction:
        known = self.proxies.get(id(target))
        if known is not None and known[0] is target:
            return known[1]
        iface = interface_name(target)
        holder = [target]  # emptied on revocation: the target can then be collected
        self.holders.append(holder)

        async def forward(*args: Any) -> Any:
            method, rest = _split(args)
            error: Exception | None = None
            if not holder:  # attempts after revocation are reported too
                error = Revoked(f"membrane around {iface}: capability revoked")
            elif self.allow is not None and not self.allow(method, rest):
                error = PermissionError(f"membrane refused {iface}.{method}")
            if error is not None:
                self._report(iface, method, rest, False, error)
                raise error
            inner = map_leaves(rest, self.unwrap_or_wrap)
            try:
                result = await _forward(holder[0], method, inner)
            except Exception as exc:
                self._report(iface, method, rest, False, exc)
                raise
            if self.revoked:
                raise Revoked(f"membrane around {iface}: capability revoked")
            self._report(iface, method, rest, True, result)
            return map_leaves(result, self.unwrap_or_wrap)

        proxy = FarFunction(forward, f"{iface} (membrane)")
        self.proxies[id(target)] = (target, proxy)
        self.originals[id(proxy)] = target
        return proxy

    def unwrap_or_wrap(self, value: Any) -> Any:
        """A reference crossing the membrane: our own proxy unwrapped, any other wrapped."""
        if type(value) is FarFunction and id(value) in self.originals:
            return self.originals[id(value)]
        if type(value) is RemoteRef or (is_remotable(value) and not isinstance(value, Promise)):
            return self.wrap(value)
        return value

    def _report(
        self, iface: str, method: str | None, args: tuple[Any, ...], ok: bool, outcome: Any
    ) -> None:
        try:
            self.on_call(Invocation(next(self.seq), iface, method, args, ok, outcome))
        except Exception:  # a broken logger must not break the call
            log.exception("membrane on_call failed")

    def revoke(self) -> None:
        self.revoked = True
        for holder in self.holders:
            holder.clear()
        self.holders.clear()
        self.proxies.clear()
        self.originals.clear()


def membrane(
    target: Any,
    on_call: Callable[[Invocation], None],
    *,
    allow: Callable[[str | None, tuple[Any, ...]], bool] | None = None,
) -> tuple[FarFunction, Revoke]:
    """A logging, revocable boundary around ``target``: ``(proxy, revoke)``.

    ``on_call`` sees every invocation that crosses it, once settled
    (:class:`Invocation`: method, arguments, outcome).  References in
    arguments and results are wrapped by the same membrane, transitively, so a
    reference handed out through it is logged and revoked with it; ``revoke()``
    ends every proxy at once.  ``allow(method, args)``, if given, may refuse a
    call (it then fails with :class:`PermissionError` and is reported).
    Promises nested inside data pass unwrapped; a call's own result is awaited
    and wrapped.  The membrane keeps every reference that crossed it (so the
    same reference always gets the same proxy) until it is revoked.
    """
    state = _Membrane(on_call, allow)
    return state.wrap(target), state.revoke
