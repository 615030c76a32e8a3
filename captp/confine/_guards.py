"""Interface guards: a far object's declared methods and argument shapes, checked before it runs.

In the spirit of Endo's ``M.interface``: declare the interface once,

    ChatI = M.interface("Chat", {
        "complete": M.call(M.list_of(M.struct({"role": M.string(), "content": M.string()}))),
    })

then either decorate the class (``@guarded(ChatI)`` above ``@far``: its
methods check their arguments) or wrap any reference (``guard(ref, ChatI)``:
a far function that checks and forwards).  A call naming a method the
interface does not list, with the wrong number of arguments or with an
argument of the wrong shape fails with :class:`GuardError` (a
``TypeError``) before the method runs; a peer sees ``GuardError: ...``.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from captp._eventual import E
from captp._far import FarFunction, interface_name, python_name
from captp._passable import Null, PassStyleError, Symbol, is_remotable, pass_style
from captp._promise import Promise
from captp.confine._errors import GuardError

__all__ = ["Interface", "M", "MethodGuard", "Pattern", "guard", "guarded"]

T = TypeVar("T", bound=type)


class Pattern:
    """A shape a passable must have.  ``check(value, where)`` raises :class:`GuardError`."""

    def __init__(self, describe: str, test: Callable[[Any, str], None]) -> None:
        self.describe = describe
        self._test = test

    def check(self, value: Any, where: str = "value") -> None:
        """Raise :class:`GuardError` saying where and what if ``value`` does not match."""
        self._test(value, where)

    def matches(self, value: Any) -> bool:
        """True if ``value`` matches."""
        try:
            self._test(value, "value")
        except GuardError:
            return False
        return True

    def __repr__(self) -> str:
        return f"<pattern {self.describe}>"


def _style(value: Any) -> str:
    try:
        return pass_style(value)
    except PassStyleError:
        return type(value).__name__


def _fail(where: str, expected: str, value: Any) -> GuardError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return GuardError(f"{where}: expected {expected}, got {_style(value)} {shown}")


def _typed(describe: str, ok: Callable[[Any], bool]) -> Pattern:
    def test(value: Any, where: str) -> None:
        if not ok(value):
            raise _fail(where, describe, value)

    return Pattern(describe, test)


def _sized(describe: str, kind: type, max_len: int | None) -> Pattern:
    def test(value: Any, where: str) -> None:
        if type(value) is not kind:
            raise _fail(where, describe, value)
        if max_len is not None and len(value) > max_len:  # type: ignore[arg-type]
            raise GuardError(f"{where}: {describe} longer than {max_len}")

    return Pattern(describe if max_len is None else f"{describe} of at most {max_len}", test)


@dataclass(frozen=True, slots=True)
class MethodGuard:
    """The arguments of one method: required, then optional, then any number of ``rest``."""

    args: tuple[Pattern, ...]
    optional: tuple[Pattern, ...] = ()
    rest: Pattern | None = None

    def check(self, method: str, args: tuple[Any, ...]) -> None:
        """Raise :class:`GuardError` unless ``args`` fit."""
        low, high = len(self.args), len(self.args) + len(self.optional)
        if len(args) < low or (self.rest is None and len(args) > high):
            want = str(low) if low == high else f"{low} to {high}"
            if self.rest is not None:
                want = f"at least {low}"
            raise GuardError(f"{method}: takes {want} arguments, got {len(args)}")
        patterns = self.args + self.optional
        for i, value in enumerate(args):
            pattern = patterns[i] if i < len(patterns) else self.rest
            assert pattern is not None
            pattern.check(value, f"{method}: argument {i}")

    def optional_(self, *patterns: Pattern) -> MethodGuard:
        """The same guard with optional arguments after the required ones."""
        return MethodGuard(self.args, self.optional + patterns, self.rest)

    def rest_(self, pattern: Pattern) -> MethodGuard:
        """The same guard taking any number of further arguments of ``pattern``."""
        return MethodGuard(self.args, self.optional, pattern)


@dataclass(frozen=True)
class Interface:
    """A named set of method guards.  ``sloppy``: methods it does not list are allowed unchecked."""

    name: str
    methods: Mapping[str, MethodGuard] = field(default_factory=dict)
    sloppy: bool = False

    def check(self, method: str | None, args: tuple[Any, ...]) -> None:
        """Raise :class:`GuardError` unless ``method(*args)`` fits this interface."""
        if method is None:
            raise GuardError(f"{self.name} is not a function; call one of its methods")
        guard_ = self.methods.get(method)
        if guard_ is None:
            if self.sloppy:
                return
            raise GuardError(
                f"{self.name} has no method {method!r} in its interface; "
                f"it has {sorted(self.methods)}"
            )
        guard_.check(f"{self.name}.{method}", args)


class _M:
    """Pattern makers (``M.string()``, ``M.list_of(...)``, ``M.interface(...)``, ...)."""

    def any(self) -> Pattern:
        """Any passable."""
        return Pattern("any passable", lambda v, w: None)

    def string(self, max_len: builtins.int | None = None) -> Pattern:
        """A ``str`` (at most ``max_len`` characters)."""
        return _sized("a string", str, max_len)

    def bytes(self, max_len: builtins.int | None = None) -> Pattern:
        """A ``bytes`` (at most ``max_len`` long)."""
        return _sized("bytes", bytes, max_len)

    def int(self, min: builtins.int | None = None, max: builtins.int | None = None) -> Pattern:
        """An ``int`` (not a ``bool``) between ``min`` and ``max``."""
        def ok(v: Any) -> builtins.bool:
            return (
                type(v) is int
                and (min is None or v >= min)
                and (max is None or v <= max)
            )

        bounds = "" if min is None and max is None else f" in [{min}, {max}]"
        return _typed(f"an integer{bounds}", ok)

    def float(self) -> Pattern:
        """A finite ``float``."""
        return _typed("a finite float", lambda v: type(v) is float and math.isfinite(v))

    def bool(self) -> Pattern:
        """``True`` or ``False``."""
        return _typed("a boolean", lambda v: type(v) is bool)

    def symbol(self) -> Pattern:
        """A :class:`~captp.Symbol`."""
        return _typed("a symbol", lambda v: type(v) is Symbol)

    def null(self) -> Pattern:
        """:data:`captp.null`."""
        return _typed("null", lambda v: type(v) is Null)

    def undefined(self) -> Pattern:
        """``None`` (undefined)."""
        return _typed("undefined", lambda v: v is None)

    def remotable(self) -> Pattern:
        """A reference (far object, import) or a promise for one."""
        return _typed(
            "a reference", lambda v: is_remotable(v) or isinstance(v, Promise)
        )

    def eq(self, expected: Any) -> Pattern:
        """Exactly ``expected`` (same type and value)."""
        return _typed(repr(expected), lambda v: type(v) is type(expected) and v == expected)

    def or_(self, *patterns: Pattern) -> Pattern:
        """Any one of ``patterns``."""
        describe = " or ".join(p.describe for p in patterns)

        def test(value: Any, where: str) -> None:
            if not any(p.matches(value) for p in patterns):
                raise _fail(where, describe, value)

        return Pattern(describe, test)

    def opt(self, pattern: Pattern) -> Pattern:
        """``pattern`` or ``None``."""
        return self.or_(pattern, self.undefined())

    def list_of(self, item: Pattern, max_len: builtins.int | None = None) -> Pattern:
        """A list (or tuple) of items matching ``item`` (at most ``max_len`` of them)."""
        describe = f"a list of {item.describe}"

        def test(value: Any, where: str) -> None:
            if type(value) not in (list, tuple):
                raise _fail(where, describe, value)
            if max_len is not None and len(value) > max_len:
                raise GuardError(f"{where}: more than {max_len} items ({len(value)})")
            for i, v in enumerate(value):
                item.check(v, f"{where}[{i}]")

        return Pattern(describe, test)

    def struct(
        self, fields: Mapping[str, Pattern], optional: Mapping[str, Pattern] | None = None
    ) -> Pattern:
        """A struct with exactly ``fields`` (and any of ``optional``), each matching its pattern."""
        required = dict(fields)
        extra = dict(optional or {})
        describe = "a struct {" + ", ".join(sorted(required) + [f"{k}?" for k in extra]) + "}"

        def test(value: Any, where: str) -> None:
            if not isinstance(value, dict):
                raise _fail(where, describe, value)
            missing = sorted(set(required) - set(value))
            if missing:
                raise GuardError(f"{where}: struct lacks {missing}")
            unknown = sorted(set(value) - set(required) - set(extra))
            if unknown:
                raise GuardError(f"{where}: struct has unexpected fields {unknown}")
            for key, v in value.items():
                (required.get(key) or extra[key]).check(v, f"{where}.{key}")

        return Pattern(describe, test)

    def call(self, *args: Pattern) -> MethodGuard:
        """A method taking exactly ``args`` (chain ``.optional_(...)`` / ``.rest_(...)``)."""
        return MethodGuard(tuple(args))

    def interface(
        self, name: str, methods: Mapping[str, MethodGuard], *, sloppy: builtins.bool = False
    ) -> Interface:
        """An interface: ``name`` and its methods' guards."""
        return Interface(name, dict(methods), sloppy)


