"""Far objects: local objects that pass by reference and answer remote calls.

Mark a class with :func:`far` and its instances are sent as references; a peer
can then call their public methods (no leading underscore), plain or
``async``.  A function marked with :func:`far` is a far function: a peer
calls it directly (``E(fn)(...)``).

Wire method names are mapped to Python names by one rule, used in both
directions: ``-`` becomes ``_`` (OCapN names such as ``make-car-factory``),
and a name that is a Python keyword gets a trailing ``_`` (``break`` is
``break_``).  Any other wire name can be sent with ``E(x)["any name"](...)``.
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

from captp._passable import Symbol

__all__ = ["FarFunction", "bound_method", "far", "interface_name", "python_name", "wire_name"]

T = TypeVar("T", bound=type)

_FAR_ATTR: Final = "_captp_far_"


class FarFunction:
    """A function that passes by reference; peers call it with ``E(fn)(...)``."""

    _captp_far_: Final = "Function"
    __slots__ = ("__weakref__", "fn", "name")

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return f"<far function {self.name}>"


@overload
def far(target: T, /, *, name: str | None = None) -> T: ...  # type: ignore[overload-overlap]
@overload
def far(target: Callable[..., Any], /, *, name: str | None = None) -> FarFunction: ...
@overload
def far(*, name: str | None = None) -> Callable[[Any], Any]: ...


def far(target: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a class (its instances pass by reference) or wrap a function as a far function.

    ``name`` is the interface name peers see (default: the class or function name).
    """
    if target is None:
        return lambda t: far(t, name=name)
    if isinstance(target, type):
        setattr(target, _FAR_ATTR, name or target.__name__)
        return target
    if callable(target):
        return FarFunction(target, name)
    raise TypeError(f"far() takes a class or a function, not {type(target).__name__}")


def interface_name(obj: object) -> str:
    """The interface name of a far object (``"Counter"``), for peers that show one."""
    if isinstance(obj, FarFunction):
        return str(obj.name)
    iface = getattr(obj, "iface", None)  # imported references remember the peer's name
    if isinstance(iface, str):
        return iface
    name = getattr(type(obj), _FAR_ATTR, None)
    return name if isinstance(name, str) else type(obj).__name__


def python_name(wire: str) -> str:
    """The Python attribute a wire method name calls: ``make-car`` -> ``make_car``."""
    name = wire.replace("-", "_")
    return name + "_" if keyword.iskeyword(name) else name


def wire_name(attr: str) -> str:
    """The wire method name for a Python attribute: ``break_`` -> ``break``."""
    if attr.endswith("_") and keyword.iskeyword(attr[:-1]):
        return attr[:-1]
    return attr


_method_cache: dict[tuple[type, str], str | None] = {}


def _class_attrs(cls: type) -> dict[str, Any]:
    """Public attributes defined by ``cls`` and its bases (not ``object``, not the metaclass)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_"):
                found[name] = value
    return found


def _find_method(cls: type, wire: str) -> str | None:
    key = (cls, wire)
    try:
        return _method_cache[key]
    except KeyError:
        pass
    attrs = _class_attrs(cls)
    found: str | None = None
    for candidate in (wire, python_name(wire)):
        if (
            candidate in attrs
            and callable(getattr(cls, candidate, None))
            and not isinstance(attrs[candidate], type)
        ):
            found = candidate
            break
    if len(_method_cache) < 100_000:  # wire names come from peers: keep the cache bounded
        _method_cache[key] = found
    return found


def public_methods(cls: type) -> list[str]:
    """Wire names of the methods a peer may call on instances of ``cls``."""
    return sorted(
        wire_name(n)
        for n, v in _class_attrs(cls).items()
        if callable(getattr(cls, n, None)) and not isinstance(v, type)
    )


def bound_method(target: Any, method: str | None) -> Callable[..., Any]:
    """What a call of ``method`` on a local far object runs (``None``: apply a far function).

    Raises :class:`TypeError` when the target has no such public method or is
    not callable.  A far function called with a method name gets the name as
    a leading :class:`Symbol` argument, as OCapN defines.
    """
    if type(target) is FarFunction:
        if method is None:
            return target.fn
        return functools.partial(target.fn, Symbol(method))
    if method is None:
        if callable(target) and not isinstance(target, type):
            function: Callable[..., Any] = target
            return function
        raise TypeError(f"{interface_name(target)} is not a function; call one of its methods")
    attr = _find_method(type(target), method)
    if attr is None:
        raise TypeError(
            f"{interface_name(target)} has no method {method!r}; "
            f"it has {public_methods(type(target))}"
        )
    # (not cast(): a call, and cast(Callable[..., Any], x) builds the type on every call)
    bound: Callable[..., Any] = getattr(target, attr)
    return bound
