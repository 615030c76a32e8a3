"""The Endo marshal and its JSON text, checked against @endo/marshal's own vectors.

Part D of ``spec/endo-captp-transcript.txt`` lists, for 46 values, the body
and slots ``makeMarshal`` writes in both formats, and ten decoder checks.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from endo_transcript import load

from captp import (
    DecodeError,
    EncodeError,
    PassStyleError,
    Promise,
    Record,
    RemoteError,
    Symbol,
    Tagged,
    far,
    null,
    same_value,
)
from captp.endo import Marshal, UnknownReference, error_fields
from captp.endo._json import escape_surrogates, float_token, js_number, stringify, utf16_key


@far(name="Thing")
class Thing:
    pass


class OutOfRange(Exception):
    js_error_name = "RangeError"


THING = Thing()
FN = far(lambda: None, name="fn")
PROMISE = Promise()
SLOTS: dict[int, tuple[str, str | None]] = {
    id(THING): ("o+1", "Alleged: Thing"),
    id(FN): ("o+2", "Alleged: fn"),
    id(PROMISE): ("p+1", None),
}
BY_SLOT = {"o+1": THING, "o+2": FN, "p+1": PROMISE}

# The Python value for each Part D vector, by its name in the transcript.
VECTOR_VALUES: dict[str, Any] = {
    "null": null,
    "true": True,
    "integer 42": 42.0,
    "float -1.5": -1.5,
    "-0 (normalized to 0)": -0.0,
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "undefined": None,
    "bigint 0n": 0,
    "bigint 123n": 123,
    "bigint -123n": -123,
    "plain string": "hello",
    "empty string": "",
    "string starting with '#'": "#foo",
    "string starting with '!'": "!foo",
    "string starting with '+'": "+1",
    "string starting with '-'": "-1",
    "string starting with '$'": "$0",
    "string starting with '%'": "%x",
    "string starting with '&'": "&0",
    "string starting with '*' (reserved range !..-)": "*x",
    "string starting with '.' (outside range)": ".x",
    'registered symbol Symbol.for("foo")': Symbol("foo"),
    "well-known Symbol.asyncIterator": Symbol("@@asyncIterator"),
    "registered symbol whose name starts with @@": Symbol("@@@@x"),
    "array": [1.0, "a", null],
    "record keys sorted": {"z": 1.0, "a": 2.0, "B": 3.0, "aa": 4.0, "": 5.0},
    "record with special-char key": {"#k": 1.0, "!k": 2.0, "k": 3.0},
    "record containing '@qclass' key (capdata Hilbert hotel)": {"@qclass": "x", "y": 1.0},
    "record containing only '@qclass'": {"@qclass": "x"},
    "tagged": Tagged("copySet", [1.0, 2.0]),
    "tagged with special-char tag": Tagged("#weird", null),
    "remotable (first occurrence has iface)": THING,
    "far function": FN,
    "promise (never has iface)": PROMISE,
    "same remotable twice in one message": [THING, THING],
    "remotable + promise + far fn": {"r": THING, "p": PROMISE, "f": FN},
    "Error": Exception("boom"),
    "TypeError": TypeError("bad"),
    "Error whose message starts with '#'": Exception("#hm"),
    "nested Error in record": {"e": OutOfRange("r")},
    "CapTP method: E(x).foo(1, 2)": ["foo", [1.0, 2.0]],
    "CapTP method: E.get(x).foo": ["foo"],
    "CapTP method: E(x)(1) (function apply)": [null, [1.0]],
    "CapTP method: E(x)[Symbol.asyncIterator]()": [Symbol("@@asyncIterator"), []],
}


def make_marshal(body_format: Any = "capdata") -> Marshal:
    return Marshal(
        lambda v: SLOTS[id(v)],
        lambda slot, iface: BY_SLOT[slot],
        marshal_name="demo",
        body_format=body_format,
    )


def expected_after_round_trip(value: Any) -> Any:
    """What decoding gives back: -0 becomes 0, errors become RemoteError."""
    if isinstance(value, float) and value == 0:
        return 0.0
    if isinstance(value, BaseException):
        return RemoteError(*reversed(error_fields(value)))
    if isinstance(value, list):
        return [expected_after_round_trip(v) for v in value]
    if isinstance(value, dict):
        return {k: expected_after_round_trip(v) for k, v in value.items()}
    return value


def test_every_vector_has_a_python_value() -> None:
    assert [v.name for v in load().vectors] == list(VECTOR_VALUES)


@pytest.mark.parametrize("body_format", ["capdata", "smallcaps"])
def test_part_d_vectors_encode_byte_for_byte(body_format: str) -> None:
    marshal = make_marshal(body_format)  # one marshal: error ids count up as in the file
    for vector in load().vectors:
        body, slots = getattr(vector, body_format)
        assert marshal.encode(VECTOR_VALUES[vector.name]) == (body, slots), vector.name


@pytest.mark.parametrize("body_format", ["capdata", "smallcaps"])
def test_part_d_vectors_decode(body_format: str) -> None:
    marshal = make_marshal()
    for vector in load().vectors:
        body, slots = getattr(vector, body_format)
        decoded = marshal.decode(body, slots)
        expected = expected_after_round_trip(VECTOR_VALUES[vector.name])
        assert same_value(decoded, expected), (vector.name, decoded)


def test_part_d_decoder_checks() -> None:
    marshal = make_marshal()
    checks = load().checks
    assert len(checks) == 10
    for check in checks:
        data = check.capdata
        if check.accepted:
            marshal.decode(data["body"], data["slots"])
        else:
            with pytest.raises(DecodeError):
                marshal.decode(data["body"], data["slots"])


def test_unknown_error_names_are_kept_on_decode() -> None:
    error = make_marshal().decode('#{"#error":"m","name":"FooError"}', [])
    assert isinstance(error, RemoteError) and str(error) == "FooError: m"
    assert make_marshal().decode('{"@qclass":"@@asyncIterator"}', []) == Symbol("@@asyncIterator")
    assert make_marshal().decode('#"+007"', []) == 7


# -- JSON text as JavaScript writes it ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"), (1e21, "1e+21"), (1e-7, "1e-7"), (2.0**53, "9007199254740992"),
        (-1.5e300, "-1.5e+300"), (5e-324, "5e-324"), (100.0, "100"), (1e16, "10000000000000000"),
        (1.5e-5, "0.000015"), (1e-6, "0.000001"), (123e-20, "1.23e-18"), (-0.0, "0"),
        (1e20, "100000000000000000000"), (123456789012345678000.0, "123456789012345680000"),
        (math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"), (-2.5, "-2.5"),
    ],
)
def test_js_number(value: float, text: str) -> None:
    assert js_number(value) == text


def test_float_token_marks_the_floats_python_prints_differently() -> None:
    assert float_token(100.0) == 100 and type(float_token(100.0)) is int
    assert float_token(-0.0) == 0 and type(float_token(-0.0)) is int
    assert float_token(0.5) == 0.5
    assert float_token(1e-7) is None  # Python: 1e-07
    assert float_token(1e16) is None  # Python: 1e+16
    assert float_token(2.0**60) is None  # integral but beyond the exact range


def test_floats_python_prints_differently_take_the_slow_path() -> None:
    body, _ = make_marshal().encode({"a": [1e-7, 1e16, 2.0**54 + 4], "b": 0.5})
    assert body == '{"a":[1e-7,10000000000000000,18014398509481988],"b":0.5}'


def test_lone_surrogates_are_escaped_and_pairs_joined() -> None:
    assert escape_surrogates("a\ud800b\udfff") == "a\\ud800b\\udfff"
    assert escape_surrogates("\ud83d\ude00") == "\U0001f600"
    body, _ = make_marshal().encode(["\ud800", {"k\udc00": "\ud83d\ude00"}])
    assert body == '["\\ud800",{"k\\udc00":"\U0001f600"}]'
    assert body.encode("utf-8")
    assert make_marshal().decode(body, []) == ["\ud800", {"k\udc00": "\U0001f600"}]


def test_record_keys_sort_in_utf16_order() -> None:
    keys = {"\uffff": 1.0, "\U0001f600": 2.0, "a": 3.0}
    body, _ = make_marshal().encode(keys)
    assert body == '{"a":3,"\U0001f600":2,"\uffff":1}'  # code points would put \uffff first
    assert sorted(keys, key=utf16_key) == ["a", "\U0001f600", "\uffff"]


def test_stringify_writes_json_as_js_does() -> None:
    data = {"b": [1, 2.5, 1e-7, True, None, "\u2028\x00"], "a": {}, "big": 2**60}
    # JSON numbers are doubles in JS: 2**60 prints as JS prints that double.
    expected = '{"b":[1,2.5,1e-7,true,null,"\u2028\\u0000"],"a":{},"big":1152921504606847000}'
    assert stringify(data) == expected
    assert stringify([math.nan, math.inf]) == "[null,null]"


# -- what cannot be sent, what cannot be read ----------------------------------------------


def test_values_without_a_capdata_form_raise_clear_errors() -> None:
    marshal = make_marshal()
    with pytest.raises(EncodeError, match="bytes cannot be sent"):
        marshal.encode([b"raw"])
    with pytest.raises(EncodeError, match=r"Record .* cannot be sent"):
        marshal.encode(Record(Symbol("point"), (1.0, 2.0)))
    with pytest.raises(EncodeError, match="record keys must be strings"):
        marshal.encode({1: "one"})
    with pytest.raises(PassStyleError, match="not passable"):
        marshal.encode(object())
    with pytest.raises(EncodeError, match="cannot send references"):
        Marshal().encode(THING)
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(EncodeError, match="nested too deeply"):
        marshal.encode(deep)


@pytest.mark.parametrize(
    ("body", "slots", "message"),
    [
        ("[1,", [], "not JSON"),
        ("NaN", [], "not JSON"),
        ('{"@qclass":"slot","index":1}', ["o+1"], "out of range"),
        ('{"@qclass":"slot","index":"0"}', ["o+1"], "out of range"),
        ('{"@qclass":"slot","index":0}', ["x"], "malformed slot"),
        ('{"@qclass":"bigint","digits":"1_000"}', [], "decimal integer"),
        ('{"@qclass":"bigint","digits":12}', [], "decimal integer"),
        ('{"@qclass":"symbol"}', [], "symbol name"),
        ('{"@qclass":"tagged","tag":1,"payload":2}', [], "tag must be a string"),
        ('{"@qclass":"error","message":1,"name":"Error"}', [], "message must be a string"),
        ('{"@qclass":"hilbert"}', [], "without 'original'"),
        ('{"@qclass":"hilbert","original":1,"rest":{}}', [], "non-empty"),
        ('{"@qclass":"hilbert","original":1,"rest":{"@qclass":"hilbert","original":2}}', [],
         "must not define"),
        ('{"@qclass":7}', [], "must be a string"),
        ('{"@qclass":"nope"}', [], "unrecognized"),
        ('#"#nope"', [], "unknown smallcaps constant"),
        ('#{"#error":"m","name":"E","message":"x"}', [], "unexpected encoded error property"),
        ('#{"#tag":"t","payload":1,"x":2}', [], "unexpected properties"),
        ('#"$x"', ["o+1"], "malformed smallcaps reference"),
        ('#"-"', [], "decimal integer"),
    ],
)
def test_malformed_bodies_raise_decode_errors(body: str, slots: list[str], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        make_marshal().decode(body, slots)


def test_unknown_reference_from_the_hook_passes_through() -> None:
    def refuse(slot: str, iface: str | None) -> Any:
        raise UnknownReference(f"no {slot}")

    with pytest.raises(UnknownReference, match="no o-5"):
        Marshal(value_for_slot=refuse).decode('[{"@qclass":"slot","index":0}]', ["o-5"])


def test_json_numbers_decode_as_floats_and_bigints_as_ints() -> None:
    value = make_marshal().decode('[1,2.5,{"@qclass":"bigint","digits":"-3"}]', [])
    assert value == [1.0, 2.5, -3]
    assert [type(v) for v in value] == [float, float, int]


def test_the_same_slot_decodes_once_per_message() -> None:
    seen: list[str] = []

    def hook(slot: str, iface: str | None) -> Any:
        seen.append(slot)
        return THING

    body = '[{"@qclass":"slot","iface":"Alleged: Thing","index":0},{"@qclass":"slot","index":0}]'
    assert Marshal(value_for_slot=hook).decode(body, ["o+1"]) == [THING, THING]
    assert seen == ["o+1"]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "fields"),
    [
        (TypeError("boom"), ("TypeError", "boom")),
        (SyntaxError("bad"), ("SyntaxError", "bad")),
        (Exception("plain"), ("Error", "plain")),
        (ValueError("bad"), ("Error", "ValueError: bad")),
        (KeyError("k"), ("Error", "KeyError: 'k'")),
        (RuntimeError(), ("Error", "RuntimeError")),
        (RemoteError("r", "RangeError"), ("RangeError", "r")),
        (RemoteError("nameless"), ("Error", "nameless")),
        (OutOfRange("x"), ("RangeError", "x")),
    ],
)
def test_python_errors_travel_with_a_js_name(error: BaseException, fields: tuple[str, str]) -> None:
    assert error_fields(error) == fields


def test_error_ids_count_up_per_marshal() -> None:
    marshal = Marshal(marshal_name="captp:py")
    bodies = [marshal.encode(TypeError("x"))[0] for _ in range(2)]
    assert '"errorId":"error:captp:py#20001"' in bodies[0]
    assert '"errorId":"error:captp:py#20002"' in bodies[1]
    assert marshal.next_error_id() == "error:captp:py#20003"
