"""The draft CBOR encoding of OCapN, a second wire codec beside :mod:`ocapn.syrup`.

It maps the same Python values as Syrup, one to one, onto the CBOR forms of
the draft (Endo's ``docs/cbor-encoding.md`` and ``@endo/ocapn/cbor``):

=====================  ==========================  ==============================
Python                 CBOR                        bytes
=====================  ==========================  ==============================
``bool``               false / true                ``f4`` / ``f5``
``int`` (any size)     tag 2 / 3 bignum, always    ``c2 40`` (0), ``c3 40`` (-1)
``float``              float64, always             ``fb`` + 8 bytes, NaN ``7ff8...``
``bytes``              byte string                 major 2
``str``                text string                 major 3
:class:`captp.Symbol`  tag 280 over its name       ``d9 0118`` + text
``list`` / ``tuple``   array                       major 4
``dict`` (str keys)    map, keys in order          major 5
:class:`captp.Record`  tag 27 over                 ``d8 1b`` + array
                       ``[label name, *fields]``
=====================  ==========================  ==============================

The record label travels as a plain text string (as Endo writes it) and must
be a :class:`~captp.Symbol` on the Python side; ``None`` and ``captp.null``
reach the wire as ``<void>`` / ``<null>`` records, as in Syrup.  Sets,
record labels that are not symbols and dictionaries with non-string keys
have no form in the draft and are refused.

:func:`encode` writes the one canonical form (shortest heads, definite
lengths, minimal bignums, float64 only, one NaN, map keys in increasing
order); :func:`decode` accepts only that form and raises
:class:`CBORDecodeError` (a :class:`captp.errors.DecodeError`) with the
offset of the first byte that breaks a rule.  Both take the
:class:`~ocapn.syrup.Limits` and the ``key_order`` options of the Syrup codec,
so :mod:`ocapn.wire` can use either module.  Decisions: ``spec-notes/0033``.
"""

from __future__ import annotations

from typing import Final

from ocapn import _native
from ocapn._cbor_codec import DecodeKeyOrder, KeyOrder, decode, encode
from ocapn._cbor_errors import CBORDecodeError, CBOREncodeError
from ocapn._syrup_types import DEFAULT_LIMITS, Limits
from ocapn.syrup import FrameDecoder, frame

__all__ = [
    "COMPILED",
    "DEFAULT_LIMITS",
    "ENCODING_CBOR",
    "ENCODING_SYRUP",
    "CBORDecodeError",
    "CBOREncodeError",
    "DecodeKeyOrder",
    "FrameDecoder",
    "KeyOrder",
    "Limits",
    "decode",
    "encode",
    "frame",
]

COMPILED: Final = _native.COMPILED
"""Whether this codec runs compiled (mypyc) in this process; see :mod:`ocapn._native`."""

ENCODING_SYRUP: Final = 0
"""Syrup's number in a netlayer's encoding negotiation (np's SYN field; ``netlayers.np.SYRUP``).

It is also np's default offer, under which Endo writes whichever codec it is
configured with, and we the session profile's encoding (spec-notes/0033)."""

ENCODING_CBOR: Final = 1
"""This encoding's number in a netlayer's encoding negotiation (spec-notes/0033)."""

