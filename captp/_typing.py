"""Type variables for typed remote calls (PEP 696 defaults: a bare ``Promise`` is ``Promise[Any]``).

``Promise[T]`` is a promise for a ``T``; ``RemoteRef[I]`` is a reference to a
far object whose interface, as its callers see it, is the protocol ``I``.
Also :func:`mypyc_attr`, the compiler's class options, for modules that
``python -m ocapn.compile`` compiles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from typing_extensions import TypeVar

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr
else:  # this module is never compiled: the fallback runs where mypy_extensions is absent
    try:
        from mypy_extensions import mypyc_attr
    except ImportError:  # a pure install: the decorator changes nothing

        def mypyc_attr(*args: object, **kwargs: object) -> Any:
            return lambda cls: cls


__all__ = ["I_co", "T_co", "mypyc_attr"]

T_co = TypeVar("T_co", covariant=True, default=Any)
"""What a promise is for."""

I_co = TypeVar("I_co", covariant=True, default=Any)
"""The interface of a far object, as a protocol whose methods return promises."""
