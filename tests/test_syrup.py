"""The Syrup codec: spec vectors (sections 2, 4, 5, 11 of spec/ocapn.md), strictness, limits."""

from __future__ import annotations

import hashlib
import math
import struct
from decimal import Decimal
from enum import IntEnum
from typing import Any

import pytest
from _syrup_util import same
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from captp import Record, Symbol, null
from captp.errors import DecodeError, EncodeError, ProtocolError
from ocapn import syrup
from ocapn.syrup import (
    DEFAULT_LIMITS,
    Float32,
    Limits,
    StreamDecoder,
    SyrupDecodeError,
    SyrupEncodeError,
    decode,
    encode,
)

S = Symbol


def roundtrip(value: Any, data: bytes) -> None:
    """``value`` encodes to exactly ``data`` and ``data`` decodes back to ``value``."""
    assert encode(value) == data
    decoded = decode(data)
    assert same(decoded, value), (decoded, value)
    assert encode(decoded) == data


def rejects(data: bytes, offset: int, match: str | None = None, **options: Any) -> SyrupDecodeError:
    with pytest.raises(SyrupDecodeError, match=match) as info:
        decode(data, **options)
    assert info.value.offset == offset, str(info.value)
    return info.value


# -- section 2: the type table ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "data"),
    [
        (False, b"f"),
        (True, b"t"),
        (0, b"0+"),
        (72, b"72+"),
        (-5, b"5-"),
        (-1, b"1-"),
        (1.5, bytes.fromhex("44 3f f8 00 00 00 00 00 00")),
        (b"cat", b"3:cat"),
        (b"", b"0:"),
        ("björn", b'6"bj\xc3\xb6rn'),
        ("", b'0"'),
        ("熊", b'3"\xe7\x86\x8a'),
        (S("fetch"), b"5'fetch"),
        (S("hämta"), b"6'h\xc3\xa4mta"),
        ([1, 2, 3], b"[1+2+3+]"),
        (Record(S("person"), ("Alice", 30, True)), b"<6'person5\"Alice30+t>"),
        (frozenset({3, 2, 1}), b"#1+2+3+$"),
        ({}, b"{}"),
        ([], b"[]"),
        (frozenset(), b"#$"),
    ],
)
def test_type_table(value: Any, data: bytes) -> None:
    roundtrip(value, data)


@pytest.mark.parametrize(
    ("value", "hex_bytes"),
    [
        (-0.0, "44 80 00 00 00 00 00 00 00"),
        (0.0, "44 00 00 00 00 00 00 00 00"),
        (math.inf, "44 7f f0 00 00 00 00 00 00"),
        (-math.inf, "44 ff f0 00 00 00 00 00 00"),
        (math.nan, "44 7f f8 00 00 00 00 00 00"),
    ],
)
def test_float64_bytes(value: float, hex_bytes: str) -> None:
    roundtrip(value, bytes.fromhex(hex_bytes))


def test_every_nan_encodes_as_the_canonical_nan() -> None:
    other_nan = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]
    assert other_nan != other_nan
    assert encode(other_nan) == bytes.fromhex("44 7f f8 00 00 00 00 00 00")
    assert encode(-math.nan) == bytes.fromhex("44 7f f8 00 00 00 00 00 00")


def test_negative_zero_stays_negative() -> None:
    value = decode(encode(-0.0))
    assert type(value) is float and math.copysign(1.0, value) == -1.0


def test_negative_zero_can_be_written_as_zero() -> None:
    data = encode([-0.0, Float32(-0.0), -1.5], negative_zero=False)
    assert data == b"[D" + bytes(8) + b"F" + bytes(4) + b"D\xbf\xf8" + bytes(6) + b"]"
    assert math.copysign(1.0, decode(data)[0]) == 1.0  # type: ignore[index]


def test_float32() -> None:
    roundtrip(Float32(1.5), b"F\x3f\xc0\x00\x00")
    roundtrip(Float32(-0.0), b"F\x80\x00\x00\x00")
    roundtrip(Float32(math.inf), b"F\x7f\x80\x00\x00")
    roundtrip(Float32(math.nan), b"F\x7f\xc0\x00\x00")
    assert type(decode(b"F\x3f\xc0\x00\x00")) is Float32
    # Made from a double, the value is rounded to single precision once, up front.
    assert Float32(0.1) == struct.unpack(">f", struct.pack(">f", 0.1))[0]
    assert Float32(0.1) != 0.1
    assert Float32(1e300) == math.inf and Float32(-1e300) == -math.inf
    assert repr(Float32(1.5)) == "Float32(1.5)"


