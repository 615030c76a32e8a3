"""Syrup encoder: Python values to canonical Syrup bytes.

The encoder appends byte pieces to one list and joins them once.  Types are
tested by identity (``type(v) is int``) in order of how often they occur in
CapTP traffic; subclasses and foreign types take a slower path.  Encoded
symbols, string dictionary keys and small integers are cached.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final, Literal

from captp._passable import Record, Symbol
from ocapn._syrup_types import Float32, SyrupEncodeError

__all__ = ["Encoder", "KeyOrder", "encode"]

Default = Callable[[object], object] | None
KeyOrder = Literal["syrup", "js"]

# Per width: marker, packer, the canonical NaN, +0.0.
_FLOAT64: Final = (b"D", struct.Struct(">d").pack, b"D\x7f\xf8" + bytes(6), b"D" + bytes(8))
_FLOAT32: Final = (b"F", struct.Struct(">f").pack, b"F\x7f\xc0" + bytes(2), b"F" + bytes(4))

# Integers 0..1023 cover positions, counts and most small numbers in messages.
_SMALL_INT_LIMIT: Final = 1024
_SMALL_INTS: Final = tuple(b"%d+" % i for i in range(_SMALL_INT_LIMIT))

# Encoded symbols by name, and encoded string dictionary keys (struct field
# names repeat).  Bounded so that a peer that makes us echo many (or huge)
# names costs time, not memory: only short names are kept, and a cache is
# emptied when full.
_CACHE_MAX: Final = 4096
_CACHE_NAME_LENGTH: Final = 64
_symbol_cache: Final[dict[str, bytes]] = {}
_key_cache: Final[dict[str, bytes]] = {}

# CPython refuses to format ints above this many digits with %d / str()
# (sys.int_info.str_digits_check_threshold is 640; the default limit is 4300).
_SAFE_DIGITS: Final = 4000
_SAFE_BITS: Final = int(_SAFE_DIGITS * 3.32)  # fewer bits than this => fewer than 4000 digits

# How deeply values may nest (containers, and default() handing back another
# object to encode).  Pure Python hits its recursion limit first (about 490
# levels); compiled code has no such limit and would overflow the C stack.
MAX_NESTING: Final = 1000
_TOO_DEEP: Final = "value nests too deeply to encode (or contains itself)"

_key0: Final = itemgetter(0)


def encode(
    value: object,
    *,
    default: Default = None,
    key_order: KeyOrder = "syrup",
    negative_zero: bool = True,
) -> bytes:
    """Encode ``value`` as canonical Syrup bytes.

    ``default`` is called with any object that is not a Syrup value; what it
    returns is encoded in its place.  ``key_order="js"`` sorts dictionaries
    whose keys are all strings as JavaScript sorts strings (by UTF-16 code
    units), the order Endo's ``@endo/ocapn`` requires of structs; other
    dictionaries and sets keep Syrup's order.  ``negative_zero=False`` writes
    ``-0.0`` as ``0.0``, for readers that refuse it (Endo).  Raises
    :class:`SyrupEncodeError` for a value that cannot be encoded.
    """
    if default is None and key_order == "syrup" and negative_zero:
        opts = _PLAIN
    else:
        opts = _options(default, key_order, negative_zero)
    out: list[bytes] = []
    try:
        _enc(value, out, opts, 0)
    except RecursionError:
        raise SyrupEncodeError(_TOO_DEEP) from None
    return b"".join(out)


class Encoder:
    """:func:`encode` with its options fixed once: for a caller that encodes many values alike.

    ``Encoder(default=..., key_order=..., negative_zero=...).encode(value)``
    gives the bytes ``encode(value, ...)`` gives, without checking and
    gathering the options on every call (about a tenth of the cost of
    encoding a small CapTP message).
    """

    __slots__ = ("_options",)

    def __init__(
        self, *, default: Default = None, key_order: KeyOrder = "syrup", negative_zero: bool = True
    ) -> None:
        self._options = _options(default, key_order, negative_zero)

    def encode(self, value: object) -> bytes:
        """The canonical Syrup bytes of ``value``."""
        out: list[bytes] = []
        try:
            _enc(value, out, self._options, 0)
        except RecursionError:
            raise SyrupEncodeError(_TOO_DEEP) from None
        return b"".join(out)


class _Options:
    """What one :func:`encode` call was asked."""

    __slots__ = ("default", "js_keys", "negative_zero")

    def __init__(self, default: Default, js_keys: bool, negative_zero: bool) -> None:
        self.default = default
        self.js_keys = js_keys
        self.negative_zero = negative_zero


_PLAIN: Final = _Options(None, False, True)


def _options(default: Default, key_order: KeyOrder, negative_zero: bool) -> _Options:
    if key_order not in ("syrup", "js"):
        raise ValueError(f"key_order must be 'syrup' or 'js', not {key_order!r}")
    if default is None and key_order == "syrup" and negative_zero:
        return _PLAIN
    return _Options(default, key_order == "js", bool(negative_zero))


def _enc(v: Any, out: list[bytes], opts: _Options, depth: int) -> None:
    """Append the encoding of ``v``, found inside ``depth`` containers."""
    t = type(v)
    # (Typed locals below: compiled, a Record's or Symbol's fields are then read
    # directly, not looked up by name.)
    if t is Record:
        record: Record = v
        out.append(b"<")
        label = record.label
        if type(label) is Symbol:  # nearly always: op: and desc: records
            symbol: Symbol = label
            data = _symbol_cache.get(symbol.name)
            out.append(_symbol_bytes(symbol.name) if data is None else data)
        else:
            _enc(label, out, opts, depth)
        _enc_items(record.fields, out, opts, depth + 1)
        out.append(b">")
    elif t is Symbol:
        symbol = v
        name = symbol.name
        data = _symbol_cache.get(name)
        if data is None:
            data = _symbol_bytes(name)
        out.append(data)
    elif t is int:
        if 0 <= v < _SMALL_INT_LIMIT:
            out.append(_SMALL_INTS[v])
        else:
            out.append(_int_bytes(v))
    elif t is str:
        try:
            data = v.encode()
        except UnicodeEncodeError as exc:
            raise _bad_string(v, exc) from None
        out.append(b'%d"' % len(data))
        out.append(data)
    elif t is list or t is tuple:
        out.append(b"[")
        _enc_items(v, out, opts, depth + 1)
        out.append(b"]")
    elif t is bytes:
        out.append(b"%d:" % len(v))
        out.append(v)
    elif t is bool:
        out.append(b"t" if v else b"f")
    elif t is float:
        out.append(_float_bytes(v, _FLOAT64, opts))
    elif t is dict:
        _enc_dict(v, out, opts, depth + 1)
    elif t is Float32:
        out.append(_float_bytes(v, _FLOAT32, opts))
    elif t is frozenset or t is set:
        _enc_set(v, out, opts, depth + 1)
    else:
        _enc_other(v, out, opts, depth)


def _enc_items(items: Any, out: list[bytes], opts: _Options, depth: int) -> None:
    """Encode the items of a list or record (the commonest atoms inline)."""
    if depth > MAX_NESTING:
        raise SyrupEncodeError(_TOO_DEEP)
    for x in items:
        t = type(x)
        if t is int:
            if 0 <= x < _SMALL_INT_LIMIT:
                out.append(_SMALL_INTS[x])
            else:
                out.append(_int_bytes(x))
        elif t is Symbol:
            symbol: Symbol = x
            data = _symbol_cache.get(symbol.name)
            if data is None:
                data = _symbol_bytes(symbol.name)
            out.append(data)
        elif t is str:
            try:
                data = x.encode()
            except UnicodeEncodeError as exc:
                raise _bad_string(x, exc) from None
            out.append(b'%d"' % len(data))
            out.append(data)
        else:
            _enc(x, out, opts, depth)


# What _enc_other can encode itself: subclasses of these and bytes-likes.
_SYRUP_BASES: Final = (
    int, float, str, bytes, bytearray, memoryview, Symbol, Record, list, tuple, dict, set,
    frozenset,
)  # fmt: skip


def _enc_other(v: Any, out: list[bytes], opts: _Options, depth: int) -> None:
    """Encode a subclass of a Syrup type, a bytes-like object, or ask ``default``."""
    default = opts.default
    if default is not None and (v is None or not isinstance(v, _SYRUP_BASES)):
        # The common case in CapTP: None, references, promises (one test, not thirteen;
        # None, the commonest, not even that).
        replacement = default(v)
        if replacement is v:
            raise SyrupEncodeError(f"default() returned the {_type_name(v)} it was given")
        if depth > MAX_NESTING:
            raise SyrupEncodeError(_TOO_DEEP)
        _enc(replacement, out, opts, depth + 1)
    elif isinstance(v, bool):
        out.append(b"t" if v else b"f")
    # A subclass's own value, whatever its dunder methods say.
    elif isinstance(v, int):
        out.append(_int_bytes(int.__int__(v)))
    elif isinstance(v, Float32):
        _enc(Float32(float.__float__(v)), out, opts, depth)
    elif isinstance(v, float):
        _enc(float.__float__(v), out, opts, depth)
    elif isinstance(v, str):
        _enc(str.__str__(v), out, opts, depth)
    elif isinstance(v, (bytes, bytearray)):
        out.append(b"%d:" % len(v))
        out.append(bytes(v))
    elif isinstance(v, memoryview):
        data = v.tobytes()
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(v, Symbol):
        out.append(_symbol_bytes(v.name))
    elif isinstance(v, Record):
        _enc(Record(v.label, v.fields), out, opts, depth)
    elif isinstance(v, (list, tuple)):
        _enc(list(v), out, opts, depth)
    elif isinstance(v, dict):
        _enc_dict(v, out, opts, depth + 1)
    elif isinstance(v, (set, frozenset)):
        _enc_set(v, out, opts, depth + 1)
    elif opts.default is None:
        raise SyrupEncodeError(f"cannot encode {_type_name(v)} as Syrup (no default given)")
    else:
        replacement = opts.default(v)
        if replacement is v:
            raise SyrupEncodeError(f"default() returned the {_type_name(v)} it was given")
        if depth > MAX_NESTING:
            raise SyrupEncodeError(_TOO_DEEP)
        _enc(replacement, out, opts, depth + 1)


def _enc_dict(v: dict[Any, Any], out: list[bytes], opts: _Options, depth: int) -> None:
    # Canonical order: by the full encoded bytes of each key (spec section 2.1);
    # or JavaScript's order of strings, when asked and every key is a string.
    if depth > MAX_NESTING:
        raise SyrupEncodeError(_TOO_DEEP)
    js_order = opts.js_keys and all(type(key) is str for key in v)
    items = sorted(v.items(), key=_js_order) if js_order else v.items()
    pairs = []
    for key, value in items:
        if type(key) is str:
            data = _key_cache.get(key)
            if data is None:
                data = _string_key_bytes(key)
            pairs.append((data, value))
        else:
            pairs.append((_to_bytes(key, opts, depth), value))
    if not js_order:
        pairs.sort(key=_key0)
    out.append(b"{")
    previous = None
    for key_bytes, value in pairs:
        if key_bytes == previous:
            raise _duplicate("dictionary key", key_bytes)
        previous = key_bytes
        out.append(key_bytes)
        t = type(value)
        if t is str:
            try:
                data = value.encode()
            except UnicodeEncodeError as exc:
                raise _bad_string(value, exc) from None
            out.append(b'%d"' % len(data))
            out.append(data)
        elif t is int and 0 <= value < _SMALL_INT_LIMIT:
            out.append(_SMALL_INTS[value])
        else:
            _enc(value, out, opts, depth)
    out.append(b"}")


def _enc_set(v: set[Any] | frozenset[Any], out: list[bytes], opts: _Options, depth: int) -> None:
    if depth > MAX_NESTING:
        raise SyrupEncodeError(_TOO_DEEP)
    items = sorted(_to_bytes(x, opts, depth) for x in v)
    out.append(b"#")
    previous = None
    for data in items:
        if data == previous:
            raise _duplicate("set item", data)
        previous = data
        out.append(data)
    out.append(b"$")


def _to_bytes(v: object, opts: _Options, depth: int) -> bytes:
    out: list[bytes] = []
    _enc(v, out, opts, depth)
    return b"".join(out)


def _float_bytes(
    v: float, width: tuple[bytes, Callable[[float], bytes], bytes, bytes], opts: _Options
) -> bytes:
    marker, pack, nan, plus_zero = width
    if v != v:
        return nan
    if v == 0.0 and not opts.negative_zero:
        return plus_zero
    return marker + pack(v)


def _js_order(item: tuple[str, object]) -> bytes:
    """A string key's UTF-16 code units, whose byte order is JavaScript's order of strings."""
    return item[0].encode("utf-16-be", "surrogatepass")


def _symbol_bytes(name: str) -> bytes:
    return _text_atom(name, b"'", _symbol_cache, "symbol")


def _string_key_bytes(key: str) -> bytes:
    return _text_atom(key, b'"', _key_cache, "string")


def _text_atom(text: str, marker: bytes, cache: dict[str, bytes], kind: str) -> bytes:
    """``<len><marker><utf-8>``, remembered in ``cache`` when ``text`` is short."""
    try:
        data = text.encode()
    except UnicodeEncodeError as exc:
        raise _bad_string(text, exc, kind) from None
    encoded = b"%d%s%s" % (len(data), marker, data)
    if len(text) <= _CACHE_NAME_LENGTH:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[text] = encoded
    return encoded


def _int_bytes(v: int) -> bytes:
    if v >= 0:
        if v.bit_length() < _SAFE_BITS:
            return b"%d+" % v
        return _big_decimal(v) + b"+"
    if v.bit_length() < _SAFE_BITS:
        return b"%d-" % -v
    return _big_decimal(-v) + b"-"


def _big_decimal(v: int) -> bytes:
    """Decimal digits of a non-negative int too large for ``%d`` (divide and conquer)."""
    if v.bit_length() < _SAFE_BITS:
        return b"%d" % v
    # Split at a power of ten about half the size: hi * 10**k + lo.
    k = int(v.bit_length() * 0.30103) // 2
    hi, lo = divmod(v, 10**k)
    return _big_decimal(hi) + _big_decimal(lo).rjust(k, b"0")


def _type_name(v: object) -> str:
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _bad_string(s: str, exc: UnicodeEncodeError, kind: str = "string") -> SyrupEncodeError:
    return SyrupEncodeError(
        f"{kind} is not valid Unicode (lone surrogate at index {exc.start}): {s!r}"
    )


def _duplicate(what: str, data: bytes) -> SyrupEncodeError:
    shown = data if len(data) <= 40 else data[:40] + b"..."
    return SyrupEncodeError(f"two {what}s encode to the same bytes {shown!r}")
