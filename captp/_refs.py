"""References to objects that live on a peer."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Final, Generic, Protocol

from captp._typing import I_co

__all__ = ["RefEngine", "RemoteRef"]


class RefEngine(Protocol):
    """What a reference needs of the engine it travels over (a :class:`captp.Engine`)."""

    name: str

    def send_deliver(
        self, target: Any, method: str | None, args: tuple[Any, ...], want_result: bool = True
    ) -> Any:
        """Send ``method(*args)`` to ``target``: a promise for the result, or None."""

    def send_get(self, target: Any, kind: str, key: Any) -> Any:
        """Ask for a part of ``target``'s value: a promise."""

    def when_lost(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback(error)`` once when the session ends; a function that cancels."""


class RemoteRef(Generic[I_co]):
    """A reference to an object a peer exported to us (a *presence*).

    It has no methods of its own: use ``E(ref).method(...)``.  The same import
    always gives the same ``RemoteRef`` while anything holds it, so ``is``
    works across round trips.  When the last holder lets go, the session tells
    the peer (distributed GC).
    """

    _captp_far_: Final = "RemoteRef"
    __slots__ = ("__weakref__", "_position", "_session", "iface")

    def __init__(self, session: RefEngine, position: Hashable, iface: str | None = None) -> None:
        self._session = session
        self._position = position
        self.iface = iface

    @property
    def engine(self) -> RefEngine:
        """The engine (the CapTP session) this reference travels over."""
        return self._session

    @property
    def position(self) -> Hashable:
        """The peer's export position (for diagnostics)."""
        return self._position

    def __repr__(self) -> str:
        name = f" {self.iface}" if self.iface else ""
        return f"<RemoteRef{name} at {self._position!r} on {self._session.name}>"

    def __reduce__(self) -> Any:
        raise TypeError("a RemoteRef cannot be pickled; send it over CapTP instead")
