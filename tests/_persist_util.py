"""Persistent objects shared by the persistence tests and their child process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
