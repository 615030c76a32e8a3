"""Far interfaces as callers see them: protocols whose methods return promises."""

from typing import Protocol

from captp import Promise, RemoteRef


class Counter(Protocol):
    def incr(self) -> Promise[int]: ...


class Store(Protocol):
    def get(self, key: str) -> Promise[str]: ...

    def put(self, key: str, value: str) -> Promise[None]: ...

    def keys(self) -> Promise[list[str]]: ...

    def counter(self, start: int) -> Promise[RemoteRef[Counter]]: ...