def test_integers_of_any_size() -> None:
    big = 7**20000  # about 16,900 digits: past CPython's 4300-digit str() guard
    data = encode(big)
    assert data == str(Decimal(big)).encode() + b"+"  # Decimal has no digit guard
    assert encode(-big) == data[:-1] + b"-"
    limits = Limits(max_int_digits=20_000)
    assert decode(data, limits=limits) == big
    assert decode(encode(-big), limits=limits) == -big
    assert decode(data[:-1] + b"-", limits=limits) == -big
    # Digit by digit against Python's own conversion of a smaller number.
    assert encode(10**4000 + 12345) == b"1" + b"0" * 3995 + b"12345+"
    assert encode(2**64) == b"18446744073709551616+"
    assert encode(-(2**64)) == b"18446744073709551616-"


def test_big_integer_over_the_digit_limit_is_rejected() -> None:
    data = b"1" * 4301 + b"+"
    rejects(data, 0, "more than 4300 digits")
    assert decode(data, limits=Limits(max_int_digits=4301)) == _ones(4301)


def _ones(n: int) -> int:
    ones: int = (10**n - 1) // 9
    return ones


def test_bool_is_not_an_integer() -> None:
    assert encode(True) == b"t"
    assert encode([True, 1, False, 0]) == b"[t1+f0+]"
    assert decode(b"t") is True
    assert type(decode(b"1+")) is int


def test_encode_accepts_bytes_like_tuples_and_sets() -> None:
    assert encode(bytearray(b"cat")) == b"3:cat"
    assert encode(memoryview(b"xcatx")[1:4]) == b"3:cat"
    assert encode((1, (2,))) == b"[1+[2+]]"
    assert encode({3, 1}) == b"#1+3+$"
    assert type(decode(b"[1+]")) is list
    assert type(decode(b"#1+$")) is frozenset


def test_decode_accepts_bytes_like() -> None:
    assert decode(bytearray(b"3:cat")) == b"cat"
    assert decode(memoryview(b"[3:cat]")) == [b"cat"]


def test_subclasses_encode_as_their_base_type() -> None:
    class Color(IntEnum):
        RED = 1

    class Name(str):
        def __str__(self) -> str:
            return "not the value"

    assert encode(Color.RED) == b"1+"
    assert encode(Name("ab")) == b'2"ab'
    assert encode({Name("b"): 1, "a": 2}) == b'{1"a2+1"b1+}'


def test_strings_must_be_valid_unicode() -> None:
    with pytest.raises(SyrupEncodeError, match="surrogate"):
        encode("a\ud800b")
    with pytest.raises(SyrupEncodeError, match="surrogate"):
        encode(S("\udfff"))
    with pytest.raises(SyrupEncodeError, match="surrogate"):
        encode({"\ud800": 1})


# -- section 2.1: canonical ordering -------------------------------------------------


def test_dictionary_keys_sort_by_encoded_bytes() -> None:
    roundtrip({"b": 1, "aa": 2, "a": 3}, b'{1"a3+1"b1+2"aa2+}')
    roundtrip({"9xxxxxxxx": 1, "10xxxxxxxx": 2}, b'{10"10xxxxxxxx2+9"9xxxxxxxx1+}')


def test_strings_sort_before_symbols_before_bytestrings() -> None:
    roundtrip({b"a": 3, S("a"): 2, "a": 1}, b"{1\"a1+1'a2+1:a3+}")


def test_tcp_testing_hints_order() -> None:
    roundtrip(
        {"port": "22045", "host": "127.0.0.1"},
        b'{4"host9"127.0.0.14"port5"22045}',
    )


def test_js_key_order_sorts_string_keys_by_utf16_code_units() -> None:
    # Endo's struct codec: JavaScript's string order, so "bb" before "c", and
    # U+1F600 (surrogates D83D DE00) before U+FFFF, the reverse of code points.
    value = {"c": 3, "bb": 2, "a": 1, "\uffff": 5, "\U0001f600": 4}
    data = encode(value, key_order="js")
    assert data == b'{1"a1+2"bb2+1"c3+4"\xf0\x9f\x98\x804+3"\xef\xbf\xbf5+}'
    assert encode(value) == b'{1"a1+1"c3+2"bb2+3"\xef\xbf\xbf5+4"\xf0\x9f\x98\x804+}'
    # Dictionaries with a key that is not a string keep Syrup's order.
    assert encode({S("b"): 1, "bb": 2, "c": 3}, key_order="js") == b"{1\"c3+1'b1+2\"bb2+}"
    with pytest.raises(ValueError, match="key_order"):
        encode({}, key_order="utf8")  # type: ignore[arg-type]


