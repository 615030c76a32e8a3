"""Syrup decoder: bytes to Python values, strict (canonical) by default.

The parser works on one ``bytes`` object with index arithmetic.  The items
of every container are parsed by :func:`_items`, which handles the common
atoms (integers, strings, symbols, bytestrings, booleans) and lists, records
and dictionaries inline; everything else goes through :func:`_one`.

A large input (64 KiB and more, not ``bytes``) is parsed where it is, through
a ``memoryview``, so that each bytestring in it is copied once.  The source
reads a view as it reads ``bytes``; compiled (mypyc), the parser takes
``bytes`` only, which is what makes its byte reads cheap, so views go to the
module's interpreted twin (:func:`captp._native.interpreted`), whose cost is
small beside that of copying such an input.

Reading past the end of the input raises ``IndexError`` (or :class:`Truncated`
for a length prefix that claims more bytes than there are); the callers turn
that into "truncated" (one-shot decoding) or "wait for more" (stream
decoding).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, Final, Literal

from captp._native import interpreted
from captp._passable import Symbol, make_record
from ocapn._syrup_encode import MAX_NESTING, encode
from ocapn._syrup_types import (
    DEFAULT_LIMITS,
    Float32,
    HookFailed,
    Limits,
    SyrupDecodeError,
    SyrupEncodeError,
    TooDeep,
    Truncated,
)

__all__ = [
    "Config",
    "DecodeKeyOrder",
    "Decoder",
    "HookFailed",
    "TooDeep",
    "Truncated",
    "VIEW_THRESHOLD",
    "WHITESPACE",
    "as_parsable",
    "decode",
    "decode_one",
    "make_config",
    "out_of_memory",
    "parse_digits",
]

RecordHook = Callable[[object, list[object]], object]
_Data = bytes
"""What the parser reads (its interpreted form reads a byte ``memoryview`` alike)."""
DecodeKeyOrder = Literal["syrup", "js", "either"]
_KEY_ORDERS: Final = ("syrup", "js", "either")

WHITESPACE: Final = frozenset(b" \t\n\r\x0b\x0c")
"""Bytes that lenient mode skips between tokens (Python's ``string.whitespace``)."""

_CANONICAL_NAN64: Final = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"
_CANONICAL_NAN32: Final = b"\x7f\xc0\x00\x00"
_unpack_d: Final = struct.Struct(">d").unpack_from
_unpack_f: Final = struct.Struct(">f").unpack_from
_DIGITS: Final = re.compile(rb"[0-9]*")

# Decoded symbols by their raw UTF-8 bytes.  Symbols are immutable, so one
# object can be shared.  Bounded so that a peer sending many (or huge)
# symbols costs us time, not memory: only short symbols are kept (CapTP's
# are 5 to 30 bytes), and the cache is emptied when full.
_SYMBOL_CACHE_MAX: Final = 4096
_SYMBOL_CACHE_BYTES: Final = 64
_symbols: Final[dict[bytes, Symbol]] = {}


class Config:
    """The decoding options, gathered once per call (or per stream).

    ``hook_log`` is set only by a stream decoder: it receives each hook
    result with the stream offset of its record (``base`` + offset in the
    parsed bytes).  When a value turns out incomplete, the stream decoder
    moves the log to ``hook_results``, where re-parsing the value finds them,
    so that no record's hook is called twice.  (Appending to a list is
    cheaper than a dictionary, and most values are whole at the first try.)
    """

    __slots__ = (
        "base",
        "depth_bound",
        "hook",
        "hook_log",
        "hook_results",
        "inline_digits",
        "key_order",
        "lenient",
        "max_depth",
        "max_int_digits",
        "max_size",
    )

    def __init__(
        self,
        lenient: bool,
        limits: Limits,
        hook: RecordHook | None,
        key_order: DecodeKeyOrder = "syrup",
    ) -> None:
        if key_order not in _KEY_ORDERS:
            raise ValueError(f"key_order must be 'syrup', 'js' or 'either', not {key_order!r}")
        self.lenient = bool(lenient)
        self.key_order = key_order
        self.max_depth = limits.max_depth
        # Past MAX_NESTING levels the parser refuses as if out of Python stack
        # (pure Python runs out near there; compiled code has no such check).
        self.depth_bound = min(limits.max_depth, MAX_NESTING)
        self.max_size = limits.max_size
        self.max_int_digits = limits.max_int_digits
        self.hook = hook
        # The item loop converts numbers of up to 1 + inline_digits digits
        # itself (at most 18, never more than the limit); longer ones go to
        # _digit_atom, which enforces the limit.
        self.inline_digits = min(18, limits.max_int_digits) - 1
        self.hook_log: list[tuple[int, object]] | None = None
        self.hook_results: dict[int, object] = {}
        self.base = 0


_DEFAULT_CONFIG: Final = Config(False, DEFAULT_LIMITS, None)


def make_config(
    lenient: bool, limits: Limits, hook: RecordHook | None, key_order: DecodeKeyOrder = "syrup"
) -> Config:
    """The :class:`Config` for these options.

    Not cached beyond the default: making one costs about as much as a cache
    lookup would, and a cache would keep hooks (and the sessions they are
    bound to) alive.
    """
    if not lenient and hook is None and limits is DEFAULT_LIMITS and key_order == "syrup":
        return _DEFAULT_CONFIG
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
    return Config(lenient, limits, hook, key_order)


def decode(
    data: bytes | bytearray | memoryview,
    *,
    lenient: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    record_hook: RecordHook | None = None,
    key_order: DecodeKeyOrder = "syrup",
) -> object:
    """Decode exactly one Syrup value from ``data``.

    Strict by default: anything but the canonical encoding of one value is
    rejected with :class:`SyrupDecodeError`.  ``lenient=True`` relaxes the
    canonical-form rules (see ``spec-notes/0003-syrup-codec.md``).
    ``key_order`` is the order strict mode asks of a dictionary whose keys
    are all strings: ``"syrup"`` (by encoded bytes), ``"js"`` (JavaScript's
    order of strings, as Endo writes structs) or ``"either"``.
    ``record_hook(label, fields)``, if given, replaces every record as it is
    decoded, innermost first; its exceptions propagate unchanged.
    """
    if limits is DEFAULT_LIMITS and record_hook is None and not lenient and key_order == "syrup":
        config = _DEFAULT_CONFIG
    else:
        config = make_config(lenient, limits, record_hook, key_order)
    return _decode_whole(data, config)


class Decoder:
    """:func:`decode` with its options fixed once: for a caller that decodes many values alike.

    ``Decoder(limits=..., record_hook=..., key_order=...).decode(data)`` gives
    what ``decode(data, ...)`` gives, without checking and gathering the
    options on every call.
    """

    __slots__ = ("_config",)

    def __init__(
        self,
        *,
        lenient: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        record_hook: RecordHook | None = None,
        key_order: DecodeKeyOrder = "syrup",
    ) -> None:
        self._config = make_config(lenient, limits, record_hook, key_order)

    def decode(self, data: bytes | bytearray | memoryview) -> object:
        """Decode exactly one Syrup value from ``data`` (see :func:`decode`)."""
        return _decode_whole(data, self._config)


def _decode_whole(data: bytes | bytearray | memoryview, config: Config) -> object:
    if type(data) is not bytes:
        data = as_parsable(data)
    n = len(data)
    if n > config.max_size:
        raise SyrupDecodeError(
            f"input of {n} bytes is over the size limit of {config.max_size}", config.max_size
        )
    failure: BaseException | None = None
    try:
        value, pos = decode_one(data, 0, config)
        if pos != n and config.lenient:
            pos = _skip_whitespace(data, pos)
        if pos != n:
            raise SyrupDecodeError(f"{n - pos} trailing bytes after the value", pos)
        return value
    except HookFailed as wrapper:
        failure = wrapper.args[0]
    except TooDeep as deep:
        raise _stack_exhausted(deep.args[0]) from None
    except RecursionError:  # the caller left too little stack to start with
        raise _stack_exhausted(0) from None
    except Truncated as cut:
        offset, message, length = cut.args
        if length > config.max_size:
            message = f"length {length} is over the size limit of {config.max_size}"
        raise SyrupDecodeError(message, offset) from None
    except IndexError:
        if n == 0:
            raise SyrupDecodeError("empty input", 0) from None
        raise SyrupDecodeError("input ends in the middle of a value", n) from None
    except MemoryError:  # what was built so far is garbage once we unwind
        raise out_of_memory(n) from None
    # Re-raised outside the handler so the hook's exception gains no __context__.
    raise failure


# Inputs at least this large are parsed in place (a memoryview) rather than
# copied to ``bytes`` first: a bytestring in them then costs one copy.
VIEW_THRESHOLD: Final = 64 * 1024


def as_parsable(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """``data`` as the parser reads it: small inputs as ``bytes``, large ones as a view."""
    if type(data) is bytes:
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode() needs bytes, not {type(data).__name__}")
    view = memoryview(data)
    if view.nbytes < VIEW_THRESHOLD or not view.c_contiguous:
        return view.tobytes()
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def decode_one(data: bytes | memoryview, pos: int, config: Config) -> tuple[object, int]:
    """Decode the value that starts at ``pos``; return it and the offset just past it.

    Raises ``IndexError`` or :class:`Truncated` if the value is incomplete,
    :class:`HookFailed` and :class:`TooDeep` as described there.
    """
    if type(data) is bytes:
        return _one(data, pos, 0, config)
    return _parse_view(data, pos, config)


_view_parser: Callable[[bytes, int, int, Config], tuple[Any, int]] | None = None


def _parse_view(data: bytes | memoryview, pos: int, config: Config) -> tuple[Any, int]:
    """:func:`_one` on a byte view, by the parser's interpreted form (see the module's notes)."""
    global _view_parser
    if _view_parser is None:
        _view_parser = interpreted(__name__)._one
    # Not cast(bytes, data): compiled, a cast is checked.  The interpreted
    # parser only indexes, slices and measures its input.
    view: Any = data
    return _view_parser(view, pos, 0, config)


# -- the parser ----------------------------------------------------------------
#
# ``depth`` is the nesting depth of the enclosing container (0 at the top);
# opening a container at depth d makes one at depth d + 1, which must not
# exceed ``config.max_depth``.


def _one(data: _Data, pos: int, depth: int, config: Config) -> tuple[Any, int]:
    """Decode any one value at ``pos``."""
    c = data[pos]
    if 47 < c < 58:
        return _digit_atom(data, pos, config)
    if c == 60 or c == 91:  # < [
        if depth >= config.depth_bound:
            raise _too_deep(pos, config)
        try:
            if c == 91:
                return _items(data, pos + 1, 93, depth + 1, config)
            sub, end = _items(data, pos + 1, 62, depth + 1, config)
        except RecursionError:
            raise TooDeep(pos) from None
        return _record(sub, pos, config), end
    if c == 116:  # t
        return True, pos + 1
    if c == 102:  # f
        return False, pos + 1
    if c == 68:  # D
        return _float64(data, pos, config), pos + 9
    if c == 123 or c == 35:  # { #
        if depth >= config.depth_bound:
            raise _too_deep(pos, config)
        offsets: list[int] = []
        try:
            sub, end = _items(data, pos + 1, 125 if c == 123 else 36, depth + 1, config, offsets)
        except RecursionError:
            raise TooDeep(pos) from None
        if c == 123:
            return _dict(data, sub, offsets, end, config), end
        return _set(data, sub, offsets, end, config), end
    if c == 70:  # F
        return _float32(data, pos, config), pos + 5
    if config.lenient and c in WHITESPACE:
        return _one(data, _skip_whitespace(data, pos), depth, config)
    raise _unexpected(data, pos)


def _items(
    data: _Data,
    pos: int,
    close: int,
    depth: int,
    config: Config,
    offsets: list[int] | None = None,
) -> tuple[list[Any], int]:
    """Decode the items of a container up to its ``close`` byte.

    Returns the items and the offset after ``close``; ``offsets``, if given,
    receives the offset of each item (dictionaries and sets need the raw
    bytes of their keys).  The common atoms are decoded inline: this loop
    is most of the decoder's time.
    """
    items: list[Any] = []
    n = len(data)
    while True:
        c = data[pos]
        if c == close:
            return items, pos + 1
        if offsets is not None:
            offsets.append(pos)
        if 47 < c < 58:
            # An integer or a length prefix.
            j = pos + 1
            m = data[j]
            if m == 43:  # a one-digit integer, the commonest token of all
                items.append(c - 48)
                pos += 2
                continue
            num = c - 48
            if 47 < m < 58:
                # Up to 18 digits here; leading zeros, longer numbers and
                # numbers over the limit go to the general path.
                last = pos + config.inline_digits
                while 47 < m < 58 and j <= last:
                    num = num * 10 + m - 48
                    j += 1
                    m = data[j]
                if c == 48 or 47 < m < 58:
                    v, pos = _digit_atom(data, pos, config)
                    items.append(v)
                    continue
            if m == 43:  # +
                items.append(num)
                pos = j + 1
                continue
            start = j + 1
            end = start + num
            if m == 39:  # ' symbol
                if end > n:
                    raise _past_end("symbol", pos, num, start, n)
                raw = data[start:end]
                if type(raw) is not bytes:  # a view (the interpreted form)
                    raw = bytes(raw)
                sym = _symbols.get(raw)
                if sym is None:
                    sym = _new_symbol(raw, start)
                items.append(sym)
                pos = end
            elif m == 34:  # " string
                if end > n:
                    raise _past_end("string", pos, num, start, n)
                raw = data[start:end]
                try:
                    items.append(raw.decode() if type(raw) is bytes else str(raw, "utf-8"))
                except UnicodeDecodeError as exc:
                    raise _bad_utf8("string", exc, start) from None
                pos = end
            elif m == 58:  # : bytestring
                if end > n:
                    raise _past_end("bytestring", pos, num, start, n)
                raw = data[start:end]
                items.append(raw if type(raw) is bytes else bytes(raw))  # the one copy
                pos = end
            else:  # '-' and malformed input
                v, pos = _digit_atom(data, pos, config)
                items.append(v)
        elif c == 60:  # < record
            if depth >= config.depth_bound:
                raise _too_deep(pos, config)
            try:
                sub, end = _items(data, pos + 1, 62, depth + 1, config)
            except RecursionError:
                raise TooDeep(pos) from None
            if config.hook is None and sub:  # no hook: a plain Record
                label = sub[0]
                del sub[0]
                items.append(make_record(label, tuple(sub)))
            elif sub and config.hook is not None and not config.hook_results:
                # _record inlined for the hook's usual case (nothing to look up).
                label = sub[0]
                del sub[0]
                try:
                    result = config.hook(label, sub)
                except Exception as hook_error:
                    raise HookFailed(hook_error) from None
                log = config.hook_log
                if log is not None:
                    log.append((config.base + pos, result))
                items.append(result)
            else:
                items.append(_record(sub, pos, config))
            pos = end
        elif c == 91:  # [ list
            if depth >= config.depth_bound:
                raise _too_deep(pos, config)
            try:
                sub, pos = _items(data, pos + 1, 93, depth + 1, config)
            except RecursionError:
                raise TooDeep(pos) from None
            items.append(sub)
        elif c == 123:  # { dictionary
            if depth >= config.depth_bound:
                raise _too_deep(pos, config)
            key_offsets: list[int] = []
            try:
                sub, end = _items(data, pos + 1, 125, depth + 1, config, key_offsets)
            except RecursionError:
                raise TooDeep(pos) from None
            items.append(_dict(data, sub, key_offsets, end, config))
            pos = end
        elif c == 116:  # t
            items.append(True)
            pos += 1
        elif c == 102:  # f
            items.append(False)
            pos += 1
        elif config.lenient and c in WHITESPACE:
            pos += 1
            if offsets is not None:
                offsets.pop()  # not an item
        else:
            v, pos = _one(data, pos, depth, config)
            items.append(v)


def _record(sub: list[Any], pos: int, config: Config) -> Any:
    if not sub:
        raise SyrupDecodeError("record has no label", pos)
    label = sub[0]
    del sub[0]
    hook = config.hook
    if hook is None:
        return make_record(label, tuple(sub))
    log = config.hook_log
    if log is not None:
        key = config.base + pos
        if config.hook_results and key in config.hook_results:
            return config.hook_results[key]
    try:
        result = hook(label, sub)
    except Exception as exc:
        raise HookFailed(exc) from None
    if log is not None:
        log.append((key, result))
    return result


def _digit_atom(data: _Data, pos: int, config: Config) -> tuple[Any, int]:
    """Decode an integer, bytestring, string or symbol (they all start with digits)."""
    limit = config.max_int_digits
    j = _DIGITS.match(data, pos, pos + limit + 1).end()  # type: ignore[union-attr]
    ndigits = j - pos
    if ndigits > limit:
        raise SyrupDecodeError(f"number has more than {limit} digits", pos)
    m = data[j]
    if data[pos] == 48 and ndigits > 1 and not config.lenient:
        what = "integer" if m == 43 or m == 45 else "length"
        raise SyrupDecodeError(f"{what} has a leading zero (not canonical)", pos)
    num = parse_digits(bytes(data[pos:j]))
    if m == 43:  # +
        return num, j + 1
    if m == 45:  # -
        if num == 0 and not config.lenient:
            raise SyrupDecodeError("zero written as 0- (not canonical: write 0+)", pos)
        return -num, j + 1
    start = j + 1
    end = start + num
    n = len(data)
    if m == 58:  # :
        if end > n:
            raise _past_end("bytestring", pos, num, start, n)
        return bytes(data[start:end]), end
    if m == 34:  # "
        if end > n:
            raise _past_end("string", pos, num, start, n)
        try:
            return str(data[start:end], "utf-8"), end
        except UnicodeDecodeError as exc:
            raise _bad_utf8("string", exc, start) from None
    if m == 39:  # '
        if end > n:
            raise _past_end("symbol", pos, num, start, n)
        raw = bytes(data[start:end])
        sym = _symbols.get(raw)
        if sym is None:
            sym = _new_symbol(raw, start)
        return sym, end
    raise SyrupDecodeError(f"number followed by {_show(m)}; expected one of + - : \" '", j)


# CPython's int() refuses more than 4300 digits by default (a guard against
# its quadratic conversion); numbers within our own limit are split instead.
_INT_CHUNK: Final = 4000


def parse_digits(digits: bytes) -> int:
    """The value of a run of ASCII digits, however long."""
    if len(digits) <= _INT_CHUNK:
        return int(digits)
    low = len(digits) // 2
    high: int = parse_digits(digits[:-low]) * 10**low
    return high + parse_digits(digits[-low:])


def _float64(data: _Data, pos: int, config: Config) -> float:
    if pos + 9 > len(data):
        raise IndexError
    value: float = _unpack_d(data, pos + 1)[0]
    if value != value and not config.lenient and bytes(data[pos + 1 : pos + 9]) != _CANONICAL_NAN64:
        raise SyrupDecodeError("NaN is not the canonical D 7ff8000000000000", pos)
    return value


def _float32(data: _Data, pos: int, config: Config) -> Float32:
    if pos + 5 > len(data):
        raise IndexError
    value: float = _unpack_f(data, pos + 1)[0]
    if value != value and not config.lenient and bytes(data[pos + 1 : pos + 5]) != _CANONICAL_NAN32:
        raise SyrupDecodeError("NaN is not the canonical F 7fc00000", pos)
    return float.__new__(Float32, value)


def _new_symbol(raw: bytes, start: int) -> Symbol:
    try:
        name = raw.decode()
    except UnicodeDecodeError as exc:
        raise _bad_utf8("symbol", exc, start) from None
    sym = Symbol(name)
    if len(raw) <= _SYMBOL_CACHE_BYTES:
        if len(_symbols) >= _SYMBOL_CACHE_MAX:
            _symbols.clear()
        _symbols[raw] = sym
    return sym


def _dict(
    data: _Data, items: list[Any], offsets: list[int], end: int, config: Config
) -> dict[Any, Any]:
    """Build a dictionary from its decoded keys and values, checking canonical order."""
    if not items:
        return {}
    count = len(items)
    if count & 1:
        raise SyrupDecodeError("dictionary key without a value", end - 1)
    keys = items[0::2]
    if config.lenient:
        return _lenient_dict(keys, items[1::2], offsets[0::2])
    if count > 2:
        if config.key_order == "syrup":
            _check_syrup_order(data, offsets)
        elif config.key_order == "js" and all(type(key) is str for key in keys):
            _check_js_order(keys, offsets, "not in JavaScript's order of strings")
        else:
            try:
                _check_syrup_order(data, offsets)
            except SyrupDecodeError:
                if not all(type(key) is str for key in keys):
                    raise
                _check_js_order(keys, offsets, "in neither Syrup's order nor JavaScript's")
    result: dict[Any, Any] = {}
    try:
        for k in range(0, count, 2):  # a loop: as fast as dict(zip(...)) pure, faster compiled
            result[items[k]] = items[k + 1]
    except TypeError:
        raise _unhashable("dictionary key", keys, offsets[0::2]) from None
    if len(result) != len(keys):
        raise _conflated("dictionary keys", keys, offsets[0::2])
    return result


def _check_syrup_order(data: _Data, offsets: list[int]) -> None:
    """Keys strictly increasing in their encoded bytes (a key runs to its value)."""
    previous = b""
    # Not ``data[start : next(bounds)]`` over one iterator: mypyc 2.4 evaluates a
    # slice bound twice when ``data`` is a union (bytes | memoryview), so compiled
    # that walk skipped offsets (spec-notes/0040).
    for k in range(0, len(offsets), 2):
        start = offsets[k]
        raw = bytes(data[start : offsets[k + 1]])
        if raw <= previous:
            raise _out_of_order("dictionary key", raw == previous, start)
        previous = raw


def _check_js_order(keys: list[str], offsets: list[int], problem: str) -> None:
    """String keys strictly increasing in UTF-16 code units (JavaScript's order)."""
    previous = b""
    for key, start in zip(keys, offsets[0::2], strict=True):
        units = key.encode("utf-16-be", "surrogatepass")
        if units <= previous:
            if units == previous:
                raise _out_of_order("dictionary key", True, start)
            raise SyrupDecodeError(f"dictionary key out of order ({problem})", start)
        previous = units


def _set(
    data: _Data, items: list[Any], offsets: list[int], end: int, config: Config
) -> frozenset[Any]:
    """Build a set from its decoded items, checking canonical order."""
    if config.lenient:
        return frozenset(_lenient_dict(items, items, offsets))
    # Items must be strictly increasing in their encoded bytes; an item's
    # bytes run from its offset to the next item's (or to the closing $).
    if len(items) > 1:
        previous = b""
        for i, start in enumerate(offsets):
            raw = bytes(data[start : offsets[i + 1] if i + 1 < len(offsets) else end - 1])
            if raw <= previous:
                raise _out_of_order("set item", raw == previous, start)
            previous = raw
    try:
        result = frozenset(items)
    except TypeError:
        raise _unhashable("set item", items, offsets) from None
    if len(result) != len(items):
        raise _conflated("set items", items, offsets)
    return result


def _lenient_dict(keys: list[Any], values: list[Any], offsets: list[int]) -> dict[Any, Any]:
    """Build a dict, letting a repeated key win; still refuse keys Python would merge."""
    result: dict[Any, Any] = {}
    fingerprints: dict[Any, object] = {}
    for key, value, offset in zip(keys, values, offsets, strict=True):
        fingerprint = _fingerprint(key)
        try:
            seen = fingerprints.get(key, fingerprint)
        except TypeError:
            raise _unhashable("key or item", [key], [offset]) from None
        if seen != fingerprint:
            raise SyrupDecodeError(
                f"{key!r} equals an earlier key or item in Python but not in Syrup", offset
            )
        fingerprints[key] = fingerprint
        result[key] = value
    return result


def _fingerprint(value: object) -> object:
    """What makes two decoded keys the same Syrup value: their canonical bytes."""
    try:
        return encode(value)
    except (SyrupEncodeError, RecursionError):  # an object made by record_hook
        return (type(value), value)


def _skip_whitespace(data: bytes | memoryview, pos: int) -> int:
    n = len(data)
    while pos < n and data[pos] in WHITESPACE:
        pos += 1
    return pos


# -- errors ----------------------------------------------------------------------


def _show(byte: int) -> str:
    return repr(chr(byte)) if 32 < byte < 127 else f"byte 0x{byte:02x}"


_CLOSERS: Final = {93: "]", 125: "}", 62: ">", 36: "$"}


def _unexpected(data: _Data, pos: int) -> SyrupDecodeError:
    c = data[pos]
    if c in _CLOSERS:
        return SyrupDecodeError(f"unexpected {_show(c)} (nothing to close here)", pos)
    if c in WHITESPACE:
        return SyrupDecodeError(f"whitespace ({_show(c)}) is not allowed in strict mode", pos)
    return SyrupDecodeError(f"{_show(c)} does not start a Syrup value", pos)


def out_of_memory(size: int) -> SyrupDecodeError:
    """The error for a value whose objects did not fit in memory."""
    return SyrupDecodeError(f"out of memory decoding {size} bytes (lower Limits.max_size)", 0)


def _too_deep(pos: int, config: Config) -> Exception:
    if config.depth_bound < config.max_depth:
        return TooDeep(pos)  # MAX_NESTING: reported as running out of stack
    return SyrupDecodeError(f"nesting deeper than the limit of {config.max_depth}", pos)


def _stack_exhausted(pos: int) -> SyrupDecodeError:
    return SyrupDecodeError("nesting too deep for the Python stack (lower max_depth)", pos)


def _past_end(what: str, pos: int, length: int, start: int, n: int) -> Truncated:
    return Truncated(
        pos,
        f"{what} of {length} bytes runs past the end of the input ({n - start} bytes left)",
        length,
    )


def _bad_utf8(what: str, exc: UnicodeDecodeError, start: int) -> SyrupDecodeError:
    return SyrupDecodeError(f"{what} is not valid UTF-8 ({exc.reason})", start + exc.start)


def _out_of_order(what: str, duplicate: bool, pos: int) -> SyrupDecodeError:
    if duplicate:
        return SyrupDecodeError(f"duplicate {what}", pos)
    return SyrupDecodeError(f"{what} out of canonical order (sort by encoded bytes)", pos)


def _unhashable(what: str, items: list[Any], offsets: list[int]) -> SyrupDecodeError:
    for item, offset in zip(items, offsets, strict=True):
        try:
            hash(item)
        except TypeError:
            return SyrupDecodeError(
                f"{what} of type {type(item).__name__} cannot be used in a Python dict or set",
                offset,
            )
    return SyrupDecodeError(f"unhashable {what}", offsets[0] if offsets else 0)


def _conflated(what: str, items: list[Any], offsets: list[int]) -> SyrupDecodeError:
    seen: set[Any] = set()
    for item, offset in zip(items, offsets, strict=True):
        if item in seen:
            return SyrupDecodeError(
                f"{what}: {item!r} equals an earlier one in Python (1 == 1.0 == True) "
                "though not in Syrup",
                offset,
            )
        seen.add(item)
    return SyrupDecodeError(f"{what} that Python cannot hold apart", offsets[0])
