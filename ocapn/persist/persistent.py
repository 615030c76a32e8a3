"""Persistent objects: a restorer name plus passable state, rebuilt after a restart.

::

    @far
    @dataclass
    class Counter(Persistent, restorer="counter"):
        n: int = 0

        def incr(self) -> int:
            self.n += 1
            self._save()              # committed before the answer goes out
            return self.n

    Node(tcp_testing_only(), state="var/node", restorers=[Counter])

The contract of :class:`Persistent`:

* ``restorer="name"`` (a class keyword) is the name the object is stored
  under; it must be stable across releases, as class names need not be.
  Each class that is stored names its own restorer.
* ``__persist_state__()`` returns the object's state as passable data (what
  Syrup encodes: numbers, strings, bytes, lists, dicts, records...), which
  may hold other persistent objects (stored with it, restored before it;
  no cycles).  The default is the public instance attributes (``vars``
  without ``_names``).
* ``__persist_restore__(state)`` (a classmethod) builds the object from that
  state.  The default is ``cls(**state)``: a dataclass whose fields are its
  state needs neither.
* ``version=N`` (a class keyword, default 0) is the version of the state's
  format; objects stored at an older version are brought forward by
  ``__persist_upgrade__(version, state)``, one step at a time, before
  ``__persist_restore__``.  A state stored by a newer version is refused.
* ``self._save()`` writes the current state in one transaction and returns
  once it is committed (nothing is written when the state's bytes are those
  last written).  An object that is not persisted (never published on a
  node with a state directory) ignores it.
* ``autosave=True`` (a class keyword, inherited) calls ``self._save()``
  after every public method defined in the class (or its subclasses)
  returns, or after its coroutine does: the answer a peer sees follows the
  commit.  A method that raises saves nothing (its changes to memory, if
  any, are written by the next save).  Reads cost one encode of the state,
  no write.

These are underscore names on purpose: a far object's public methods are
callable by every peer that holds it, and a peer must not be able to read
the state or force a save.

Restorers are registered with the node: a list of :class:`Persistent`
classes, or a mapping from restorer name to any callable ``state -> object``
(for instance to keep restoring objects stored under an old name).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol, Self, TypeAlias

__all__ = ["Persistent", "Restorer", "Restorers", "restorer_name", "restorer_table"]

Restorer: TypeAlias = "Callable[[Any], Any] | type[Persistent]"
"""Builds an object from the state it was saved with: a function, or a Persistent class."""

Restorers: TypeAlias = Iterable["type[Persistent]"] | Mapping[str, Restorer]
"""What a node is given: Persistent classes, or restorer names mapped to restorers."""


class Binding(Protocol):
    """What ties a live persistent object to its stored row (the node's state makes it)."""

    object_id: int
    last: bytes | None

    @property
    def node_state(self) -> object:
        """The state the row belongs to."""

    def save(self, obj: Persistent) -> None:
        """Commit ``obj``'s current state."""


class Persistent:
    """Base class of objects that survive restarts of a node with a state directory."""

    _ocapn_restorer: ClassVar[str | None] = None
    _ocapn_version: ClassVar[int] = 0
    _ocapn_autosave: ClassVar[bool] = False
    _ocapn_binding: Binding | None = None

    def __init_subclass__(
        cls,
        *,
        restorer: str | None = None,
        version: int = 0,
        autosave: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if restorer is not None and (type(restorer) is not str or not restorer):
            raise TypeError(f"a restorer name is a non-empty string, not {restorer!r}")
        if type(version) is not int or version < 0:
            raise TypeError(f"a state version is an int >= 0, not {version!r}")
        # Set on every subclass, so a subclass never passes for its base when stored.
        cls._ocapn_restorer = restorer
        cls._ocapn_version = version
        if autosave is not None:
            cls._ocapn_autosave = bool(autosave)
        if cls._ocapn_autosave:  # inherited: a subclass's new methods save too
            for name, value in list(vars(cls).items()):
                if not name.startswith("_") and inspect.isfunction(value):
                    setattr(cls, name, _saving(value))

    def __persist_state__(self) -> Any:
        """The object's state as passable data (default: its public instance attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @classmethod
    def __persist_restore__(cls, state: Any) -> Self:
        """The object rebuilt from ``state`` (default: ``cls(**state)``)."""
        if type(state) is not dict:
            raise TypeError(
                f"{cls.__name__}'s default restore takes a dict state; "
                "override __persist_restore__ for other shapes"
            )
        return cls(**state)

    @classmethod
    def __persist_upgrade__(cls, version: int, state: Any) -> Any:
        """``state`` as stored at ``version``, brought to ``version + 1``.

        Called once per step, from the stored version up to the class's
        ``version``, before :meth:`__persist_restore__`.  Override it when
        you raise the class's ``version``.
        """
        raise TypeError(f"{cls.__name__} has no upgrade from state version {version}")

    def _save(self) -> None:
        """Commit the current state (no-op unless the object is persisted, or unchanged)."""
        binding = self._ocapn_binding
        if binding is not None:
            binding.save(self)


def _saving(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, then ``self._save()`` once it has returned (or its coroutine has)."""
    if getattr(method, "_ocapn_saving", False):
        return method
    wrapper: Any
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def wrapper(self: Persistent, *args: Any, **kwargs: Any) -> Any:
            result = await method(self, *args, **kwargs)
            self._save()
            return result

    else:

        @functools.wraps(method)
        def wrapper(self: Persistent, *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            self._save()
            return result

    wrapper._ocapn_saving = True
    return wrapper  # type: ignore[no-any-return]


def restorer_name(obj: object) -> str | None:
    """The restorer name ``obj`` is stored under, or None if it is not persistable."""
    if not isinstance(obj, Persistent):
        return None
    return type(obj)._ocapn_restorer


def restorer_table(restorers: Restorers | None) -> dict[str, Restorer]:
    """Restorer names mapped to restorers, from what a node was given."""
    if restorers is None:
        return {}
    if isinstance(restorers, Mapping):
        table = dict(restorers)
        for name, fn in table.items():
            if type(name) is not str or not callable(fn):
                raise TypeError(f"restorers map names to callables, not {name!r}: {fn!r}")
        return table  # a class here restores (and upgrades) as it would under its own name
    table = {}
    for cls in restorers:
        if not (isinstance(cls, type) and issubclass(cls, Persistent)):
            raise TypeError(f"restorers are Persistent classes, not {cls!r}")
        name = cls._ocapn_restorer
        if name is None:
            raise TypeError(f"{cls.__name__} names no restorer: class {cls.__name__}"
                            "(Persistent, restorer='...')")
        if name in table:
            raise ValueError(f"two classes restore {name!r}")
        table[name] = cls
    return table