def test_decoding_key_order_is_chosen() -> None:
    js = b'{1"a1+2"bb2+1"c3+}'
    canonical = b'{1"a1+1"c3+2"bb2+}'
    with pytest.raises(SyrupDecodeError, match="canonical order") as info:
        decode(js)
    assert info.value.offset == 12
    assert decode(js, key_order="js") == decode(canonical) == {"a": 1, "bb": 2, "c": 3}
    with pytest.raises(SyrupDecodeError, match="not in JavaScript's order") as info:
        decode(canonical, key_order="js")
    assert info.value.offset == 11
    assert decode(js, key_order="either") == decode(canonical, key_order="either")
    with pytest.raises(SyrupDecodeError, match="neither Syrup's order nor JavaScript's"):
        decode(b'{2"bb1+1"a2+1"c3+}', key_order="either")
    with pytest.raises(SyrupDecodeError, match="duplicate dictionary key"):
        decode(b'{1"a1+2"bb2+2"bb3+}', key_order="either")
    # Non-string keys are always in Syrup's order.
    with pytest.raises(SyrupDecodeError, match="canonical order"):
        decode(b"{2\"bb2+1'a1+}", key_order="either")
    stream = StreamDecoder(key_order="either")
    assert list(stream.feed(js + canonical)) == [{"a": 1, "bb": 2, "c": 3}] * 2
    with pytest.raises(ValueError, match="key_order"):
        decode(js, key_order="bytes")  # type: ignore[arg-type]


def test_every_key_order_reads_a_struct_in_its_order() -> None:
    # Once misread by the compiled build (spec-notes/0040): each key is read
    # from its own offset to its value's, whatever the lengths around it.
    struct = {"name": "widget", "qty": 12_345, "tags": [S("a")], "z": b"", "ab": {"x": 1}}
    syrup_order, js_order = encode(struct), encode(struct, key_order="js")
    assert syrup_order != js_order
    assert decode(syrup_order) == decode(syrup_order, key_order="either") == struct
    assert decode(js_order, key_order="js") == decode(js_order, key_order="either") == struct
    with pytest.raises(SyrupDecodeError, match="canonical order") as info:
        decode(js_order)
    assert info.value.offset == js_order.index(b'3"qty')  # the first key out of place


def test_sets_sort_by_encoded_bytes() -> None:
    roundtrip(frozenset({b"kibble", b"fish", b"mice"}), b"#4:fish4:mice6:kibble$")
    roundtrip(frozenset({10, 9}), b"#10+9+$")


def _zoo() -> Record:
    # The value of ocapn/syrup's test-data/zoo.bin, with today's integers
    # (the file predates the N+ integer form).
    tabatha = {
        S("species"): b"cat",
        S("name"): "Tabatha",
        S("age"): 12,
        S("weight"): 8.2,
        S("alive?"): True,
        S("eats"): frozenset({b"mice", b"fish", b"kibble"}),
    }
    george = {
        S("species"): b"monkey",
        S("name"): "George",
        S("age"): 6,
        S("weight"): 17.24,
        S("alive?"): False,
        S("eats"): frozenset({b"bananas", b"insects"}),
    }
    return Record(b"zoo", ("The Grand Menagerie", [tabatha, george]))


def test_zoo_struct_ordering_and_set() -> None:
    data = encode(_zoo())
    assert data.startswith(b"<3:zoo19\"The Grand Menagerie[{3'age12+4'eats#4:fish4:mice6:kibble$")
    tabatha = data[data.index(b"{") : data.index(b"}") + 1]
    keys = [b"3'age", b"4'eats", b"4'name", b"6'alive?", b"6'weight", b"7'species"]
    positions = [tabatha.index(key) for key in keys]
    assert positions == sorted(positions)
    assert b"6'weightD" + struct.pack(">d", 8.2) + b"7'species3:cat}" in data
    assert b"#7:bananas7:insects$" in data
    assert same(decode(data), _zoo())
    assert encode(decode(data)) == data


def test_record_labels_may_be_any_value() -> None:
    roundtrip(Record(b"zoo", ()), b"<3:zoo>")
    roundtrip(Record("s", (1,)), b'<1"s1+>')
    roundtrip(Record([1], ()), b"<[1+]>")


# -- sections 4, 5 and 11: identities, signatures and handoff bytes ---------------------

RFC8032_1_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_1_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_2_SECRET = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")


