"""Persistent objects shared by the persistence tests and their child process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from captp import far
from ocapn.persist import Persistent


@far
@dataclass
class PCounter(Persistent, restorer="test-counter"):
    """A counter whose every increment is committed before it answers."""

    n: int = 0

    def incr(self) -> int:
        self.n += 1
        self._save()
        return self.n

    def value(self) -> int:
        return self.n


@far
@dataclass
class PLog(Persistent, restorer="test-log"):
    """Keeps a list of entries; state that grows."""

    entries: list[Any] = field(default_factory=list)

    def add(self, entry: Any) -> int:
        self.entries.append(entry)
        self._save()
        return len(self.entries)

    def all(self) -> list[Any]:
        return list(self.entries)


@far
class Boom(Persistent, restorer="test-boom"):
    """Restoring it raises."""

    def __init__(self, armed: bool = False) -> None:
        self.armed = armed

    @classmethod
    def __persist_restore__(cls, state: Any) -> Boom:
        raise RuntimeError("the restorer is broken")


@far
class PDir(Persistent, restorer="test-dir"):
    """Holds other persistent objects by name: an object graph in the store."""

    def __init__(self, entries: dict[str, Any] | None = None) -> None:
        self.entries: dict[str, Any] = entries if entries is not None else {}

    def make(self, name: str) -> PCounter:
        counter = PCounter()
        self.entries[name] = counter
        self._save()
        return counter

    def put(self, name: str, obj: Any) -> None:
        self.entries[name] = obj
        self._save()

    def get(self, name: str) -> Any:
        return self.entries[name]

    def drop(self, name: str) -> None:
        del self.entries[name]
        self._save()

    def names(self) -> list[str]:
        return sorted(self.entries)


@far
@dataclass
class ACounter(Persistent, restorer="test-autosave", autosave=True):
    """Saved after every public method: no explicit _save()."""

    n: int = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    async def add_later(self, k: int) -> int:
        await anyio.sleep(0)
        self.n += k
        return self.n

    def fail(self) -> None:
        self.n += 1000
        raise ValueError("refused")

    def value(self) -> int:
        return self.n


@far
class ACounter2(ACounter, restorer="test-autosave-2"):
    """Inherits autosave: its own methods save too."""

    def double(self) -> int:
        self.n *= 2
        return self.n
