"""``harden``: a deep-frozen copy of passable data, for integrity (not a security boundary).

Python cannot freeze a list or a dict in place the way JavaScript's
``Object.freeze`` does, so :func:`harden` returns a *copy*: lists become
tuples, structs become :class:`FrozenDict` (a ``dict`` whose mutating
methods raise), and records and tagged values are rebuilt around frozen
parts.  Far objects, promises and errors pass unchanged (they are references
or reports, not data).  A hardened value is still passable and travels as
the same value.

It guards against accidents and casual tampering.  It is not a boundary:
``dict.__setitem__(h, k, v)``, ``gc.get_referents`` and ``ctypes`` still
change it.  The boundary is a :class:`~captp.confine.Compartment`'s process.
"""

from __future__ import annotations

from typing import Any, NoReturn

from captp import _passable
from captp._passable import Record, Tagged, check_passable

__all__ = ["FrozenDict", "harden", "is_hardened"]


class FrozenDict(dict[str, Any]):
    """A struct that refuses ordinary mutation (``h[k] = v``, ``update``, ``pop``, ...)."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a hardened struct cannot be changed")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


# A hardened struct is a struct: register it with the passable model (the
# Syrup encoder already writes any dict subclass as a dictionary).
_passable._STYLE_BY_TYPE[FrozenDict] = "struct"


def _freeze(value: Any) -> Any:
    t = type(value)
    if t is list or t is tuple:
        return tuple(_freeze(v) for v in value)
    if t is dict or t is FrozenDict:
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if t is Record:
        return Record(_freeze(value.label), tuple(_freeze(v) for v in value.fields))
    if t is Tagged:
        return Tagged(value.tag, _freeze(value.payload))
    return value  # scalars are immutable; references and errors pass unchanged


def harden(value: Any) -> Any:
    """Check that ``value`` is passable (deeply) and return a deep-frozen copy of its data.

    Raises :class:`~captp.PassStyleError` naming the first part that is not passable.
    """
    check_passable(value)
    return _freeze(value)


def is_hardened(value: Any) -> bool:
    """True if no copy container in ``value`` can be changed by ordinary means."""
    t = type(value)
    if t is list or t is dict:
        return False
    if t is tuple:
        return all(is_hardened(v) for v in value)
    if t is FrozenDict:
        return all(is_hardened(v) for v in value.values())
    if t is Record:
        return all(is_hardened(v) for v in value.fields)
    if t is Tagged:
        return is_hardened(value.payload)
    return True