def _key(secret: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(secret)


def _public(secret: bytes) -> bytes:
    return _key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _pk_desc(public: bytes) -> list[Any]:
    return [
        S("public-key"),
        [S("ecc"), [S("curve"), S("Ed25519")], [S("flags"), S("eddsa")], [S("q"), public]],
    ]


def _sig_val(signature: bytes) -> list[Any]:
    return [S("sig-val"), [S("eddsa"), [S("r"), signature[:32]], [S("s"), signature[32:]]]]


def _public_id(public: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(encode(_pk_desc(public))).digest()).digest()


def _session_id(id_a: bytes, id_b: bytes) -> bytes:
    low, high = sorted([id_a, id_b])
    return hashlib.sha256(hashlib.sha256(b"prot0" + low + high).digest()).digest()


def _peer(designator: str, host: str, port: str) -> Record:
    hints = {"host": host, "port": port}
    return Record(S("ocapn-peer"), (S("tcp-testing-only"), designator, hints))


def test_public_key_list_bytes() -> None:
    assert _public(RFC8032_1_SECRET) == RFC8032_1_PUBLIC
    expected = bytes.fromhex(
        "5b3130277075626c69632d6b65795b33276563635b352763757276653727456432353531395d"
        "5b3527666c616773352765646473615d5b31277133323a" + RFC8032_1_PUBLIC.hex() + "5d5d5d"
    )
    data = encode(_pk_desc(RFC8032_1_PUBLIC))
    assert data == expected
    assert len(data) == 96
    assert data.startswith(b"[10'public-key[3'ecc[5'curve7'Ed25519][5'flags5'eddsa][1'q32:")
    assert same(decode(data), _pk_desc(RFC8032_1_PUBLIC))


def test_public_ids_and_session_id() -> None:
    id_a = _public_id(_public(RFC8032_1_SECRET))
    id_b = _public_id(_public(RFC8032_2_SECRET))
    assert id_a.hex() == "1759110845e57d2058d531c139077e9cac59b03f118a42f7e83dd2259ec3038c"
    assert id_b.hex() == "12ce5287a57bb3ab1aded4cff62fc2cbb0a329181d0e21c720b318a63674c07e"
    assert _session_id(id_a, id_b).hex() == (
        "57a5b2c5ee611789dc4abbeefbf52443055a397d98aa7cc43bb2e5c7f4c492c7"
    )


def test_sig_val_list_shape() -> None:
    signature = bytes(range(64))
    data = encode(_sig_val(signature))
    assert data == (
        b"[7'sig-val[5'eddsa[1'r32:" + signature[:32] + b"][1's32:" + signature[32:] + b"]]]"
    )
    assert same(decode(data), _sig_val(signature))


def test_location_signature_and_start_session() -> None:
    location = _peer("abc", "127.0.0.1", "22045")
    signed = encode(Record(S("my-location"), (location,)))
    assert signed == (
        b"<11'my-location<10'ocapn-peer16'tcp-testing-only3\"abc"
        b'{4"host9"127.0.0.14"port5"22045}>>'
    )
    signature = _key(RFC8032_1_SECRET).sign(signed)
    assert signature[:32].hex() == (
        "4cbfd05f591809ab9aa7b3a30f5633d1fd3e76500c171399d82f3251e1aebdca"
    )
    assert signature[32:].hex() == (
        "f026532b6470b4ca0c977f407fc2e0cabe22abe07bfdade41133443f187a640f"
    )
    hello = Record(
        S("op:start-session"),
        ("1.0", _pk_desc(RFC8032_1_PUBLIC), location, _sig_val(signature)),
    )
    data = encode(hello)
    assert len(data) == 293
    assert data.startswith(
        b"<16'op:start-session3\"1.0[10'public-key[3'ecc[5'curve7'Ed25519]"
        b"[5'flags5'eddsa][1'q32:" + RFC8032_1_PUBLIC + b"]]]<10'ocapn-peer"
    )
    assert data.endswith(
        b"[7'sig-val[5'eddsa[1'r32:" + signature[:32] + b"][1's32:" + signature[32:] + b"]]]>"
    )
    assert encode(decode(data)) == data


def test_handoff_give_and_receive_bytes() -> None:
    key_a, key_b = _key(RFC8032_1_SECRET), _key(RFC8032_2_SECRET)
    public_a, public_b = _public(RFC8032_1_SECRET), _public(RFC8032_2_SECRET)
    session = _session_id(_public_id(public_a), _public_id(public_b))
    give = Record(
        S("desc:handoff-give"),
        (
            _pk_desc(public_b),
            _peer("exporter", "127.0.0.1", "9000"),
            session,
            _public_id(public_a),
            b"\x01" * 32,
        ),
    )
    give_bytes = encode(give)
    assert len(give_bytes) == 298
    assert give_bytes.startswith(b"<17'desc:handoff-give[10'public-key")
    assert hashlib.sha256(give_bytes).hexdigest() == (
        "5a9f61af023f8071db543020e667ac6ce55959de780356b853bb75f119124696"
    )
    give_sig = key_a.sign(give_bytes)
    assert give_sig.hex() == (
        "9da27a88694c2224308f852c52870d31279dc8c06e6bf480d50762a63ae5610b"
        "bfdc722e3721ca1254dcde73bc598b3a3decd0ba1eb60c4619d74a9b3fce3400"
    )
    envelope = Record(S("desc:sig-envelope"), (give, _sig_val(give_sig)))
    receive = Record(S("desc:handoff-receive"), (session, _public_id(public_b), 0, envelope))
    receive_bytes = encode(receive)
    assert len(receive_bytes) == 517
    assert hashlib.sha256(receive_bytes).hexdigest() == (
        "d306fb34db122d4a7d7638ba2bb3510e2bb453bec36bf7cd11041daeaf011ecb"
    )
    assert key_b.sign(receive_bytes).hex() == (
        "2953425ed5a97b8ab54ec44d457d2d0db70bdafae43f68724f189b60e103c54d"
        "e17d8e7525f1e8f6045cb84a87dc492c62ccc6d70e2eb10c68108f52b4f48502"
    )
    # What a verifier does: decode, re-encode, check the signature over that.
    assert encode(decode(receive_bytes)) == receive_bytes


# -- default and record_hook -----------------------------------------------------------


def test_unencodable_type_without_default() -> None:
    with pytest.raises(SyrupEncodeError, match="NoneType"):
        encode(None)
    with pytest.raises(SyrupEncodeError, match=r"captp\._passable\.Null"):
        encode([1, null])
    with pytest.raises(EncodeError):
        encode(object())


def test_default_replaces_foreign_objects() -> None:
    void = Record(S("void"), ())

    class Far:
        def __init__(self, position: int) -> None:
            self.position = position

    def default(value: object) -> object:
        if value is None:
            return void
        if isinstance(value, Far):
            # A replacement may itself hold objects that need default.
            return Record(S("desc:import-object"), (value.position, None))
        raise TypeError(f"no wire form for {type(value).__name__}")

    data = encode([None, Far(5), {"x": None}], default=default)
    assert data == b"[<4'void><18'desc:import-object5+<4'void>>{1\"x<4'void>}]"
    with pytest.raises(TypeError, match="no wire form for object"):
        encode(object(), default=default)


def test_default_returning_its_argument_is_an_error() -> None:
    with pytest.raises(SyrupEncodeError, match="object"):
        encode(object(), default=lambda value: value)


def test_default_that_never_settles_is_an_error() -> None:
    class Box:
        pass

    with pytest.raises(SyrupEncodeError, match="too deeply"):
        encode(Box(), default=lambda value: [Box()])


def test_cyclic_value_is_an_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SyrupEncodeError, match="contains itself"):
        encode(cycle)


