"""Watching objects get freed, compiled or not (spec-notes/0040).

A weak reference sees an object freed; but a compiled (mypyc) engine or wire is
a native object that takes none.  Those are watched by their ids among the
objects the cycle collector tracks (every native object is tracked).
"""

from __future__ import annotations

import gc
import weakref
from typing import Any


class Freed:
    """Objects being watched until they are freed."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Any]] = []
        self.ids: dict[int, type] = {}

    def watch(self, *objects: object) -> None:
        """Watch each of ``objects`` (without keeping it alive)."""
        for x in objects:
            if type(x).__weakrefoffset__:
                self.refs.append(weakref.ref(x))
            else:
                assert gc.is_tracked(x), x  # or all_freed could not see it
                self.ids[id(x)] = type(x)

    def all_freed(self) -> bool:
        """Whether every watched object has been freed.

        An id is reused once its object is freed: ask before making more objects
        of the watched types (a new one could take a freed one's id).
        """
        return not self.alive()

    def alive(self) -> list[object]:
        """The watched objects still alive (to say what was not freed)."""
        alive = [x for r in self.refs if (x := r()) is not None]
        if alive or not self.ids:
            return alive
        return [x for x in gc.get_objects() if self.ids.get(id(x)) is type(x)]
