"""The passable data model: pass styles and pass-invariant equality."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from captp import (
    PassStyleError,
    Record,
    RemoteError,
    Symbol,
    Tagged,
    check_passable,
    far,
    make_promise,
    null,
    pass_style,
    same_value,
)
from captp._passable import describe_error, map_leaves


@far
class Thing:
    pass


@pytest.mark.parametrize(
    ("value", "style"),
    [
        (None, "undefined"),
        (null, "null"),
        (True, "boolean"),
        (0, "integer"),
        (2**300, "integer"),
        (1.0, "float"),
        ("s", "string"),
        (b"b", "bytes"),
        (Symbol("s"), "symbol"),
        ([1], "list"),
        ((1,), "list"),
        ({"a": 1}, "struct"),
        (Record(Symbol("r"), (1,)), "record"),
        (Tagged("t", 1), "tagged"),
        (ValueError("x"), "error"),
        (Thing(), "remotable"),
        (make_promise()[0], "promise"),
    ],
)
def test_pass_style_names_each_kind(value: object, style: str) -> None:
    assert pass_style(value) == style


@pytest.mark.parametrize("value", [object(), {1, 2}, bytearray(b"x"), lambda: 1, Thing])
def test_unpassable_values_are_rejected_with_a_clear_error(value: object) -> None:
    with pytest.raises(PassStyleError, match="not passable"):
        pass_style(value)


def test_check_passable_looks_inside() -> None:
    assert check_passable({"a": [1, {"b": Tagged("t", [None])}]}) == "struct"
    with pytest.raises(PassStyleError, match="struct keys must be str"):
        check_passable({"a": {1: "x"}})
    with pytest.raises(PassStyleError, match="lone surrogate"):
        check_passable(["ok", "bad \ud800"])
    with pytest.raises(PassStyleError, match="not passable"):
        check_passable([1, [2, object()]])
    deep: list[object] = []
    for _ in range(1100):
        deep = [deep]
    with pytest.raises(PassStyleError, match="deeper than"):
        check_passable(deep)


def test_python_equality_is_wrong_and_same_value_is_right() -> None:
    assert 1 == 1.0 == True  # the trap that same_value avoids
    assert not same_value(1, 1.0)
    assert not same_value(1, True)
    assert not same_value(1.0, True)
    assert not same_value(0.0, -0.0)
    assert same_value(-0.0, -0.0)
    assert same_value(math.nan, float("nan"))
    assert same_value(float("nan"), -float("nan"))  # any NaN payload
    assert not same_value("a", Symbol("a"))
    assert not same_value("a", b"a")
    assert same_value([1, (2, 3)], ((1, [2, 3])))
    assert not same_value({"a": 1}, {"a": 1.0})
    assert not same_value({"a": 1}, {"a": 1, "b": 2})
    assert same_value(Record(Symbol("r"), (1,)), Record(Symbol("r"), [1]))
    assert not same_value(Record(Symbol("r"), (1,)), Record("r", (1,)))
    assert same_value(Tagged("t", [1]), Tagged("t", (1,)))
    assert not same_value(Tagged("t", 1), Tagged("u", 1))
    assert same_value(None, None) and same_value(null, null)
    assert not same_value(None, null)
    assert not same_value(None, False)


def test_references_compare_by_identity() -> None:
    a, b = Thing(), Thing()
    assert same_value(a, a) and not same_value(a, b)


def test_errors_compare_by_name_and_message() -> None:
    assert same_value(ValueError("x"), ValueError("x"))
    assert not same_value(ValueError("x"), TypeError("x"))
    assert same_value(RemoteError("boom", "TypeError"), TypeError("boom"))


def test_symbol_record_tagged_are_immutable_values() -> None:
    s = Symbol("fetch")
    assert s == Symbol("fetch") and hash(s) == hash(Symbol("fetch"))
    assert s != "fetch" and len({s, "fetch"}) == 2
    with pytest.raises(AttributeError):
        s.name = "other"
    r = Record(Symbol("r"), [1, 2])
    assert r.fields == (1, 2)
    with pytest.raises(AttributeError):
        r.label = "x"
    with pytest.raises(AttributeError):
        Tagged("t", 1).tag = "u"
    with pytest.raises(TypeError):
        Symbol(b"bytes")  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps([s, r, null])) == [s, r, null]


def test_null_is_a_falsy_singleton_distinct_from_none() -> None:
    assert type(null)() is null
    assert not null and null is not None
    assert repr(null) == "null"


def test_error_description_has_name_and_message_only() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        assert describe_error(exc) == "KeyError: 'missing'"
    assert describe_error(RemoteError("TypeError: boom")) == "TypeError: boom"
    assert str(RemoteError("boom", "TypeError")) == "TypeError: boom"


scalars = st.one_of(
    st.none(), st.just(null), st.booleans(), st.integers(), st.floats(), st.text(),
    st.binary(), st.text().map(Symbol),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.tuples(st.text(max_size=5), inner).map(lambda t: Tagged(*t)),
    ),
    max_leaves=12,
)


@given(values)
def test_same_value_is_reflexive_on_copies(v: object) -> None:
    assert same_value(v, pickle.loads(pickle.dumps(v)))


@given(values, values)
def test_same_value_is_symmetric(a: object, b: object) -> None:
    assert same_value(a, b) == same_value(b, a)


def test_map_leaves_rebuilds_containers_around_the_leaves() -> None:
    value = (1, [2, {"k": Record(Symbol("r"), (3, Tagged("t", [4])))}], "s")
    doubled = map_leaves(value, lambda leaf: leaf * 2)
    assert doubled == (2, [4, {"k": Record(Symbol("r"), (6, Tagged("t", [8])))}], "ss")
    assert type(doubled) is tuple and type(doubled[1]) is list
    # Labels, tags and keys are not leaves; the leaf sees everything else once.
    seen: list[object] = []
    map_leaves(value, seen.append)
    assert seen == [1, 2, 3, 4, "s"]