def test_keys_that_encode_alike_are_an_error() -> None:
    nan_a, nan_b = float("nan"), float("nan")
    with pytest.raises(SyrupEncodeError, match="same bytes"):
        encode({nan_a: 1, nan_b: 2})
    with pytest.raises(SyrupEncodeError, match="same bytes"):
        encode({nan_a, nan_b})

    class Key:
        pass

    with pytest.raises(SyrupEncodeError, match="same bytes"):
        encode({Key(): 1, Key(): 2}, default=lambda value: "k")


def test_record_hook_replaces_records_innermost_first() -> None:
    seen: list[Any] = []

    def hook(label: object, fields: list[object]) -> object:
        seen.append(label)
        assert type(fields) is list
        return (label, fields)

    data = b"<10'op:deliver<11'desc:export5+>[]3+<18'desc:import-object7+>>"
    result = decode(data, record_hook=hook)
    assert seen == [S("desc:export"), S("desc:import-object"), S("op:deliver")]
    assert result == (
        S("op:deliver"),
        [(S("desc:export"), [5]), [], 3, (S("desc:import-object"), [7])],
    )


def test_record_hook_exceptions_propagate_unchanged() -> None:
    for error in (ProtocolError("bad descriptor"), IndexError("hook bug"), RecursionError("x")):

        def hook(label: object, fields: list[object], error: Exception = error) -> object:
            raise error

        with pytest.raises(type(error)) as info:
            decode(b"[<1'a>]", record_hook=hook)
        assert info.value is error


def test_records_without_hook_are_records() -> None:
    value = decode(b"<1'a1+[]>")
    assert type(value) is Record
    assert value.label == S("a") and value.fields == (1, [])
    assert decode(b"<1'a>") == Record(S("a"), ())


def test_decoded_symbols_are_shared_and_equal() -> None:
    decoded = decode(b"[5'fetch5'fetch]")
    assert isinstance(decoded, list)
    first, second = decoded
    assert first == S("fetch") and first is second


# -- strictness: every rejection, with its offset ------------------------------------------


def test_errors_are_decode_errors() -> None:
    error = rejects(b"[01+]", 1)
    assert isinstance(error, DecodeError) and isinstance(error, ProtocolError)
    assert "at byte 1" in str(error)


@pytest.mark.parametrize(
    ("data", "offset", "match"),
    [
        (b"01+", 0, "leading zero"),
        (b"[1+00+]", 3, "leading zero"),
        (b"007-", 0, "leading zero"),
        (b"0-", 0, "0-"),
        (b"[0-]", 1, "0-"),
        (b"03:cat", 0, "length has a leading zero"),
        (b'[00"]', 1, "length has a leading zero"),
        (b"[3+05'abcde]", 3, "length has a leading zero"),
    ],
)
def test_non_canonical_numbers(data: bytes, offset: int, match: str) -> None:
    rejects(data, offset, match)


@pytest.mark.parametrize(
    ("data", "offset", "match"),
    [
        (b'{1"b1+1"a2+}', 6, "out of canonical order"),
        (b'{2"aa1+1"b2+}', 7, "out of canonical order"),
        (b'{1"a1+1"a2+}', 6, "duplicate dictionary key"),
        (b"{1'a1+1\"a2+}", 6, "out of canonical order"),
        (b"#2+1+$", 3, "out of canonical order"),
        (b"#1+1+$", 3, "duplicate set item"),
        (b"[#1:a1:a$]", 5, "duplicate set item"),
    ],
)
def test_unsorted_or_duplicate_keys(data: bytes, offset: int, match: str) -> None:
    rejects(data, offset, match)


