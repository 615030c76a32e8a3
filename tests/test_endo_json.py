"""captp.endo._json's fast paths (the C encoder and scanner called directly) agree with json."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from captp.endo import _json

REFERENCE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda x: _json.float_token(x) or 0),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(json_values)
def test_dumps_writes_what_the_json_encoder_writes(value: Any) -> None:
    assert _json.dumps(value) == _json.escape_surrogates(REFERENCE.encode(value))


@given(json_values)
def test_loads_reads_back_what_dumps_writes(value: Any) -> None:
    text = REFERENCE.encode(value)
    assert _json.loads(text) == json.loads(text)
    assert _json.loads(f" \n{text}\t ") == json.loads(text)  # whitespace around: the slow path


@pytest.mark.parametrize("text", ["", " ", "[1,2", "[1] x", "{'a':1}", "01", "[1,]"])
def test_loads_refuses_what_json_refuses_with_the_same_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        _json.loads(text)
    assert (got.value.msg, got.value.pos) == (expected.value.msg, expected.value.pos)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "-Infinity"])
def test_loads_refuses_the_non_json_constants(text: str) -> None:
    with pytest.raises(ValueError, match="is not JSON"):
        _json.loads(text)


def test_dumps_refuses_non_finite_floats() -> None:
    with pytest.raises(ValueError):
        _json.dumps([float("nan")])


# -- marshal's fast paths for plain lists agree with its general path -----------------

plain_lists = st.lists(
    st.recursive(
        st.text() | st.booleans() | st.floats() | st.none() | st.integers(-5, 5),
        lambda inner: st.lists(inner, max_size=3) | st.tuples(inner),
        max_leaves=10,
    ),
    max_size=4,
)


@given(plain_lists)
def test_marshal_fast_paths_agree_with_the_general_path(value: list[Any]) -> None:
    from captp.endo import marshal as module

    fast = module.Marshal()
    body, slots = fast.encode(value)
    original = module._plain_out, module._plain_in
    try:
        module._plain_out = lambda items: None
        module._plain_in = lambda items: None
        general = module.Marshal()
        assert (body, slots) == general.encode(value)
        expected = general.decode(body, slots)
    finally:
        module._plain_out, module._plain_in = original
    got = fast.decode(body, slots)
    from captp import same_value

    assert same_value(got, expected)
