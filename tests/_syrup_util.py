"""Helpers shared by the Syrup tests: type-aware equality and value strategies."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from captp import Record, Symbol, same_value
from ocapn.syrup import Float32

_pack_d = struct.Struct(">d").pack


def same(a: Any, b: Any) -> bool:
    """Syrup equality: like ``captp.same_value``, and also for ``Float32`` and ``frozenset``.

    ``same_value`` covers the OCapN passables; Syrup adds single floats and sets,
    which it does not know about.  Types must match exactly (1, 1.0, True and
    Float32(1.0) all differ), NaN equals NaN, -0.0 differs from 0.0.
    """
    if type(a) is not type(b):
        return False
    if type(a) is float or type(a) is Float32:
        return (a != a and b != b) or _pack_d(a) == _pack_d(b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is Record:
        return same(a.label, b.label) and same(list(a.fields), list(b.fields))
    if type(a) is dict:
        return len(a) == len(b) and _matched(list(a.items()), list(b.items()))
    if type(a) is frozenset:
        return len(a) == len(b) and _matched(list(a), list(b))
    if type(a) in (bool, int, str, bytes, Symbol):
        return same_value(a, b)
    raise TypeError(f"not a decoded Syrup value: {type(a).__name__}")


def _matched(xs: list[Any], ys: list[Any]) -> bool:
    """Each x has its own ``same`` partner among ys (NaN keys defeat hash lookups)."""
    left = list(ys)
    for x in xs:
        for i, y in enumerate(left):
            if same_pair(x, y):
                del left[i]
                break
        else:
            return False
    return not left


def same_pair(x: Any, y: Any) -> bool:
    if type(x) is tuple and type(y) is tuple:  # a dict item
        return same(x[0], y[0]) and same(x[1], y[1])
    return same(x, y)


# -- hypothesis strategies for Syrup values --------------------------------------

symbols = st.text(max_size=12).map(Symbol)

# Leaves that can also be dictionary keys and set items: no NaN (two NaN
# objects are distinct Python keys that encode to the same bytes).
hashable_leaves = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=False),
    st.floats(width=32, allow_nan=False).map(Float32),
    st.binary(max_size=20),
    st.text(max_size=20),
    symbols,
)

leaves = st.one_of(
    hashable_leaves,
    st.just(float("nan")),
    st.just(Float32("nan")),
)


def _hashable_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(Record, symbols, st.lists(children, max_size=4).map(tuple)),
        st.frozensets(children, max_size=4),
    )


hashable_values = st.recursive(hashable_leaves, _hashable_containers, max_leaves=8)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(hashable_values, children, max_size=4),
        st.builds(
            Record,
            st.one_of(symbols, hashable_leaves),
            st.lists(children, max_size=4).map(tuple),
        ),
        st.frozensets(hashable_values, max_size=4),
    )


syrup_values = st.recursive(leaves, _containers, max_leaves=20)


def count_records(value: object) -> int:
    """How many records ``value`` holds, counting nested ones and labels."""
    if isinstance(value, Record):
        return 1 + count_records(value.label) + sum(count_records(f) for f in value.fields)
    if isinstance(value, (list, frozenset)):
        return sum(count_records(x) for x in value)
    if isinstance(value, dict):
        return sum(count_records(k) + count_records(v) for k, v in value.items())
    return 0