def test_non_canonical_nan() -> None:
    rejects(b"D\x7f\xf8\x00\x00\x00\x00\x00\x01", 0, "canonical")
    rejects(b"[D\xff\xf8\x00\x00\x00\x00\x00\x00]", 1, "canonical")
    rejects(b"[1+F\x7f\xc0\x00\x01]", 3, "canonical")
    assert math.isnan(decode(b"D\x7f\xf8\x00\x00\x00\x00\x00\x00"))  # type: ignore[arg-type]


def test_trailing_bytes() -> None:
    rejects(b"1+2+", 2, "trailing")
    rejects(b"[]]", 2, "trailing")
    rejects(b"t ", 1, "trailing")


@pytest.mark.parametrize(
    ("data", "offset", "what"),
    [
        (b'3"\xed\xa0\x80', 2, "string"),  # an encoded lone surrogate (U+D800)
        (b'[2"a\xff]', 4, "string"),
        (b'2"\xc0\x80', 2, "string"),  # overlong encoding of NUL
        (b"[3'a\xed\xb0\x80]", 4, "symbol"),
        (b"4'\xf4\x90\x80\x80", 2, "symbol"),  # beyond U+10FFFF
    ],
)
def test_bad_utf8(data: bytes, offset: int, what: str) -> None:
    rejects(data, offset, f"{what} is not valid UTF-8")


@pytest.mark.parametrize(
    ("data", "offset", "match"),
    [
        (b"", 0, "empty"),
        (b"[1+2+", 5, "ends in the middle"),
        (b"<3'foo", 6, "ends in the middle"),
        (b"12", 2, "ends in the middle"),
        (b'{1"a', 4, "ends in the middle"),
        (b"D\x00\x00", 3, "ends in the middle"),
        (b"F\x00", 2, "ends in the middle"),
        (b"5:ab", 0, "bytestring of 5 bytes runs past the end"),
        (b'[1+5"ab]', 3, "string of 5 bytes runs past the end"),
        (b"[12'ab]", 1, "symbol of 12 bytes runs past the end"),
    ],
)
def test_truncated_input(data: bytes, offset: int, match: str) -> None:
    rejects(data, offset, match)


def test_huge_length_claim_allocates_nothing() -> None:
    rejects(b"1000000000000000:abc", 0, "over the size limit")
    rejects(b'[1000000000000000"abc]', 1, "over the size limit")
    rejects(b'[100"abc]', 1, "runs past the end")


@pytest.mark.parametrize(
    ("data", "offset", "match"),
    [
        (b"x", 0, "'x' does not start"),
        (b"[1+?]", 3, "'?' does not start"),
        (b"\x00", 0, "byte 0x00 does not start"),
        (b"]", 0, "unexpected"),
        (b"[1+}", 3, "unexpected"),
        (b"<1'a]", 4, "unexpected"),
        (b"12x", 2, "number followed by 'x'"),
        (b"[1+ 2+]", 3, "whitespace"),
        (b" 1+", 0, "whitespace"),
        (b"[\n]", 1, "whitespace"),
        (b"<>", 0, "record has no label"),
        (b'{1"a}', 4, "key without a value"),
        (b"l1+e", 0, "'l' does not start"),  # bencode markers are not Syrup
    ],
)
def test_malformed_input(data: bytes, offset: int, match: str) -> None:
    rejects(data, offset, match)


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"{1+1+t2+}", 5),  # 1 == True
        (b"{1+1+D\x3f\xf0\x00\x00\x00\x00\x00\x002+}", 5),  # 1 == 1.0
        (b"{D\x00\x00\x00\x00\x00\x00\x00\x001+D\x80\x00\x00\x00\x00\x00\x00\x002+}", 12),
        (b"#1+t$", 3),
        (b"{<1'a1+>1+<1'at>2+}", 10),  # Record('a', (1,)) == Record('a', (True,))
    ],
)
def test_keys_python_cannot_hold_apart(data: bytes, offset: int) -> None:
    rejects(data, offset, "equals an earlier one")


def test_unhashable_keys_and_items() -> None:
    rejects(b"{[]1+}", 1, "type list")
    rejects(b"{1+2+{}3+}", 5, "type dict")
    rejects(b"#[1+]$", 1, "type list")
    rejects(b"{<1'a[]>1+}", 1, "type Record")


# -- lenient mode -----------------------------------------------------------------------


def test_lenient_accepts_whitespace_between_tokens() -> None:
    data = b" < 3'foo \n [ 1+ 2+\t] { 1\"a 1+ } # 1+ $ > \r\n"
    expected = Record(S("foo"), ([1, 2], {"a": 1}, frozenset({1})))
    assert same(decode(data, lenient=True), expected)


