"""Syrup, the canonical binary encoding OCapN messages travel in.

=====================  ==========================  ==============================
Syrup                  bytes                       Python
=====================  ==========================  ==============================
boolean                ``t`` / ``f``               ``bool``
integer                ``72+`` / ``5-``            ``int`` (any size)
float64                ``D`` + 8 bytes             ``float``
float32                ``F`` + 4 bytes             :class:`Float32`
bytestring             ``3:cat``                   ``bytes`` (also bytearray, memoryview
                                                   when encoding)
string                 ``6"björn``                 ``str``
symbol                 ``5'fetch``                 :class:`captp.Symbol`
list                   ``[...]``                   ``list`` (also tuple when encoding)
dictionary             ``{k v ...}``               ``dict``
record                 ``<label field ...>``       :class:`captp.Record`
set                    ``#...$``                   ``frozenset`` (also set when encoding)
=====================  ==========================  ==============================

:func:`encode` writes the canonical form (sorted dictionaries and sets,
minimal integers, one NaN), and :class:`Encoder` does the same with its
options fixed once; :func:`decode` (and :class:`Decoder`, its options
fixed once) accepts only that form unless asked to be lenient.  Both take a
``key_order`` for peers that sort string keys as JavaScript does (Endo).
:class:`StreamDecoder` reads back-to-back values from a stream; :func:`frame`
and :class:`FrameDecoder` implement the ``len:payload`` framing of stream
netlayers.  Decisions the spec leaves open are recorded in
``spec-notes/0003-syrup-codec.md``.

The codec's modules may run compiled (``python -m ocapn.compile``, mypyc);
:data:`COMPILED` says whether they do in this process.
"""

from typing import Final

from ocapn import _native
from ocapn._syrup_decode import DecodeKeyOrder, Decoder, decode
from ocapn._syrup_encode import Encoder, KeyOrder, encode
from ocapn._syrup_stream import FrameDecoder, StreamDecoder, frame
from ocapn._syrup_types import (
    DEFAULT_LIMITS,
    Float32,
    Limits,
    SyrupDecodeError,
    SyrupEncodeError,
)

__all__ = [
    "COMPILED",
    "DEFAULT_LIMITS",
    "DecodeKeyOrder",
    "Decoder",
    "Encoder",
    "Float32",
    "FrameDecoder",
    "KeyOrder",
    "Limits",
    "StreamDecoder",
    "SyrupDecodeError",
    "SyrupEncodeError",
    "decode",
    "encode",
    "frame",
]

COMPILED: Final = _native.COMPILED
"""Whether the Syrup and CBOR codecs run compiled (mypyc) in this process (``OCAPN_PURE=1``
selects pure Python; ``python -m ocapn.compile status`` says why)."""
