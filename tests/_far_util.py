"""Far objects shared by the engine and node tests."""

from __future__ import annotations

from captp import far


@far
class Counter:
    """``incr()`` adds one and returns the new count."""

    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n