def test_lenient_accepts_unsorted_and_duplicate_keys() -> None:
    value = decode(b'{1"b1+1"a2+1"b3+}', lenient=True)
    assert value == {"a": 2, "b": 3}
    assert encode(value) == b'{1"a2+1"b3+}'
    assert decode(b"#2+1+2+$", lenient=True) == frozenset({1, 2})
    assert decode(b"{<1'a>1+< 1'a>2+}", lenient=True) == {Record(S("a"), ()): 2}


def test_lenient_accepts_non_canonical_numbers_and_nan() -> None:
    assert decode(b"007+", lenient=True) == 7
    assert decode(b"[0-00-]", lenient=True) == [0, 0]
    assert decode(b"03:cat", lenient=True) == b"cat"
    assert decode(b"[012'deposit-gift]", lenient=True) == [S("deposit-gift")]
    assert math.isnan(decode(b"D\xff\xff\x00\x00\x00\x00\x00\x01", lenient=True))  # type: ignore[arg-type]
    assert math.isnan(decode(b"F\xff\xc0\x00\x01", lenient=True))  # type: ignore[arg-type]


def test_lenient_still_rejects_broken_input() -> None:
    rejects(b"[1+ 2+", 6, "ends in the middle", lenient=True)
    rejects(b"5:ab", 0, "runs past the end", lenient=True)
    rejects(b'2"\xc3(', 2, "not valid UTF-8", lenient=True)
    rejects(b"[1+ 2+] x", 8, "trailing", lenient=True)
    rejects(b"{1+1+ t2+}", 6, "equals an earlier", lenient=True)
    rejects(b"{[]1+}", 1, "type list", lenient=True)
    rejects(b"1+ ?", 3, "trailing", lenient=True)
    rejects(b"[" * 129, 128, "deeper than the limit of 128", lenient=True)
    rejects(b"123456+", 0, "more than 5 digits", lenient=True, limits=Limits(max_int_digits=5))
    rejects(b"[1 +]", 2, "number followed by", lenient=True)


# -- limits -------------------------------------------------------------------------------


def test_default_limits() -> None:
    assert Limits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_depth == 128
    assert DEFAULT_LIMITS.max_size == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=0)


def test_depth_limit() -> None:
    ok = b"[" * 128 + b"]" * 128
    assert encode(decode(ok)) == ok
    rejects(b"[" * 129 + b"]" * 129, 128, "deeper than the limit of 128")
    rejects(
        b"<1'a" * 3 + b"{" + b">" * 3, 12, "deeper than the limit of 3", limits=Limits(max_depth=3)
    )
    rejects(b"[[#$]]", 2, "limit of 2", limits=Limits(max_depth=2))


def test_depth_bomb() -> None:
    rejects(b"[" * 100_000, 128, "deeper than the limit")
    rejects(b"<1'a" * 100_000, 512, "deeper than the limit")
    rejects(b"{1+" * 100_000, 384, "deeper than the limit")


def test_depth_beyond_the_python_stack_is_a_decode_error() -> None:
    limits = Limits(max_depth=1_000_000)
    for opener in (b"[", b"<1'a", b"{1+", b"#", b"[{1+"):
        with pytest.raises(SyrupDecodeError, match="Python stack") as info:
            decode(opener * 100_000, limits=limits)
        assert isinstance(info.value.offset, int) and 0 < info.value.offset < 400_000


def test_size_limit() -> None:
    limits = Limits(max_size=10)
    assert decode(b"7:abcdefg", limits=limits) == b"abcdefg"
    rejects(b"9:abcdefghi", 10, "over the size limit of 10", limits=limits)
    rejects(b"[11:abc]", 1, "length 11 is over the size limit of 10", limits=limits)
    rejects(b"[1000000000000000:]", 1, "over the size limit of 67108864")


def test_integer_digit_limit() -> None:
    limits = Limits(max_int_digits=3)
    assert decode(b"999+", limits=limits) == 999
    rejects(b"[1000+]", 1, "more than 3 digits", limits=limits)
    rejects(b"1000:", 0, "more than 3 digits", limits=limits)


def test_caches_stay_bounded() -> None:
    import ocapn._syrup_decode as decoder
    import ocapn._syrup_encode as encoder

    names = [f"sym-{i}" for i in range(10_000)]
    symbols = decode(encode([S(name) for name in names]))
    assert symbols == [S(name) for name in names]
    assert encode({name: 1 for name in names}).count(b'"') == 10_000
    for cache in (decoder._symbols, encoder._symbol_cache, encoder._key_cache):
        assert 0 < len(cache) <= 4096
    huge = "x" * 100_000
    assert decode(encode(S(huge))) == S(huge)
    assert decode(encode({huge: 1})) == {huge: 1}
    for cache in (decoder._symbols, encoder._symbol_cache, encoder._key_cache):
        assert all(len(key) <= 64 for key in cache)


