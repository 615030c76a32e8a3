"""The OCapN CBOR codec itself (:mod:`ocapn.cbor` is its public face).

It is one of the modules ``python -m ocapn.compile`` can compile with mypyc
(:mod:`ocapn._native`); its exception classes live in :mod:`ocapn._cbor_errors`
because compiled classes cannot derive from ``Exception``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, Literal

from captp._passable import Record, Symbol, make_record
from ocapn._cbor_errors import CBORDecodeError, CBOREncodeError, HookFailed, Truncated
from ocapn._syrup_encode import MAX_NESTING
from ocapn._syrup_types import DEFAULT_LIMITS, Limits

__all__ = ["DecodeKeyOrder", "KeyOrder", "decode", "encode"]

KeyOrder = Literal["syrup", "js"]
DecodeKeyOrder = Literal["syrup", "js", "either"]
RecordHook = Callable[[Symbol, list[Any]], Any]
Default = Callable[[Any], Any] | None


# == encoding ======================================================================

_F64: Final = struct.Struct(">d")
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_NAN: Final = b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00"
_TAG_RECORD: Final = b"\xd8\x1b"
_TAG_SYMBOL: Final = b"\xd9\x01\x18"


def _head(major: int, n: int) -> bytes:
    """The shortest head of major type ``major`` with argument ``n``."""
    m = major << 5
    if n < 24:
        return _U8.pack(m | n)
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return _U8.pack(m | 25) + _U16.pack(n)
    if n < 0x100000000:
        return _U8.pack(m | 26) + _U32.pack(n)
    return _U8.pack(m | 27) + _U64.pack(n)


# Heads of short items, and the small non-negative integers, made once.
def _short_heads(major: int) -> list[bytes]:
    m = major << 5
    return [bytes((m | n,)) for n in range(24)] + [bytes((m | 24, n)) for n in range(24, 256)]


_BYTES_HEADS: Final = _short_heads(2)
_TEXT_HEADS: Final = _short_heads(3)
_ARRAY_HEADS: Final = _short_heads(4)
_MAP_HEADS: Final = _short_heads(5)
_SMALL_INTS: Final = [b"\xc2\x40"] + [b"\xc2\x41" + bytes((n,)) for n in range(1, 256)]
_SMALL_NEGS: Final = [b"\xc3\x40"] + [b"\xc3\x41" + bytes((n,)) for n in range(1, 256)]
_text_cache: dict[str, bytes] = {}
_symbol_cache: dict[str, bytes] = {}


def _text(s: str) -> bytes:
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:
        raise CBOREncodeError(f"string {s[:40]!r} holds a lone surrogate") from None
    n = len(raw)
    return (_TEXT_HEADS[n] if n < 256 else _head(3, n)) + raw


def _symbol_bytes(name: str) -> bytes:
    data = _TAG_SYMBOL + _text(name)
    if len(_symbol_cache) < 4096 and len(name) <= 64:
        _symbol_cache[name] = data
    return data


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


class _Options:
    """What one :func:`encode` call was asked."""

    __slots__ = ("default", "js_keys", "negative_zero")

    def __init__(self, default: Default, js_keys: bool, negative_zero: bool) -> None:
        self.default = default
        self.js_keys = js_keys
        self.negative_zero = negative_zero


_PLAIN: Final = _Options(None, False, True)


def encode(
    value: object,
    *,
    default: Default = None,
    key_order: KeyOrder = "syrup",
    negative_zero: bool = True,
) -> bytes:
    """Encode ``value`` as canonical OCapN CBOR bytes.

    ``default`` is called with any object that is not a value of the table
    above; what it returns is encoded in its place (as for
    :func:`ocapn.syrup.encode`).  ``key_order``: ``"syrup"`` sorts map keys by
    their UTF-8 bytes (the draft's rule), ``"js"`` as JavaScript sorts
    strings (what ``@endo/ocapn`` writes; the two differ only where
    characters beyond U+FFFF meet ones from U+E000 to U+FFFF).
    ``negative_zero=False`` writes ``-0.0`` as ``0.0``.  Raises
    :class:`CBOREncodeError` for a value that cannot be encoded.
    """
    if key_order not in ("syrup", "js"):
        raise ValueError(f"key_order must be 'syrup' or 'js', not {key_order!r}")
    js_keys = key_order == "js"
    opts = (
        _PLAIN
        if default is None and not js_keys and negative_zero
        else _Options(default, js_keys, bool(negative_zero))
    )
    out: list[bytes] = []
    try:
        _enc(value, out, opts, 0)
    except RecursionError:
        raise CBOREncodeError(_TOO_DEEP) from None
    return b"".join(out)


_TOO_DEEP: Final = "value nests too deeply to encode (or contains itself)"


def _enc(v: Any, out: list[bytes], opts: _Options, depth: int) -> None:
    """Append the encoding of ``v``, found inside ``depth`` containers (at most MAX_NESTING)."""
    t = type(v)
    if t is Record:
        if depth >= MAX_NESTING:
            raise CBOREncodeError(_TOO_DEEP)
        label = v.label
        if type(label) is not Symbol:
            raise CBOREncodeError(
                f"a CBOR record label is a symbol, not {type(label).__name__}"
            )
        fields = v.fields
        n = len(fields) + 1
        out.append(_TAG_RECORD)
        out.append(_ARRAY_HEADS[n] if n < 256 else _head(4, n))
        name = label.name
        data = _text_cache.get(name)
        if data is None:
            data = _text(name)
            if len(_text_cache) < 4096 and len(name) <= 64:
                _text_cache[name] = data
        out.append(data)
        for item in fields:
            _enc(item, out, opts, depth + 1)
    elif t is Symbol:
        data = _symbol_cache.get(v.name)
        out.append(data if data is not None else _symbol_bytes(v.name))
    elif t is str:
        out.append(_text(v))
    elif t is int:
        _enc_int(v, out)
    elif t is list or t is tuple:
        if depth >= MAX_NESTING:
            raise CBOREncodeError(_TOO_DEEP)
        n = len(v)
        out.append(_ARRAY_HEADS[n] if n < 256 else _head(4, n))
        for item in v:
            _enc(item, out, opts, depth + 1)
    elif t is bool:
        out.append(b"\xf5" if v else b"\xf4")
    elif t is bytes:
        n = len(v)
        out.append(_BYTES_HEADS[n] if n < 256 else _head(2, n))
        out.append(v)
    elif t is dict:
        _enc_map(v, out, opts, depth)
    elif t is float:
        _enc_float(v, out, opts)
    else:
        _enc_other(v, t, out, opts, depth)


def _enc_int(v: int, out: list[bytes]) -> None:
    if v >= 0:
        if v < 256:
            out.append(_SMALL_INTS[v])
            return
        out.append(b"\xc2")
    else:
        v = -1 - v
        if v < 256:
            out.append(_SMALL_NEGS[v])
            return
        out.append(b"\xc3")
    raw = v.to_bytes((v.bit_length() + 7) >> 3, "big")
    n = len(raw)
    out.append(_BYTES_HEADS[n] if n < 256 else _head(2, n))
    out.append(raw)


def _enc_float(v: float, out: list[bytes], opts: _Options) -> None:
    if v != v:
        out.append(_NAN)
    elif v == 0.0 and not opts.negative_zero:
        out.append(b"\xfb\x00\x00\x00\x00\x00\x00\x00\x00")
    else:
        out.append(b"\xfb" + _F64.pack(v))


def _enc_map(v: dict[Any, Any], out: list[bytes], opts: _Options, depth: int) -> None:
    if depth >= MAX_NESTING:
        raise CBOREncodeError(_TOO_DEEP)
    for key in v:
        if not isinstance(key, str):
            raise CBOREncodeError(f"a CBOR map key is a string, not {type(key).__name__}")
    n = len(v)
    out.append(_MAP_HEADS[n] if n < 256 else _head(5, n))
    # Code-point order is the order of UTF-8 bytes (the draft's rule).
    keys = sorted(v, key=_utf16_key) if opts.js_keys else sorted(v)
    for key in keys:
        out.append(_text(str(key)))
        _enc(v[key], out, opts, depth + 1)


def _enc_other(v: Any, t: type, out: list[bytes], opts: _Options, depth: int) -> None:
    if isinstance(v, bool):
        out.append(b"\xf5" if v else b"\xf4")
    elif isinstance(v, int):
        _enc_int(int(v), out)
    elif isinstance(v, float):  # Float32 too: OCapN has only doubles, and it is exact
        _enc_float(float(v), out, opts)
    elif isinstance(v, str):
        out.append(_text(str(v)))
    elif isinstance(v, (bytearray, memoryview)):
        _enc(bytes(v), out, opts, depth)
    elif isinstance(v, (set, frozenset)):
        raise CBOREncodeError("OCapN CBOR has no sets")
    elif opts.default is not None:
        replacement = opts.default(v)
        if replacement is v:
            raise CBOREncodeError(f"default() returned the {t.__name__} it was given")
        if depth >= MAX_NESTING:
            raise CBOREncodeError(_TOO_DEEP)
        _enc(replacement, out, opts, depth + 1)
    else:
        raise CBOREncodeError(f"{t.__name__} is not an OCapN CBOR value")


# == decoding ======================================================================


class _Config:
    """What one :func:`decode` call was asked."""

    __slots__ = ("hook", "max_depth", "max_int_bytes", "max_size", "order")

    def __init__(self, limits: Limits, hook: RecordHook | None, key_order: str) -> None:
        if key_order not in ("syrup", "js", "either"):
            raise ValueError(f"key_order must be 'syrup', 'js' or 'either', not {key_order!r}")
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
        self.hook = hook
        self.max_depth = limits.max_depth
        self.max_size = limits.max_size
        # max_int_digits decimal digits need at most this many bytes of magnitude.
        self.max_int_bytes = (limits.max_int_digits * 3322 // 1000 + 8) // 8
        self.order = key_order


_DEFAULT_CONFIG: Final = _Config(DEFAULT_LIMITS, None, "syrup")


def decode(
    data: bytes | bytearray | memoryview,
    *,
    limits: Limits = DEFAULT_LIMITS,
    record_hook: RecordHook | None = None,
    key_order: DecodeKeyOrder = "syrup",
) -> object:
    """Decode exactly one canonical OCapN CBOR value from ``data``.

    Anything but the canonical encoding is refused with :class:`CBORDecodeError`.
    ``key_order`` is the order asked of map keys: ``"syrup"`` (UTF-8 bytes,
    the draft), ``"js"`` (JavaScript's order of strings) or ``"either"``.
    ``record_hook(label, fields)``, if given, replaces every record as it is
    decoded, innermost first; its exceptions propagate unchanged.
    """
    if type(data) is not bytes:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise TypeError(f"decode() needs bytes, not {type(data).__name__}")
    if limits is DEFAULT_LIMITS and record_hook is None and key_order == "syrup":
        config = _DEFAULT_CONFIG
    else:
        config = _Config(limits, record_hook, key_order)
    n = len(data)
    if n > config.max_size:
        raise CBORDecodeError(
            f"input of {n} bytes is over the size limit of {config.max_size}", config.max_size
        )
    failure: BaseException | None = None
    try:
        value, pos = _parse(data, config)
        if pos != n:
            raise CBORDecodeError(f"{n - pos} trailing bytes after the value", pos)
        return value
    except HookFailed as wrapper:
        failure = wrapper.args[0]
    except Truncated as exc:
        offset, length = exc.args
        if length > config.max_size:
            raise CBORDecodeError(
                f"length {length} is over the size limit of {config.max_size}", offset
            ) from None
        raise CBORDecodeError(f"length {length} runs past the end of the input", offset) from None
    except IndexError:
        if n == 0:
            raise CBORDecodeError("empty input", 0) from None
        raise CBORDecodeError("input ends in the middle of a value", n) from None
    except RecursionError:
        raise CBORDecodeError("value nests too deeply for the Python stack", 0) from None
    except MemoryError:
        raise CBORDecodeError("out of memory while decoding", 0) from None
    raise failure


def _arg(data: bytes, pos: int, ai: int) -> tuple[int, int]:
    """The argument of the head whose first byte is at ``pos``; checks it is shortest."""
    if ai == 24:
        n = data[pos + 1]
        if n < 24:
            raise CBORDecodeError(f"non-canonical head: {n} needs no extra byte", pos)
        return n, pos + 2
    if ai == 25:
        if pos + 3 > len(data):
            raise IndexError
        n = (data[pos + 1] << 8) | data[pos + 2]
        if n < 0x100:
            raise CBORDecodeError(f"non-canonical head: {n} fits in fewer bytes", pos)
        return n, pos + 3
    if ai == 26:
        if pos + 5 > len(data):
            raise IndexError
        n = int.from_bytes(data[pos + 1 : pos + 5], "big")
        if n < 0x10000:
            raise CBORDecodeError(f"non-canonical head: {n} fits in fewer bytes", pos)
        return n, pos + 5
    if ai == 27:
        if pos + 9 > len(data):
            raise IndexError
        n = int.from_bytes(data[pos + 1 : pos + 9], "big")
        if n < 0x100000000:
            raise CBORDecodeError(f"non-canonical head: {n} fits in fewer bytes", pos)
        return n, pos + 9
    if ai == 31:
        raise CBORDecodeError("indefinite length (OCapN CBOR uses definite lengths only)", pos)
    raise CBORDecodeError(f"reserved additional information {ai}", pos)


def _span(data: bytes, pos: int, config: _Config) -> tuple[int, int]:
    """For a byte or text string head at ``pos``: (start of content, end of content)."""
    ai = data[pos] & 31
    if ai < 24:
        start = pos + 1
        end = start + ai
    else:
        length, start = _arg(data, pos, ai)
        end = start + length
    if end > len(data):
        raise Truncated(pos, end - start)
    return start, end


def _str(data: bytes, pos: int, config: _Config) -> tuple[str, int]:
    start, end = _span(data, pos, config)
    try:
        return data[start:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        message = f"invalid UTF-8 in a text string: {exc.reason}"
        raise CBORDecodeError(message, start + exc.start) from None


# The parser is one loop with an explicit stack (no recursion, so no Python
# stack limit): ``items``/``left``/``kind``/``extra`` describe the innermost
# open container, and ``stack`` holds those of the containers around it.
_TOP: Final = 0
_ARRAY: Final = 1
_RECORD: Final = 2
_MAP: Final = 3


def _parse(data: bytes, config: _Config) -> tuple[Any, int]:
    """The value at the start of ``data`` and the offset just past it."""
    stack: list[tuple[list[Any], int, int, Any]] = []
    push = stack.append
    items: list[Any] = []
    left = 1
    kind = _TOP
    extra: Any = None
    max_depth = config.max_depth
    # Heads of the bignums read inline: byte strings of 2 to 23 bytes, within the limit.
    max_short_int = 0x40 + min(23, config.max_int_bytes) + 1
    pos = 0
    while True:
        start = pos
        b = data[pos]
        # -- atoms, the usual ones first ------------------------------------------
        if b == 0xC2 and data[pos + 1] == 0x41 and data[pos + 2]:
            v: Any = data[pos + 2]
            pos += 3
        elif (b == 0xC2 or b == 0xC3) and 0x41 < data[pos + 1] < max_short_int:
            # A bignum of 2 to 23 bytes.
            end = pos + data[pos + 1] - 0x3E
            if end > len(data):
                raise Truncated(pos + 1, end - pos - 2)
            if not data[pos + 2]:
                raise CBORDecodeError("non-minimal bignum: a leading zero byte", pos + 2)
            v = int.from_bytes(data[pos + 2 : end], "big")
            if b == 0xC3:
                v = -1 - v
            pos = end
        elif 0x60 <= b < 0x78:
            end = pos + b - 0x5F
            if end > len(data):
                raise Truncated(pos, b - 0x60)
            try:
                v = data[pos + 1 : end].decode("utf-8")
            except UnicodeDecodeError:
                v, end = _str(data, pos, config)
            pos = end
        elif b == 0xD8 and data[pos + 1] == 0x1B:
            # -- a record: read the head and the label, then its fields -----------
            h = pos + 2
            c = data[h]
            if c >> 5 != 4:
                raise CBORDecodeError("a record (tag 27) holds an array", h)
            if len(stack) >= max_depth:
                raise CBORDecodeError(f"nesting is deeper than the limit of {max_depth}", h)
            if c < 0x98:
                count, p = c - 0x80, h + 1
            else:
                count, p = _count(data, h, c & 31)
            if count == 0:
                raise CBORDecodeError("a record has a label", h)
            # A short label seen before is looked up here; the rest go through _symbol.
            t = data[p]
            end = p + t - 0x5F
            label = None
            if 0x60 <= t < 0x78 and end <= len(data):
                label = _symbols.get(data[p + 1 : end])
            if label is not None:
                pos = end
            elif t >> 5 != 3:
                raise CBORDecodeError("a record label is a text string", p)
            else:
                label, pos = _symbol(data, p, config)
            if count > 1:
                push((items, left, kind, extra))
                items, left, kind, extra = [], count - 1, _RECORD, label
                continue
            v = _finish_record(label, [], config)
        elif 0xA0 < b < 0xB8:
            if len(stack) >= max_depth:
                raise CBORDecodeError(f"nesting is deeper than the limit of {max_depth}", pos)
            push((items, left, kind, extra))
            items, left, kind, extra = [], 2 * (b - 0xA0), _MAP, _MapState(config.order)
            pos += 1
            continue
        elif 0x40 <= b < 0x58:
            end = pos + b - 0x3F
            if end > len(data):
                raise Truncated(pos, b - 0x40)
            v = data[pos + 1 : end]
            pos = end
        elif 0x80 <= b < 0x98 or b == 0xA0:
            if b == 0x80 or b == 0xA0:
                v = [] if b == 0x80 else {}
                pos += 1
            else:
                if len(stack) >= max_depth:
                    raise CBORDecodeError(f"nesting is deeper than the limit of {max_depth}", pos)
                push((items, left, kind, extra))
                items, left, kind, extra = [], b - 0x80, _ARRAY, None
                pos += 1
                continue
        elif b == 0xD9 and data[pos + 1] == 0x01 and data[pos + 2] == 0x18:
            t = data[pos + 3]
            end = pos + t - 0x5C  # as for a record's label
            v = None
            if 0x60 <= t < 0x78 and end <= len(data):
                v = _symbols.get(data[pos + 4 : end])
            if v is not None:
                pos = end
            elif t >> 5 != 3:
                raise CBORDecodeError("a symbol (tag 280) holds a text string", pos + 3)
            else:
                v, pos = _symbol(data, pos + 3, config)
        elif b == 0xF4 or b == 0xF5:
            v = b == 0xF5
            pos += 1
        elif b == 0xC2 or b == 0xC3:
            v, pos = _bignum(data, pos, config)
        elif b == 0xFB:
            v, pos = _float(data, pos)
        else:
            major = b >> 5
            if major == 2:
                s, pos = _span(data, pos, config)
                v = data[s:pos]
            elif major == 3:
                v, pos = _str(data, pos, config)
            elif major == 4 or major == 5:
                if len(stack) >= max_depth:
                    raise CBORDecodeError(f"nesting is deeper than the limit of {max_depth}", pos)
                ai = b & 31
                count, pos = (ai, pos + 1) if ai < 24 else _count(data, pos, ai)
                if count == 0:
                    v = [] if major == 4 else {}
                else:
                    push((items, left, kind, extra))
                    if major == 4:
                        items, left, kind, extra = [], count, _ARRAY, None
                    else:
                        items, left, kind = [], 2 * count, _MAP
                        extra = _MapState(config.order)
                    continue
            elif major == 6:
                v, pos = _bad_tag(data, pos)
            elif major == 7:
                v, pos = _bad_simple(b, pos)
            else:
                raise CBORDecodeError(
                    "a bare CBOR integer (OCapN CBOR writes every integer as a tag 2/3 bignum)",
                    pos,
                )
        # -- put ``v`` in its container; close every container it completes ------------
        while True:
            if kind == _MAP and not left & 1:
                # A key: text, and after the last key (JavaScript's order and
                # "either" go through _MapState.key).
                state: _MapState = extra  # typed: compiled, its attributes are read directly
                last = state.last
                if type(v) is str and state.plain and (last is None or last < v):
                    state.last = v
                else:
                    state.key(v, start)
            items.append(v)
            left -= 1
            if left:
                break
            if kind == _TOP:
                return items[0], pos
            if kind == _ARRAY:
                v = items
            elif kind == _RECORD:
                v = _finish_record(extra, items, config)
            else:
                v = {}  # a loop: faster than dict(zip(...)) both pure and compiled
                for k in range(0, len(items), 2):
                    v[items[k]] = items[k + 1]
            items, left, kind, extra = stack.pop()


def _count(data: bytes, pos: int, ai: int) -> tuple[int, int]:
    """The item count of a container head with extra bytes, checked against the input."""
    count, p = _arg(data, pos, ai)
    if count > len(data) - p:  # every item takes at least one byte
        raise Truncated(pos, count)
    return count, p


# Symbols (and record labels) by the bytes of their short names, made once each
# (bounded: names come from peers).
_symbols: Final[dict[bytes, Symbol]] = {}


def _symbol(data: bytes, pos: int, config: _Config) -> tuple[Symbol, int]:
    """The symbol named by the text string at ``pos``."""
    b = data[pos]
    if b < 0x78:
        end = pos + b - 0x5F
        if end > len(data):
            raise Truncated(pos, b - 0x60)
        raw = data[pos + 1 : end]
        symbol = _symbols.get(raw)
        if symbol is not None:
            return symbol, end
        name, end = _str(data, pos, config)
        symbol = Symbol(name)
        if len(_symbols) < 4096:
            _symbols[raw] = symbol
        return symbol, end
    name, end = _str(data, pos, config)
    return Symbol(name), end


def _finish_record(label: Symbol, fields: list[Any], config: _Config) -> Any:
    hook = config.hook
    if hook is None:
        return make_record(label, tuple(fields))
    try:
        return hook(label, fields)
    except Exception as exc:
        raise HookFailed(exc) from None


class _MapState:
    """The key checks of one open map: text keys, none repeated, in order."""

    __slots__ = ("by_points", "by_units", "last", "plain")

    def __init__(self, order: str) -> None:
        self.last: str | None = None
        self.plain = order == "syrup"
        self.by_points = order != "js"  # the keys so far are in code-point (UTF-8) order
        self.by_units = order != "syrup"  # ... in JavaScript's (UTF-16) order

    def key(self, key: Any, at: int) -> None:
        if type(key) is not str:
            raise CBORDecodeError("a map key is a text string", at)
        last = self.last
        if last is not None:
            if key == last:
                raise CBORDecodeError(f"repeated map key {key!r}", at)
            if self.by_points and not last < key:
                self.by_points = False
            if self.by_units and not _utf16_key(last) < _utf16_key(key):
                self.by_units = False
            if not (self.by_points or self.by_units):
                raise CBORDecodeError(f"map key {key!r} is out of order after {last!r}", at)
        self.last = key


def _bad_tag(data: bytes, pos: int) -> tuple[Any, int]:
    b = data[pos]
    ai = b & 31
    tag, _ = (ai, pos + 1) if ai < 24 else _arg(data, pos, ai)
    raise CBORDecodeError(f"unknown tag {tag} (OCapN CBOR uses tags 2, 3, 27 and 280)", pos)


def _bad_simple(b: int, pos: int) -> tuple[Any, int]:
    if b == 0xF6 or b == 0xF7:
        what = "null" if b == 0xF6 else "undefined"
        raise CBORDecodeError(
            f"simple value {what}: OCapN passes it as a record (<null> / <void>)", pos
        )
    if b == 0xF9 or b == 0xFA:
        raise CBORDecodeError("a half or single float (OCapN CBOR writes float64 only)", pos)
    if b == 0xFF:
        raise CBORDecodeError("a break outside an indefinite-length item", pos)
    raise CBORDecodeError(f"simple value {b & 31} is not an OCapN value", pos)


def _float(data: bytes, pos: int) -> tuple[float, int]:
    end = pos + 9
    if end > len(data):
        raise IndexError
    value: float = _F64.unpack_from(data, pos + 1)[0]
    if value != value and data[pos:end] != _NAN:
        raise CBORDecodeError("non-canonical NaN (the one NaN is 7ff8000000000000)", pos + 1)
    return value, end


def _bignum(data: bytes, pos: int, config: _Config) -> tuple[int, int]:
    h = pos + 1
    c = data[h]
    if c >> 5 != 2:
        raise CBORDecodeError("a bignum (tag 2/3) holds a byte string", h)
    if c == 0x41:  # one byte: the usual case
        n = data[h + 1]
        if n == 0:
            raise CBORDecodeError("non-minimal bignum: a leading zero byte", h + 1)
        return (n if data[pos] == 0xC2 else -1 - n), h + 2
    start, end = _span(data, h, config)
    if end - start > config.max_int_bytes:
        raise CBORDecodeError(
            f"integer of {end - start} bytes is over the limit of"
            f" {config.max_int_bytes} bytes (max_int_digits)",
            h,
        )
    if start < end and data[start] == 0:
        raise CBORDecodeError("non-minimal bignum: a leading zero byte", start)
    n = int.from_bytes(data[start:end], "big")
    return (n if data[pos] == 0xC2 else -1 - n), end
