"""Property tests of the CBOR codec (the Syrup decoder's fuzzing, run on CBOR), and
Syrup and CBOR carrying every passable identically through a live session."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import Any

import anyio
import cbor2
from _syrup_util import same, symbols
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captp import E, Record, Symbol, Tagged, far, null, same_value
from netlayers import connect_pair
from ocapn import cbor, syrup
from ocapn.cbor import CBORDecodeError, Limits, decode, encode
from ocapn.wire import CBOR_PROFILE, SPEC_PROFILE, WireProfile

# SYRUP_FUZZ_SCALE=20 runs twenty times as many examples (for a long soak).
_SCALE = int(os.environ.get("SYRUP_FUZZ_SCALE", "1"))


def _examples(n: int) -> settings:
    return settings(
        max_examples=n * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


FAST = _examples(150)
SMALL_LIMITS = Limits(max_depth=8, max_size=4096, max_int_digits=50)

leaves = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(),
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0xE000), max_size=4),
    st.binary(max_size=30),
    symbols,
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=6), children, max_size=5),
        st.builds(
            lambda label, fields: Record(label, tuple(fields)),
            symbols,
            st.lists(children, max_size=4),
        ),
    )


cbor_values = st.recursive(leaves, _containers, max_leaves=20)


@FAST
@given(cbor_values)
def test_values_round_trip_exactly(value: Any) -> None:
    data = encode(value)
    decoded = decode(data)
    assert same(decoded, value)
    assert encode(decoded) == data
    # Syrup carries the same value to the same value.
    assert same(syrup.decode(syrup.encode(value)), decoded)


@FAST
@given(cbor_values)
def test_js_key_order_round_trips_through_js_and_either(value: Any) -> None:
    data = encode(value, key_order="js")
    for order in ("js", "either"):
        decoded = decode(data, key_order=order)
        assert same(decoded, value)
        assert encode(decoded, key_order="js") == data
    assert same(decode(encode(value), key_order="either"), value)


def _generic(value: Any) -> Any:
    """What a plain RFC 8949 decoder (cbor2) should read from our encoding of ``value``."""
    t = type(value)
    if t is Record:
        return cbor2.CBORTag(27, [value.label.name, *map(_generic, value.fields)])
    if t is Symbol:
        return cbor2.CBORTag(280, value.name)
    if t is list:
        return [_generic(x) for x in value]
    if t is dict:
        return {k: _generic(x) for k, x in value.items()}
    return value


@FAST
@given(cbor_values)
def test_a_plain_cbor_decoder_reads_what_we_write(value: Any) -> None:
    """The draft's first goal: any RFC 8949 decoder can parse the bytes (cbor2 here)."""
    got = cbor2.loads(encode(value))
    assert same(_untag(got), _untag(_generic(value)))


def _untag(value: Any) -> Any:
    # CBORTag compares NaN by identity: turn tags into records, which ``same`` knows.
    if type(value) is cbor2.CBORTag:
        return Record(Symbol(f"tag {value.tag}"), (_untag(value.value),))
    if type(value) in (list, tuple):  # cbor2 reads the array inside a tag as a tuple
        return [_untag(x) for x in value]
    if isinstance(value, Mapping):  # ... and a map there as a frozendict
        return {k: _untag(x) for k, x in value.items()}
    return value


def _decode_quietly(data: bytes, **options: Any) -> None:
    """Decode; any outcome but a value or CBORDecodeError fails the test."""
    try:
        value = decode(data, **options)
    except CBORDecodeError as exc:
        assert isinstance(exc.offset, int) and 0 <= exc.offset <= max(len(data), 1)
    else:
        assert encode(value) == data  # whatever is accepted is canonical


@_examples(300)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    _decode_quietly(data)
    _decode_quietly(data, limits=SMALL_LIMITS)


# Bytes that matter to the grammar, so that mutations hit interesting spots.
_SPECIAL = st.sampled_from(
    [0x00, 0x01, 0x17, 0x18, 0x19, 0x1F, 0x40, 0x41, 0x5F, 0x60, 0x7F, 0x80, 0x81, 0x9F,
     0xA0, 0xA1, 0xBF, 0xC0, 0xC2, 0xC3, 0xD8, 0xD9, 0x1B, 0xF4, 0xF5, 0xF6, 0xF7, 0xF9,
     0xFA, 0xFB, 0xFF]
)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    data = bytearray(encode(draw(cbor_values)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "replace"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "insert":
            data.insert(at, draw(_SPECIAL))
        elif kind == "delete" and data:
            del data[at]
        elif kind == "truncate":
            del data[at:]
        elif kind == "replace" and data:
            data[at] = draw(_SPECIAL)
    return bytes(data)


@_examples(300)
@given(mutated_encodings())
def test_mutated_encodings_raise_only_decode_errors(data: bytes) -> None:
    _decode_quietly(data)
    _decode_quietly(data, limits=SMALL_LIMITS)
    _decode_quietly(data, key_order="either")


@_examples(100)
@given(st.lists(cbor_values, min_size=1, max_size=4), st.lists(st.integers(0), max_size=6))
def test_frames_of_cbor_in_any_chunking(values: list[Any], cuts: list[int]) -> None:
    stream = b"".join(cbor.frame(encode(v)) for v in values)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    frames = cbor.FrameDecoder()
    got = [decode(f) for a, b in itertools.pairwise(points) for f in frames.feed(stream[a:b])]
    assert len(got) == len(values)
    assert all(same(g, v) for g, v in zip(got, values, strict=True))


# -- through a session --------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.just(null), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.binary(max_size=20), st.text(max_size=8).map(Symbol),
)
passables = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.tuples(st.text(max_size=5), inner).map(lambda t: Tagged(*t)),
    ),
    max_leaves=12,
)


@far
class Echo:
    def echo(self, *args: Any) -> list[Any]:
        return list(args)


async def _echo(profile: WireProfile, values: list[Any]) -> list[Any]:
    async with connect_pair(bootstrap_b=Echo(), profile=profile) as (a, _):
        boot = await a.bootstrap()
        result: list[Any] = await E(boot).echo(*values)
        return result


@_examples(25)
@given(st.lists(passables, min_size=1, max_size=8))
def test_syrup_and_cbor_carry_every_passable_identically(values: list[Any]) -> None:
    by_syrup = anyio.run(_echo, SPEC_PROFILE, values)
    by_cbor = anyio.run(_echo, CBOR_PROFILE, values, backend="trio")
    for sent, s, c in zip(values, by_syrup, by_cbor, strict=True):
        assert same_value(sent, s), (sent, s)
        assert same_value(sent, c), (sent, c)
