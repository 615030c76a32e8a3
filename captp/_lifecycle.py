"""Hearing that a reference broke: :func:`when_broken`."""

from __future__ import annotations

from collections.abc import Callable

from captp._promise import Promise, reason_to_exception
from captp._refs import RemoteRef

__all__ = ["when_broken"]


def when_broken(
    target: RemoteRef | Promise, callback: Callable[[BaseException], None]
) -> Callable[[], None]:
    """Call ``callback(error)`` once, when ``target`` breaks; returns a function that cancels.

    A remote reference breaks when its session ends (the peer went away, the
    network failed, either side aborted): ``error`` is the
    :class:`~captp.ConnectionLost` saying why.  A promise breaks when it is
    broken (``error`` is what awaiting it raises) or, once it is fulfilled
    with a remote reference, when that reference breaks.  A local object
    never breaks.  The callback runs in a turn of the session's vat.
    """
    cancelled = False
    cancel_inner: list[Callable[[], None]] = []

    def cancel() -> None:
        nonlocal cancelled
        cancelled = True
        for undo in cancel_inner:
            undo()

    def fire(error: BaseException) -> None:
        if not cancelled:
            callback(error)

    def watch(value: object) -> None:
        if type(value) is RemoteRef:
            cancel_inner.append(value.engine.when_lost(fire))
        elif isinstance(value, Promise):
            value.when_settled(settled)

    def settled(promise: Promise) -> None:
        if promise.is_broken():
            fire(reason_to_exception(promise.reason()))  # reason(): it has been looked at
        else:
            watch(promise.result())

    watch(target)
    return cancel
