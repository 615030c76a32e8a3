"""Value types, limits and errors of the Syrup codec (re-exported by :mod:`ocapn.syrup`)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Final, SupportsFloat, SupportsIndex

from captp.errors import DecodeError, EncodeError

__all__ = [
    "DEFAULT_LIMITS",
    "Float32",
    "Limits",
    "SyrupDecodeError",
    "SyrupEncodeError",
]

_F32: Final = struct.Struct(">f")


class Float32(float):
    """A Syrup single-precision float (``F``): a ``float`` that re-encodes as ``F``.

    The value is rounded to the nearest IEEE-754 binary32 number when the object
    is made (overflow gives an infinity, as a C cast does), so it always
    encodes exactly.  Arithmetic on it gives a plain ``float``.
    OCapN itself has no single floats; this exists so that any Syrup input
    round-trips byte for byte.
    """

    __slots__ = ()

    def __new__(cls, value: SupportsFloat | SupportsIndex | str | bytes = 0.0) -> Float32:
        x = float(value)
        try:
            rounded = _F32.unpack(_F32.pack(x))[0]
        except OverflowError:  # finite, but beyond the largest binary32: rounds to infinity
            rounded = math.copysign(math.inf, x)
        return super().__new__(cls, rounded)

    def __repr__(self) -> str:
        return f"Float32({float.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds the decoder enforces on untrusted input.

    ``max_depth``: how deeply lists, dictionaries, records and sets may nest
    (the outermost container is depth 1).  ``max_size``: the most input bytes
    one value may occupy (for :func:`decode`, the whole input).  It is also
    the memory bound: decoded Python objects take at most about 40 times the
    input size (empty dictionaries, the worst case, measure 36x; strings 15x).
    ``max_int_digits``: the most decimal digits an integer or a length prefix
    may have; converting digits to an ``int`` costs time quadratic in their
    number, so this bounds the CPU a hostile peer can make us spend.
    """

    max_depth: int = 128
    max_size: int = 64 * 1024 * 1024
    max_int_digits: int = 4300

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_size", "max_int_digits"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")


DEFAULT_LIMITS: Final = Limits()
"""The limits :func:`ocapn.syrup.decode` uses unless told otherwise."""


class SyrupDecodeError(DecodeError):
    """Bytes that are not valid Syrup; ``offset`` is the byte where the problem was found."""

    offset: int

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message, offset)


class SyrupEncodeError(EncodeError):
    """A value that cannot be written as Syrup (an unsupported type, a lone surrogate, ...)."""


# The parser's internal signals.  They live here, not in the parser's module,
# so that the parser's interpreted twin (which reads memoryviews, see
# ``ocapn._syrup_decode``) raises the very classes its callers catch.


class Truncated(Exception):
    """Internal: a length prefix claims bytes past the end of the buffer.

    Arguments: the prefix's offset, a message, and the claimed length.
    """


class TooDeep(Exception):
    """Internal: the Python stack ran out while nesting; carries the offset."""


class HookFailed(Exception):
    """Internal: carries an exception raised by ``record_hook`` out unchanged."""