def test_running_out_of_memory_is_a_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ocapn._syrup_decode as decoder

    if syrup.COMPILED:  # the pure-Python run checks it
        pytest.skip("patches the module; compiled code calls _one directly")

    def exhausted(*args: object) -> tuple[object, int]:
        raise MemoryError

    monkeypatch.setattr(decoder, "_one", exhausted)
    rejects(b"[1+]", 0, "out of memory decoding 4 bytes")


# -- decoding from a memoryview --------------------------------------------------------


def test_large_memoryviews_are_decoded_in_place_to_the_same_values() -> None:
    from ocapn._syrup_decode import VIEW_THRESHOLD, as_parsable

    blob = bytes(range(256)) * 300
    value = [
        S("store"), blob, "björn", {"a": 1, "bb": 2.5}, frozenset({1, b"x"}), 10**40, Float32(1.5)
    ]
    data = encode(value)
    assert len(data) >= VIEW_THRESHOLD
    for source in (memoryview(data), bytearray(data), memoryview(bytearray(data)).toreadonly()):
        assert type(as_parsable(source)) is memoryview  # no copy of the input
        got = decode(source)
        assert same(got, value)
        assert type(got[1]) is bytes and type(got[2]) is str  # type: ignore[index]
    # Small inputs are copied to bytes first (faster to parse); other formats are cast.
    assert type(as_parsable(memoryview(b"3:abc"))) is bytes
    assert decode(memoryview(data).cast("B", (len(data),))) == decode(data)


def test_faults_in_a_large_memoryview_are_reported_as_for_bytes() -> None:
    pad = encode(bytes(70_000))
    cases = [
        (b"[" + pad + b'{1"b1+1"a2+}]', Limits()),  # keys out of order
        (b"[" + pad + b'2"\xff\xfe]', Limits()),  # bad UTF-8
        (b"[" + pad + b"D\x7f\xf8\x00\x00\x00\x00\x00\x01]", Limits()),  # a NaN not canonical
        (b"[" + pad + b"#2+1+$]", Limits()),  # set out of order
        (b"[" + pad + b"1234567+]", Limits(max_int_digits=5)),
        (b"[" + pad + b"[[[1+]]]]", Limits(max_depth=3)),
        (b"[" + pad + b"5:ab", Limits()),  # truncated
        (b"[" + pad, Limits()),
    ]
    for data, limits in cases:
        with pytest.raises(SyrupDecodeError) as expected:
            decode(data, limits=limits)
        with pytest.raises(SyrupDecodeError) as got:
            decode(memoryview(bytearray(data)), limits=limits)
        assert got.value.message == expected.value.message
        assert got.value.offset == expected.value.offset


def test_an_encoder_with_fixed_options_writes_what_encode_writes() -> None:
    from ocapn.syrup import Encoder

    void = Record(S("void"), ())

    def default(value: object) -> object:
        return void if value is None else Record(S("desc:import-object"), (5,))

    values: list[object] = [
        Record(S("op:deliver"), (Record(S("desc:export"), (0,)), [S("ping")], 1, object())),
        {"b": None, "aa": [-0.0, Float32(1.5)], "a": b"x"},
        [1, "two", 3.0, True, frozenset({1, 2})],
    ]
    for options in [
        {},
        {"default": default},
        {"default": default, "key_order": "js"},
        {"default": default, "negative_zero": False},
    ]:
        encoder = Encoder(**options)  # type: ignore[arg-type]
        for value in values:
            try:
                expected: bytes | type[Exception] = encode(value, **options)  # type: ignore[arg-type]
            except SyrupEncodeError:
                expected = SyrupEncodeError
            if expected is SyrupEncodeError:
                with pytest.raises(SyrupEncodeError):
                    encoder.encode(value)
            else:
                assert encoder.encode(value) == expected
    with pytest.raises(ValueError, match="key_order"):
        Encoder(key_order="python")  # type: ignore[arg-type]
    nested: list[object] = []
    nested.append(nested)
    with pytest.raises(SyrupEncodeError, match="nests too deeply"):
        Encoder().encode(nested)


@pytest.mark.parametrize(
    "data",
    [b"<3'foo1+[2\"hi]>", b"{3\"abc1+1\"a2+}", b"#1+2+$", b"1+2+", b"<3'foo", b"00+", b""],
)
def test_a_decoder_with_fixed_options_decodes_as_decode_does(data: bytes) -> None:
    seen: list[Any] = []

    def hook(label: Any, fields: list[Any]) -> Any:
        seen.append(label)
        return Record(label, fields)

    options: dict[str, Any] = {"record_hook": hook, "key_order": "either",
                               "limits": syrup.Limits(max_size=64)}
    decoder = syrup.Decoder(**options)
    try:
        expected: Any = syrup.decode(data, **options)
    except syrup.SyrupDecodeError as exc:
        with pytest.raises(syrup.SyrupDecodeError) as info:
            decoder.decode(data)
        assert (info.value.message, info.value.offset) == (exc.message, exc.offset)
    else:
        assert same(decoder.decode(bytearray(data)), expected)
        assert len(seen) == 2 * (data[:1] == b"<")
