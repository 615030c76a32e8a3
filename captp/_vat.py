"""The vat: where local objects run, one turn at a time.

Eventual sends never run the callee in the caller's turn.  A vat gives the
engine a place to run them *soon* (a new turn on the event loop) and a task
group to own the tasks of ``async`` methods, so closing the vat cancels every
call it started.  Code running in a vat's turns finds it with
:func:`current_vat`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

import anyio
import anyio.abc

from captp.errors import CapTPError

__all__ = [
    "ManualVat", "Scheduler", "Timer", "Vat", "current_vat", "open_vat", "running_loop",
]

log = logging.getLogger("captp")

_current_vat: contextvars.ContextVar[Scheduler | None] = contextvars.ContextVar(
    "captp_current_vat", default=None
)


class Timer(Protocol):
    """A delayed turn that has not run yet (:meth:`Scheduler.call_later`)."""

    def cancel(self) -> None:
        """Do not run it (nothing happens if it ran already)."""


class Scheduler(Protocol):
    """What the engine needs from a vat: run a function soon, start an async call."""

    def call_soon(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` in a later turn."""

    def spawn(self, fn: Callable[..., Awaitable[object]], /, *args: Any) -> None:
        """Run ``await fn(*args)`` in a task the vat owns."""

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> Timer:
        """Run ``fn(*args)`` in a turn about ``delay`` seconds from now."""

    def run_now(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` now, as a turn of this vat (the caller's own turn is over)."""


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio event loop, or None (under trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def current_vat() -> Scheduler:
    """The vat whose turn is running; :class:`CapTPError` if there is none."""
    vat = _current_vat.get()
    if vat is None:
        raise CapTPError(
            "no vat is running here: eventual sends to local objects need one "
            "(use `async with captp.open_vat():`, or run inside a connection or node)"
        )
    return vat


def _run_turn(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:  # a turn must never take the event loop down
        log.exception("uncaught error in a vat turn")


class Vat:
    """Runs turns on the current event loop and owns the tasks of async methods."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        self._closed = False
        self.thread = threading.get_ident()  # the event loop's: sessions check their callers
        token = _current_vat.set(self)
        try:
            self._context = contextvars.copy_context()
        finally:
            _current_vat.reset(token)
        self._loop = running_loop()
        if self._loop is None:  # trio: no call_soon; use the run-soon queue of the trio token
            import trio

            self._trio_token: Any = trio.lowlevel.current_trio_token()

    def _inside(self) -> bool:
        # In one of this vat's turns or tasks (perhaps as a session's view of
        # it, see captp._connection.SessionCalls): the context is already ours.
        current = _current_vat.get()
        return current is self or getattr(current, "vat", None) is self

    def call_soon(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` in a later turn of this vat."""
        if self._closed:
            return
        if self._loop is not None:
            self._loop.call_soon(_run_turn, fn, args, context=self._context)
        else:
            self._trio_token.run_sync_soon(self._context.run, _run_turn, fn, args)

    def run_now(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` now, as a turn of this vat (in its context)."""
        if self._closed:
            return
        if self._inside():
            _run_turn(fn, args)
        else:
            self._context.run(_run_turn, fn, args)

    def spawn(self, fn: Callable[..., Awaitable[object]], /, *args: Any) -> None:
        """Run ``await fn(*args)`` in a task of this vat's task group."""
        if self._closed:
            return
        if self._inside():
            # Already in one of this vat's turns (which run inside
            # self._context, so it cannot be entered again): the new task
            # copies the current context, which names this vat.
            self._task_group.start_soon(fn, *args)  # type: ignore[arg-type]
        else:
            self._context.run(self._task_group.start_soon, fn, *args)  # type: ignore[arg-type]

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> Timer:
        """Run ``fn(*args)`` in a turn about ``delay`` seconds from now.

        Cancel the timer it returns when the turn is no longer wanted: until
        it runs it holds ``fn`` and ``args`` (a connection's timers are
        cancelled when it ends, so what they hold goes with it).
        """
        if self._closed:
            return _NO_TIMER
        if self._loop is not None:
            return self._loop.call_later(delay, _run_turn, fn, args, context=self._context)
        scope = anyio.CancelScope()
        self.spawn(self._later, scope, delay, fn, args)
        return scope

    async def _later(
        self, scope: anyio.CancelScope, delay: float, fn: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        with scope:
            await anyio.sleep(delay)
            _run_turn(fn, args)

    def close(self) -> None:
        """Stop accepting turns and cancel every task this vat owns."""
        self._closed = True
        self._task_group.cancel_scope.cancel()
        # The context names this vat (a cycle); no turn enters it any more.
        self._context = contextvars.Context()


class _NoTimer:
    """The timer of a turn that will never run (the vat is closed)."""

    def cancel(self) -> None:
        """Nothing to cancel."""


_NO_TIMER: Final = _NoTimer()


class _ManualTimer:
    __slots__ = ("_entry", "_later")

    def __init__(
        self, later: list[tuple[Callable[..., object], tuple[Any, ...]]],
        entry: tuple[Callable[..., object], tuple[Any, ...]],
    ) -> None:
        self._later = later
        self._entry = entry

    def cancel(self) -> None:
        """Take the turn out of the queue, if it is still there."""
        for i, queued in enumerate(self._later):
            if queued is self._entry:
                del self._later[i]
                return


@asynccontextmanager
async def open_vat() -> AsyncIterator[Vat]:
    """Open a vat for the body of the ``async with``; leaving it cancels its tasks."""
    async with anyio.create_task_group() as tg:
        vat = Vat(tg)
        token = _current_vat.set(vat)
        try:
            yield vat
        finally:
            _current_vat.reset(token)
            vat.close()


class ManualVat:
    """A vat for tests without an event loop: turns run when :meth:`run` is called."""

    def __init__(self) -> None:
        self.turns: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self.later: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._token: contextvars.Token[Scheduler | None] | None = None

    def call_soon(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Queue ``fn(*args)``."""
        self.turns.append((fn, args))

    def run_now(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` now, with this vat current."""
        token = _current_vat.set(self)
        try:
            fn(*args)
        finally:
            _current_vat.reset(token)

    def spawn(self, fn: Callable[..., Awaitable[object]], /, *args: Any) -> None:
        """Not available without an event loop."""
        raise CapTPError("ManualVat cannot run async methods; use open_vat() under an event loop")

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> Timer:
        """Queue ``fn(*args)`` to run once the turns queued now are done (time is not real)."""
        entry = (fn, args)
        self.later.append(entry)
        return _ManualTimer(self.later, entry)

    def run(self, limit: int = 1_000_000) -> int:
        """Run queued turns, and the turns they queue, until none are left; return the count.

        Delayed turns run as soon as no undelayed turn is left.
        """
        token = _current_vat.set(self)
        n = 0
        try:
            while self.turns or self.later:
                if not self.turns:
                    self.turns.extend(self.later)
                    self.later.clear()
                if n >= limit:
                    raise RuntimeError(f"more than {limit} turns: runaway loop?")
                fn, args = self.turns.popleft()
                fn(*args)
                n += 1
        finally:
            _current_vat.reset(token)
        return n

    def __enter__(self) -> ManualVat:
        self._token = _current_vat.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current_vat.reset(self._token)
            self._token = None
