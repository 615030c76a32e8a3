"""Every failure the stack reports has a named type, all rooted at :class:`CapTPError`.

The tree keeps apart who is at fault (as h11's ``LocalProtocolError`` and
``RemoteProtocolError`` do)::

    CapTPError
    +-- ProtocolError        the peer broke the protocol: its session aborts
    |   +-- DecodeError      bytes that are not a valid encoding
    +-- UsageError           local code used the API wrongly (the peer is innocent)
    |   +-- EncodeError      a value cannot be written (PassStyleError: not passable)
    |   +-- WrongThread      an async object used from a thread not its event loop's
    +-- ConnectionLost       the session ended
    +-- BrokenPromise        a promise broken with a reason that is not an error
    +-- RemoteError          an error reported by the peer
"""

from __future__ import annotations

__all__ = [
    "BrokenPromise",
    "CapTPError",
    "ConnectionLost",
    "DecodeError",
    "EncodeError",
    "ProtocolError",
    "RemoteError",
    "UsageError",
    "WrongThread",
]


class CapTPError(Exception):
    """Base class of every error raised by this package."""


class ProtocolError(CapTPError):
    """The peer broke the protocol; the session that received it is aborted."""


class DecodeError(ProtocolError):
    """Bytes that are not a valid encoding; ``offset`` says where, when it is known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.message = message
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte {offset})")


class UsageError(CapTPError):
    """Local code used the API wrongly (nothing was sent; the peer is not at fault)."""


class WrongThread(UsageError, RuntimeError):
    """A reference or promise was used from a thread other than its event loop's.

    Sessions are not thread-safe; from another thread, go through
    :mod:`ocapn.sync` or an anyio blocking portal (``anyio.from_thread``).
    """


class EncodeError(UsageError, TypeError):
    """A value cannot be written in the chosen encoding; the message it was in is not sent."""


class BrokenPromise(CapTPError):
    """A promise was broken with a reason that is not itself an error.

    ``reason`` is the passable the promise was broken with, exactly as sent.
    """

    def __init__(self, reason: object) -> None:
        self.reason = reason
        super().__init__(f"promise broken: {reason!r}")


class RemoteError(CapTPError):
    """An error that came from a peer: its type name and message, never its traceback.

    ``str()`` reads like the peer's own report, e.g. ``"TypeError: boom"``.
    """

    def __init__(self, message: str, name: str | None = None) -> None:
        self.remote_message = message
        self.remote_name = name
        super().__init__(f"{name}: {message}" if name else message)

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str | None]]:
        return (RemoteError, (self.remote_message, self.remote_name))


class ConnectionLost(CapTPError):
    """The session ended (abort, disconnect, transport failure); ``reason`` says why.

    Every question and imported promise of the session breaks with this error,
    and every later send on the session fails with it at once.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"connection lost: {reason}")
