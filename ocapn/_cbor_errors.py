"""The errors of the CBOR codec (re-exported by :mod:`ocapn.cbor`).

They live apart from the codec so that :mod:`ocapn.cbor` can be compiled
(mypyc) as it is: compiled classes cannot derive from ``Exception``.
"""

from __future__ import annotations

from captp.errors import DecodeError, EncodeError

__all__ = ["CBORDecodeError", "CBOREncodeError", "HookFailed", "Truncated"]


class CBORDecodeError(DecodeError):
    """Bytes that are not canonical OCapN CBOR; ``offset`` is where the problem was found."""

    offset: int

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message, offset)


class CBOREncodeError(EncodeError):
    """A value that has no OCapN CBOR form (a set, a non-symbol label, a lone surrogate, ...)."""


class HookFailed(Exception):
    """Internal: carries an exception raised by ``record_hook`` out unchanged."""


class Truncated(Exception):
    """Internal: a head claims bytes past the end; args: offset of the head, length."""
