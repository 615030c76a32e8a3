"""The OCapN CBOR codec: Endo's vectors byte for byte, canonical writing, strict reading."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from _cbor_vectors import ATOMS, MESSAGES
from _syrup_util import same

from captp import Record, Symbol
from captp.errors import DecodeError, EncodeError
from ocapn import cbor, syrup
from ocapn.cbor import CBORDecodeError, CBOREncodeError, Limits, decode, encode

# -- an independent reader of CBOR bytes into Endo's diagnostic notation --------------


def diag(data: bytes) -> str:
    """Endo's diagnostic notation of ``data`` (a separate reader from ``ocapn.cbor``)."""
    text, pos = _diag(data, 0)
    assert pos == len(data)
    return text


def _diag(d: bytes, p: int) -> tuple[str, int]:
    b = d[p]
    major, ai = b >> 5, b & 31
    if major == 7:
        if ai == 27:
            x = struct.unpack(">d", d[p + 1 : p + 9])[0]
            if math.isnan(x):
                return "NaN", p + 9
            if math.isinf(x):
                return ("Infinity" if x > 0 else "-Infinity"), p + 9
            return repr(x), p + 9
        return {20: "false", 21: "true", 22: "null", 23: "undefined"}[ai], p + 1
    if ai < 24:
        n, p = ai, p + 1
    else:
        size = 1 << (ai - 24)
        n, p = int.from_bytes(d[p + 1 : p + 1 + size], "big"), p + 1 + size
    if major == 0:
        return str(n), p
    if major == 1:
        return str(-1 - n), p
    if major == 2:
        return f"h'{d[p : p + n].hex()}'", p + n
    if major == 3:
        return json.dumps(d[p : p + n].decode(), ensure_ascii=False), p + n
    if major == 6:
        inner, p = _diag(d, p)
        return f"{n}({inner})", p
    items = []
    for _ in range(n if major == 4 else 2 * n):
        item, p = _diag(d, p)
        items.append(item)
    if major == 4:
        return "[" + ", ".join(items) + "]", p
    pairs = [f"{items[i]}: {items[i + 1]}" for i in range(0, len(items), 2)]
    return "{" + ", ".join(pairs) + "}", p


# -- Endo's vectors -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "hex_"), ATOMS, ids=[h[:24] for _, h in ATOMS])
def test_atoms_match_endo_byte_for_byte(value: Any, hex_: str) -> None:
    assert encode(value).hex() == hex_
    assert same(decode(bytes.fromhex(hex_)), value)


