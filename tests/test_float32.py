"""Syrup's single floats (``F`` + 4 bytes): decoded to a Python float, passable as one.

Decision and reasons: spec-notes/0032-performance-codec-buffers.md.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import anyio
import pytest

from captp import E, check_passable, far, pass_style, same_value
from netlayers import MemoryNetwork
from ocapn import Node
from ocapn.syrup import Float32, StreamDecoder, SyrupDecodeError, decode, encode


@pytest.mark.parametrize("lenient", [False, True])
@pytest.mark.parametrize(
    "value", [1.5, -0.0, 0.1, 3.4028234663852886e38, 1e-45, math.inf, -math.inf]
)
def test_f_decodes_to_a_float_of_the_same_value_strict_and_lenient(
    value: float, lenient: bool
) -> None:
    raw = b"F" + struct.pack(">f", value)
    got = decode(raw, lenient=lenient)
    assert isinstance(got, float) and type(got) is Float32
    assert got == struct.unpack(">f", raw[1:])[0]  # widened exactly
    assert math.copysign(1.0, got) == math.copysign(1.0, value)
    assert encode(got) == raw  # and it writes back as it came


def test_f_nan_must_be_canonical_in_strict_mode_only() -> None:
    canonical = decode(b"F\x7f\xc0\x00\x00")
    assert isinstance(canonical, float) and math.isnan(canonical)
    with pytest.raises(SyrupDecodeError, match="canonical F 7fc00000"):
        decode(b"F\x7f\xc0\x00\x01")
    other = decode(b"F\x7f\xc0\x00\x01", lenient=True)
    assert isinstance(other, float) and math.isnan(other)


def test_f_cut_short_is_truncated_and_completes_in_a_stream() -> None:
    with pytest.raises(SyrupDecodeError, match="ends in the middle"):
        decode(b"[F\x3f\xc0\x00")
    decoder = StreamDecoder()
    assert decoder.feed(b"[F\x3f") == []
    assert decoder.feed(b"\xc0\x00\x00]") == [[1.5]]


def test_a_decoded_single_float_is_passable_as_a_float() -> None:
    value = decode(b"[F\x3f\xc0\x00\x00]")
    assert check_passable(value) == "list"
    assert pass_style(value[0]) == "float"  # type: ignore[index]
    assert same_value(value, [1.5])


@far
class Echo:
    def echo(self, x: Any) -> Any:
        return x

    def double(self, x: float) -> float:
        return x * 2


@pytest.mark.anyio
async def test_single_floats_cross_an_ocapn_session() -> None:
    network = MemoryNetwork()
    async with Node(network.netlayer()) as a, Node(network.netlayer()) as b:
        ref = await b.enliven(a.publish(Echo()))
        with anyio.fail_after(30):
            echoed = await E(ref).echo([Float32(2.5), Float32(0.1)])
            doubled = await E(ref).double(Float32(1.25))
    assert [type(x) for x in echoed] == [Float32, Float32] and echoed == [2.5, Float32(0.1)]
    assert type(doubled) is float and doubled == 2.5  # arithmetic gives a plain float
