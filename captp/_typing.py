"""Type variables for typed remote calls (PEP 696 defaults: a bare ``Promise`` is ``Promise[Any]``).

``Promise[T]`` is a promise for a ``T``; ``RemoteRef[I]`` is a reference to a
far object whose interface, as its callers see it, is the protocol ``I``.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import TypeVar

__all__ = ["I_co", "T_co"]

T_co = TypeVar("T_co", covariant=True, default=Any)
"""What a promise is for."""

I_co = TypeVar("I_co", covariant=True, default=Any)
"""The interface of a far object, as a protocol whose methods return promises."""