@pytest.mark.parametrize(("name", "value", "expected"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_messages_match_endo_snapshots(name: str, value: Any, expected: str) -> None:
    data = encode(value)
    assert diag(data) == expected
    decoded = decode(data)
    assert same(decoded, value)
    assert encode(decoded) == data


# -- the mapping --------------------------------------------------------------------


def test_every_integer_is_a_bignum() -> None:
    for n in (0, 1, 23, 24, 255, 256, 2**64, 2**200, -1, -24, -(2**64) - 1, -(2**300)):
        data = encode(n)
        assert data[0] == (0xC2 if n >= 0 else 0xC3)
        magnitude = n if n >= 0 else -1 - n
        raw = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")
        assert data.endswith(raw) and len(data) == 2 + (len(raw) >= 24) + len(raw)
        assert decode(data) == n


def test_record_label_is_text_and_symbol_is_tag_280() -> None:
    record = Record(Symbol("op:abort"), ("why",))
    assert encode(record) == bytes.fromhex("d81b82686f703a61626f7274") + b"\x63why"
    assert encode(Symbol("op:abort"))[:3] == b"\xd9\x01\x18"


def test_python_types_encode_as_their_plain_kind() -> None:
    assert encode((1, 2)) == encode([1, 2])
    assert encode(bytearray(b"ab")) == encode(memoryview(b"ab")) == encode(b"ab")
    assert encode(syrup.Float32(1.5)) == encode(1.5)  # OCapN has doubles only
    assert encode(-0.0, negative_zero=False) == encode(0.0)


def test_keys_sort_by_utf8_bytes_or_as_javascript() -> None:
    astral, private = "\U0001f600", "\ue000"  # UTF-8 order: private < astral; JS: astral first
    value = {astral: 1, private: 2, "b": 3, "aa": 4}
    spec = encode(value)
    js = encode(value, key_order="js")
    assert list(_dict(decode(spec))) == ["aa", "b", private, astral]
    assert list(_dict(decode(js, key_order="js"))) == ["aa", "b", astral, private]
    for data in (spec, js):
        assert decode(data, key_order="either") == value
    with pytest.raises(CBORDecodeError, match="out of order"):
        decode(js)
    with pytest.raises(CBORDecodeError, match="out of order"):
        decode(spec, key_order="js")


def _dict(value: object) -> dict[str, Any]:
    assert type(value) is dict
    return value


def test_default_hook_and_refusals() -> None:
    class Point:
        pass

    assert decode(encode(Point(), default=lambda p: [1, 2])) == [1, 2]
    refused: list[Any] = [
        frozenset({1}),
        {1: 2},
        Record("label", ()),
        Record(b"label", ()),
        "\ud800",
        Symbol("\udfff"),
        None,
        Point(),
    ]
    for value in refused:
        with pytest.raises(CBOREncodeError) as info:
            encode(value)
        assert isinstance(info.value, EncodeError)
    with pytest.raises(CBOREncodeError, match="returned"):
        encode(Point(), default=lambda p: p)
    nested: list[Any] = []
    nested.append(nested)
    with pytest.raises(CBOREncodeError, match="too deeply"):
        encode(nested)


def test_encoding_numbers_for_netlayers() -> None:
    from netlayers import np

    assert (cbor.ENCODING_SYRUP, cbor.ENCODING_CBOR) == (np.SYRUP, 1)
    assert cbor.ENCODING_CBOR not in np.ENCODINGS  # np offers no CBOR yet (its module's call)


# -- strict reading: every rule, with its offset ---------------------------------------

REJECTED: list[tuple[str, str, int, str]] = [
    # (what, hex, offset, message)
    ("non-minimal 1-byte head", "7801" + "61", 0, "non-canonical head"),
    ("non-minimal 2-byte head", "590017" + "00" * 23, 0, "non-canonical head"),
    ("non-minimal 4-byte head", "9a000000ff" + "f4" * 255, 0, "non-canonical head"),
    ("non-minimal 8-byte head", "5b00000000ffffffff", 0, "non-canonical head"),
    ("non-minimal head in a bignum", "c2580101", 1, "non-canonical head"),
    ("non-minimal head of a record array", "d81b9801" + "6161", 2, "non-canonical head"),
    ("indefinite array", "9ff4ff", 0, "indefinite"),
    ("indefinite byte string", "5f4101ff", 0, "indefinite"),
    ("indefinite text", "7f6161ff", 0, "indefinite"),
    ("indefinite map", "bf6161f4ff", 0, "indefinite"),
    ("reserved additional information", "5c", 0, "reserved"),
    ("unsorted map keys", "a26162f46161f4", 4, "out of order"),
    ("RFC 8949 length-first key order", "a26162f462616af4", 4, "out of order"),
    ("duplicate map keys", "a26161f46161f5", 4, "repeated map key"),
    ("non-text map key", "a1c24101f4", 1, "map key is a text string"),
    ("bignum with a leading zero", "c24100", 2, "leading zero"),
    ("long bignum with a leading zero", "c3420001", 2, "leading zero"),
    ("bignum over a text string", "c26161", 1, "holds a byte string"),
    ("bare unsigned integer", "01", 0, "bignum"),
    ("bare negative integer", "20", 0, "bignum"),
    ("unknown tag 0", "c06161", 0, "unknown tag 0"),
    ("unknown tag 24 (embedded CBOR)", "d81841f4", 0, "unknown tag 24"),
    ("unknown tag 55799", "d9d9f7f4", 0, "unknown tag 55799"),
    ("unknown tag 281", "d901196161", 0, "unknown tag 281"),
    ("symbol over bytes", "d901184161", 3, "symbol"),
    ("record over a map", "d81ba0", 2, "holds an array"),
    ("record with no label", "d81b80", 2, "has a label"),
    ("record with a symbol label", "d81b81d901186161", 3, "label is a text string"),
    ("null", "f6", 0, "null"),
    ("undefined", "f7", 0, "undefined"),
    ("half float", "f93c00", 0, "float64 only"),
    ("single float", "fa3fc00000", 0, "float64 only"),
    ("simple value 16", "f0", 0, "simple value 16"),
    ("two-byte simple value", "f820", 0, "simple value 24"),
    ("break", "ff", 0, "break"),
    ("non-canonical NaN", "fb7ff8000000000001", 1, "NaN"),
    ("signalling NaN", "fb7ff4000000000000", 1, "NaN"),
    ("bad UTF-8", "62c328", 1, "UTF-8"),
    ("UTF-8 surrogate", "63eda080", 1, "UTF-8"),
    ("trailing bytes", "f4f4", 1, "trailing"),
    ("empty input", "", 0, "empty"),
    ("truncated head", "d9", 1, "ends in the middle"),
    ("truncated float", "fb3ff0", 3, "ends in the middle"),
    ("length past the end", "45010203", 0, "past the end"),
    ("items missing", "85f4f4", 3, "ends in the middle"),
    ("count past the end", "9818f4f4f4", 0, "past the end"),
    # The second label (or symbol) is cut short where the first, a known one, ended.
    ("record label past the end", "82d81b8160d81b8161", 8, "past the end"),
    ("symbol past the end", "82d9011860d9011861", 8, "past the end"),
]


@pytest.mark.parametrize(
    ("what", "hex_", "offset", "message"), REJECTED, ids=[r[0] for r in REJECTED]
)
def test_non_canonical_input_is_refused_where_it_breaks(
    what: str, hex_: str, offset: int, message: str
) -> None:
    with pytest.raises(CBORDecodeError, match=message) as info:
        decode(bytes.fromhex(hex_))
    assert info.value.offset == offset
    assert isinstance(info.value, DecodeError)


def test_limits_are_the_syrup_limits() -> None:
    deep = b"\x81" * 9 + b"\xf4"
    assert decode(deep, limits=Limits(max_depth=9)) is not None
    with pytest.raises(CBORDecodeError, match="deeper than the limit of 8") as info:
        decode(deep, limits=Limits(max_depth=8))
    assert info.value.offset == 8
    record_depth = b"\xd8\x1b\x82\x61r" * 3 + b"\xf4"
    with pytest.raises(CBORDecodeError, match="deeper"):
        decode(record_depth, limits=Limits(max_depth=2))
    with pytest.raises(CBORDecodeError, match="size limit of 10"):
        decode(encode("x" * 20), limits=Limits(max_size=10))
    big = encode(10**60)
    assert decode(big, limits=Limits(max_int_digits=61)) == 10**60
    with pytest.raises(CBORDecodeError, match="max_int_digits"):
        decode(big, limits=Limits(max_int_digits=20))
    # The parser keeps its own stack: depth is bounded by the limit, not by Python's.
    assert decode(b"\x81" * 100_000 + b"\xf4", limits=Limits(max_depth=100_000)) is not None


def test_record_hook_sees_symbol_labels_innermost_first() -> None:
    seen: list[str] = []

    def hook(label: Symbol, fields: list[Any]) -> Any:
        seen.append(label.name)
        return (label.name, *fields)

    data = encode(Record(Symbol("outer"), (Record(Symbol("inner"), (1,)), 2)))
    assert decode(data, record_hook=hook) == ("outer", ("inner", 1), 2)
    assert seen == ["inner", "outer"]

    def boom(label: Symbol, fields: list[Any]) -> Any:
        raise KeyError("from the hook")

    with pytest.raises(KeyError, match="from the hook"):
        decode(data, record_hook=boom)


def test_decode_takes_bytes_like_only() -> None:
    assert decode(bytearray(b"\xf5")) is True
    assert decode(memoryview(b"\xf4")) is False
    with pytest.raises(TypeError):
        decode("f5")  # type: ignore[arg-type]