M = _M()
"""Pattern makers: ``M.string()``, ``M.int(min=0)``, ``M.list_of(p)``, ``M.struct({...})``,
``M.call(*args)``, ``M.interface(name, {method: M.call(...)})``."""


def guarded(iface: Interface) -> Callable[[T], T]:
    """Class decorator: each method ``iface`` lists checks its arguments before it runs.

    Methods of the class that ``iface`` does not list stop being callable
    by peers (unless the interface is ``sloppy``): a call to one fails with
    :class:`GuardError`.
    """

    def decorate(cls: T) -> T:
        for wire in iface.methods:
            attr = python_name(wire)
            method = getattr(cls, attr, None)
            if not callable(method):
                raise TypeError(f"{cls.__name__} has no method {attr!r} for {iface.name}")
            setattr(cls, attr, _checked(method, wire, iface))
        if not iface.sloppy:
            listed = {python_name(w) for w in iface.methods}
            for klass in cls.__mro__:  # inherited methods too
                if klass is object:
                    continue
                for name, value in list(vars(klass).items()):
                    if (
                        not name.startswith("_") and callable(value)
                        and not isinstance(value, type) and name not in listed
                    ):
                        setattr(cls, name, _unlisted(name, iface))
        cls._captp_interface_ = iface  # type: ignore[attr-defined]
        return cls

    return decorate


def _checked(method: Callable[..., Any], wire: str, iface: Interface) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_checked(self: Any, *args: Any) -> Any:
            iface.check(wire, args)
            return await method(self, *args)

        return async_checked

    @functools.wraps(method)
    def checked(self: Any, *args: Any) -> Any:
        iface.check(wire, args)
        return method(self, *args)

    return checked


def _unlisted(name: str, iface: Interface) -> Callable[..., Any]:
    def refuse(self: Any, *args: Any) -> Any:
        iface.check(name, args)  # raises: the method is not in the interface

    refuse.__name__ = name
    return refuse


def guard(target: Any, iface: Interface) -> FarFunction:
    """A far function that checks each call against ``iface``, then forwards it to ``target``."""

    def forward(*args: Any) -> Any:
        method: str | None = None
        if args and type(args[0]) is Symbol:
            method, args = args[0].name, args[1:]
        iface.check(method, args)
        proxy = E(target)
        return proxy[method](*args) if method is not None else proxy(*args)

    return FarFunction(forward, f"{interface_name(target)} (guarded as {iface.name})")
