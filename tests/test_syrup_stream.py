"""Incremental Syrup decoding (unframed streams) and the ``len:`` framing (spec section 13.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _syrup_util import count_records, same

import ocapn._syrup_decode as decoder_module
import ocapn._syrup_stream as stream_module
from captp import Record, Symbol
from captp.errors import ProtocolError
from ocapn import syrup
from ocapn.syrup import (
    FrameDecoder,
    Limits,
    StreamDecoder,
    SyrupDecodeError,
    decode,
    encode,
    frame,
)

S = Symbol
DELIVER = Record(
    S("op:deliver"),
    (
        Record(S("desc:export"), (5,)),
        [S("deposit-gift"), "hello world", 42, b"\x00\x01\x02\x03", [1, 2, 3]],
        3,
        Record(S("desc:import-object"), (7,)),
    ),
)
MESSAGES = [
    DELIVER,
    Record(S("op:abort"), ("bye",)),
    Record(S("op:gc-answers"), ([1, 2, 300],)),
    {"host": "127.0.0.1", "port": "22045", S("x"): frozenset({1.5, -2})},
    b"x" * 1000,
    12345678901234567890,
    True,
    -0.0,
]


def feed_all(decoder: StreamDecoder, data: bytes, size: int) -> list[object]:
    out: list[object] = []
    for i in range(0, len(data), size):
        out += decoder.feed(data[i : i + size])
    return out


def assert_same_list(got: list[object], expected: list[object]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert same(g, e), (g, e)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_values_in_any_chunking(size: int) -> None:
    data = b"".join(encode(m) for m in MESSAGES)
    decoder = StreamDecoder()
    assert_same_list(feed_all(decoder, data, size), MESSAGES)
    assert decoder.buffered == 0
    decoder.close()


def test_record_split_byte_by_byte() -> None:
    data = encode(DELIVER)
    decoder = StreamDecoder()
    for byte in data[:-1]:
        assert decoder.feed(bytes([byte])) == []
    assert decoder.buffered == len(data) - 1
    assert decoder.feed(data[-1:]) == [DELIVER]


def test_many_values_in_one_chunk() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"1+2+[3+]<1'a>t") == [1, 2, [3], Record(S("a"), ()), True]
    assert decoder.feed(b"4+5") == [4]
    assert decoder.feed(b"+") == [5]


def test_top_level_atoms_split() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"1") == []
    assert decoder.feed(b"1") == []
    assert decoder.feed(b":hello") == []
    assert decoder.feed(b" worldD") == [b"hello world"]
    assert decoder.feed(b"\x3f\xf8\x00\x00\x00\x00\x00") == []
    assert decoder.feed(b"\x00F\x3f\xc0\x00") == [1.5]
    assert decoder.feed(b"\x0012") == [1.5]
    assert decoder.feed(b"3+") == [123]


def test_empty_feed_and_clean_close() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"") == []
    decoder.close()
    assert decoder.feed(b"t") == [True]
    decoder.close()


def test_eof_in_the_middle_of_a_value() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"1+[1+2") == [1]
    with pytest.raises(SyrupDecodeError, match="middle of a value") as info:
        decoder.close()
    assert info.value.offset == 6
    with pytest.raises(SyrupDecodeError):  # spent
        decoder.feed(b"+]")


def test_eof_in_the_middle_of_a_payload() -> None:
    decoder = StreamDecoder()
    decoder.feed(b"10:abc")
    with pytest.raises(SyrupDecodeError, match="6 bytes buffered"):
        decoder.close()


def test_errors_carry_stream_offsets() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"1+2+") == [1, 2]
    with pytest.raises(SyrupDecodeError, match="leading zero") as info:
        decoder.feed(b"[01+]")
    assert info.value.offset == 5
    assert isinstance(info.value, ProtocolError)
    with pytest.raises(SyrupDecodeError) as again:
        decoder.feed(b"1+")
    assert again.value is info.value


def test_error_found_after_scanning() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"t[1+") == [True]
    assert decoder.feed(b"2+") == []
    with pytest.raises(SyrupDecodeError, match="out of canonical order") as info:
        decoder.feed(b'{1"b1+1"a2+}]')
    assert info.value.offset == 12  # t [1+2+ { 1"b 1+ then 1"a


def test_values_before_a_fault_are_delivered_first() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"1+2+]") == [1, 2]
    with pytest.raises(SyrupDecodeError, match="unexpected") as info:
        decoder.feed(b"3+")
    assert info.value.offset == 4
    with pytest.raises(SyrupDecodeError) as again:
        decoder.close()
    assert again.value is info.value


def test_strictness_applies_to_streams() -> None:
    decoder = StreamDecoder()
    with pytest.raises(SyrupDecodeError, match="whitespace") as info:
        decoder.feed(b" 1+")
    assert info.value.offset == 0
    decoder = StreamDecoder()
    assert decoder.feed(b"1+ 2+") == [1]
    with pytest.raises(SyrupDecodeError, match="whitespace") as info:
        decoder.close()
    assert info.value.offset == 2


def test_close_reports_the_first_fault_of_an_incomplete_value() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"[1+") == []
    assert decoder.feed(b"01+5:ab") == []  # only scanned so far: the value is not whole
    with pytest.raises(SyrupDecodeError, match="leading zero") as info:
        decoder.close()
    assert info.value.offset == 3


def test_lenient_stream() -> None:
    decoder = StreamDecoder(lenient=True)
    got = feed_all(decoder, b' 1+ [ 2+\n3+ ] {1"b1+1"a2+}  ', 1)
    assert got == [1, [2, 3], {"a": 2, "b": 1}]
    decoder.close()


def test_record_hook_in_streams() -> None:
    def hook(label: object, fields: list[object]) -> object:
        return ("rec", label, *fields)

    decoder = StreamDecoder(record_hook=hook)
    data = encode([Record(S("a"), (1,)), Record(S("b"), ())])
    assert feed_all(decoder, data, 3) == [[("rec", S("a"), 1), ("rec", S("b"))]]

    def failing(label: object, fields: list[object]) -> object:
        raise ProtocolError("no such descriptor")

    decoder = StreamDecoder(record_hook=failing)
    with pytest.raises(ProtocolError, match="no such descriptor"):
        feed_all(decoder, data, 3)


def test_size_limit_applies_per_value() -> None:
    limits = Limits(max_size=20)
    decoder = StreamDecoder(limits=limits)
    value = b"x" * 15  # 18 bytes encoded
    assert feed_all(decoder, encode(value) * 5, 7) == [value] * 5
    with pytest.raises(SyrupDecodeError, match="over the size limit") as info:
        decoder.feed(b"1000:")  # a length past the limit fails at once
    assert info.value.offset == 5 * 18


def test_size_limit_without_a_length_prefix() -> None:
    decoder = StreamDecoder(limits=Limits(max_size=100))
    decoder.feed(b"[")
    with pytest.raises(SyrupDecodeError, match="over the size limit"):
        for _ in range(100):
            decoder.feed(b"1+")


def test_size_limit_for_a_value_that_arrives_whole() -> None:
    decoder = StreamDecoder(limits=Limits(max_size=10))
    with pytest.raises(SyrupDecodeError, match="over the size limit") as info:
        decoder.feed(encode(b"x" * 20) + b"1+")
    assert info.value.offset == 10


def test_depth_limit_in_streams() -> None:
    decoder = StreamDecoder(limits=Limits(max_depth=3))
    assert decoder.feed(b"[[[]]]") == [[[[]]]]
    decoder.feed(b"[[[")
    with pytest.raises(SyrupDecodeError, match="deeper than the limit of 3") as info:
        decoder.feed(b"[")
    assert info.value.offset == 6 + 3


def test_depth_bomb_in_streams() -> None:
    decoder = StreamDecoder()
    with pytest.raises(SyrupDecodeError, match="deeper than the limit"):
        for _ in range(1000):
            decoder.feed(b"[" * 100)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes left to parse at each call the stream decoder makes to parse a value."""
    if syrup.COMPILED:  # the pure-Python run checks it
        pytest.skip("counts calls through the module; compiled code calls decode_one directly")
    calls: list[int] = []
    real = decoder_module.decode_one

    def counting(data: bytes, pos: int, config: Any) -> tuple[object, int]:
        calls.append(len(data) - pos)
        return real(data, pos, config)

    monkeypatch.setattr(stream_module, "decode_one", counting)
    return calls


def test_large_bytestring_in_small_chunks_is_parsed_once(parses: list[int]) -> None:
    # Not quadratic: while the payload streams in, nothing re-parses it.
    payload = bytes(range(256)) * (4 * 1024 * 4)  # 4 MiB
    message = encode(Record(S("op:deliver"), ([S("store"), payload],)))
    decoder = StreamDecoder()
    assert feed_all(decoder, message, 1024) == [Record(S("op:deliver"), ([S("store"), payload],))]
    assert 1 <= len(parses) <= 2
    assert sum(parses) <= 2 * len(message)


def test_many_small_items_in_small_chunks_are_parsed_a_bounded_number_of_times(
    parses: list[int],
) -> None:
    value = list(range(20_000))
    decoder = StreamDecoder()
    assert feed_all(decoder, encode(value), 100) == [value]
    assert 1 <= len(parses) <= 2


# -- len: framing -----------------------------------------------------------------------


def test_frame() -> None:
    assert frame(b"<2'hi>") == b"6:<2'hi>"
    assert frame(b"") == b"0:"
    assert frame(bytearray(b"ab")) == b"2:ab"
    # A frame is a Syrup bytestring.
    assert decode(frame(b"payload")) == b"payload"


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_frames_in_any_chunking(size: int) -> None:
    payloads = [encode(m) for m in MESSAGES] + [b""]
    data = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(data), size):
        got += decoder.feed(data[i : i + size])
    assert got == payloads
    decoder.close()


def test_big_frame_waits_for_its_bytes() -> None:
    decoder = FrameDecoder()
    payload = b"z" * 100_000
    data = frame(payload)
    last = len(data) - 1
    for i in range(0, last, 1000):
        assert decoder.feed(data[i : min(i + 1000, last)]) == []
    assert decoder.buffered == last
    assert decoder.feed(data[last:]) == [payload]
    assert decoder.buffered == 0


def _frame_error(
    chunks: list[bytes], match: str, offset: int, make: Callable[[], FrameDecoder] = FrameDecoder
) -> None:
    decoder = make()
    with pytest.raises(SyrupDecodeError, match=match) as info:
        for chunk in chunks:
            decoder.feed(chunk)
    assert info.value.offset == offset
    with pytest.raises(SyrupDecodeError):
        decoder.feed(b"1:x")


def test_frame_errors() -> None:
    _frame_error([b"x"], "'x'; expected a decimal digit", 0)
    _frame_error([b"3:abc12", b"a:"], "'a'; expected a decimal digit", 7)
    _frame_error([b"<1'a>"], "'<'", 0)  # unframed Syrup sent to a framed reader
    _frame_error([b"03:abc"], "leading zero", 0)
    _frame_error([b"1:a", b"00:"], "leading zero", 3)
    _frame_error([b":"], "empty", 0)
    _frame_error([b"-1:"], "'-'", 0)
    _frame_error(
        [b"1:a1001:"], "over the limit of 1000", 3, lambda: FrameDecoder(max_frame_size=1000)
    )
    _frame_error([b"99999"], "over the limit of 1000", 0, lambda: FrameDecoder(max_frame_size=1000))


def test_frame_close() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"3:ab") == []
    assert decoder.buffered == 4
    with pytest.raises(SyrupDecodeError, match="inside a frame") as info:
        decoder.close()
    assert info.value.offset == 4
    decoder = FrameDecoder()
    assert decoder.feed(b"1:a12") == [b"a"]
    with pytest.raises(SyrupDecodeError, match="inside a frame"):
        decoder.close()
    decoder = FrameDecoder()
    assert decoder.feed(b"1:a") == [b"a"]
    decoder.close()


def test_frame_size_limit_boundary() -> None:
    decoder = FrameDecoder(max_frame_size=5)
    assert decoder.feed(b"5:abcde") == [b"abcde"]
    with pytest.raises(SyrupDecodeError, match="over the limit of 5"):
        decoder.feed(b"6:")


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_record_hook_runs_once_per_record_however_the_bytes_arrive(size: int) -> None:
    calls: list[object] = []

    def hook(label: object, fields: list[object]) -> object:
        calls.append(label)
        return Record(label, tuple(fields))

    values = [*MESSAGES, {Record(S("k"), (1,)): [Record(S("v"), ())]}]
    data = b"".join(encode(v) for v in values)
    decoder = StreamDecoder(record_hook=hook)
    assert_same_list(feed_all(decoder, data, size), values)
    assert len(calls) == sum(count_records(v) for v in values)


def test_record_hook_exception_in_a_stream() -> None:
    error = ProtocolError("unknown export")

    def hook(label: object, fields: list[object]) -> object:
        if label == S("bad"):
            raise error
        return label

    decoder = StreamDecoder(record_hook=hook)
    assert decoder.feed(b"<2'ok><3'bad><2'ok>") == [S("ok")]
    with pytest.raises(ProtocolError) as info:
        decoder.feed(b"")
    assert info.value is error
    with pytest.raises(ProtocolError):
        decoder.close()


def test_the_first_fault_is_reported_even_when_the_scanner_finds_a_later_one() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"[") == []
    with pytest.raises(SyrupDecodeError, match="out of canonical order") as info:
        decoder.feed(b"#2+1+$100000000000:")  # an unsorted set, then a length over the limit
    assert info.value.offset == 4
    decoder = StreamDecoder()
    assert decoder.feed(b"[") == []
    with pytest.raises(SyrupDecodeError, match="over the size limit") as info:
        decoder.feed(b"#1+2+$100000000000:")
    assert info.value.offset == 7


# -- lazy decoding: a value is decoded only when the consumer asks for it ---------


def test_feed_lazily_runs_no_hook_of_a_later_value_early() -> None:
    seen: list[object] = []

    def hook(label: object, fields: list[object]) -> object:
        seen.append(fields[0])
        return fields[0]

    decoder = StreamDecoder(record_hook=hook)
    values = decoder.feed_lazily(b"<1'a1+><1'a2+><1'a3+>")
    assert next(values) == 1
    assert seen == [1]  # the second and third records are not touched yet
    assert next(values) == 2
    assert seen == [1, 2]
    assert list(values) == [3]


def test_feed_lazily_abandoned_resumes_without_repeats() -> None:
    calls: list[object] = []

    def hook(label: object, fields: list[object]) -> object:
        calls.append(fields[0])
        return fields[0]

    decoder = StreamDecoder(record_hook=hook)
    values = decoder.feed_lazily(b"<1'a1+><1'a2+><1'a")
    assert next(values) == 1  # then the consumer walks away
    assert list(decoder.feed_lazily(b"3+>")) == [2, 3]
    assert calls == [1, 2, 3]
    assert decoder.buffered == 0
    decoder.close()


def test_feed_lazily_raises_a_fault_when_reached() -> None:
    decoder = StreamDecoder()
    values = decoder.feed_lazily(b"1+01+")
    assert next(values) == 1
    with pytest.raises(SyrupDecodeError) as info:
        next(values)
    assert info.value.offset == 2
    with pytest.raises(SyrupDecodeError):
        decoder.feed(b"2+")  # spent


# -- large values: parsed in place, each bytestring copied once ------------------------

BIG = bytes(range(256)) * 400  # over VIEW_THRESHOLD on its own
LARGE = Record(
    S("op:deliver"),
    (
        Record(S("desc:export"), (5,)),
        [S("store"), BIG, "björn", {"a": 1, "bb": [S("x")]}, frozenset({b"k", 2}), 10**30],
        1.5,
        Record(S("desc:answer"), (0,)),
    ),
)


def test_large_values_fed_in_pieces_decode_to_the_same_values_with_bytes_not_views() -> None:
    data = encode(LARGE) + encode(DELIVER) + encode(LARGE)
    assert len(encode(LARGE)) >= decoder_module.VIEW_THRESHOLD
    for size in (1000, 4096, 65536, len(data)):
        decoder = StreamDecoder()
        got = feed_all(decoder, data, size)
        assert_same_list(got, [LARGE, DELIVER, LARGE])
        blob = got[0].fields[1][1]  # type: ignore[attr-defined]
        assert type(blob) is bytes and blob == BIG
        assert decoder.buffered == 0
        # The buffer is free to grow again: no view of it outlives a value.
        assert decoder.feed(encode(LARGE)[:100]) == [] and decoder.buffered == 100


def test_a_large_value_fed_as_memoryviews_and_bytearrays() -> None:
    data = encode(LARGE)
    decoder = StreamDecoder()
    half = len(data) // 2
    assert decoder.feed(memoryview(data)[:half]) == []
    assert_same_list(decoder.feed(bytearray(data[half:])), [LARGE])


def test_faults_in_a_large_value_fed_in_pieces_are_those_decode_reports() -> None:
    good = encode(LARGE)
    bad_utf8 = good.replace("björn".encode(), b"bj\xffrn")
    bad_order = good.replace(b'1"a1+2"bb[1\'x]', b"2\"bb[1'x]1\"a1+")
    too_long = good.replace(b"1000000000000000000000000000000+", b"1" * 40 + b"+")
    limits = Limits(max_int_digits=30)
    for data, lim in [(bad_utf8, Limits()), (bad_order, Limits()), (too_long, limits)]:
        assert data != good
        with pytest.raises(SyrupDecodeError) as whole:
            decode(data, limits=lim)
        decoder = StreamDecoder(limits=lim)
        with pytest.raises(SyrupDecodeError) as pieces:
            feed_all(decoder, encode(DELIVER) + data, 3000)
        assert pieces.value.message == whole.value.message
        assert pieces.value.offset == whole.value.offset + len(encode(DELIVER))


def test_a_large_value_over_the_size_limit_is_refused_before_it_is_buffered() -> None:
    decoder = StreamDecoder(limits=Limits(max_size=50_000))
    with pytest.raises(SyrupDecodeError, match="over the size limit"):
        feed_all(decoder, encode(LARGE), 4096)
    assert decoder.buffered <= 50_000


def test_a_chunk_given_to_an_iterator_never_started_is_not_lost() -> None:
    decoder = StreamDecoder()
    decoder.feed_lazily(encode([1, 2]) + encode("ab")[:2])  # never iterated
    assert decoder.feed(encode("ab")[2:]) == [[1, 2], "ab"]
    lazy = decoder.feed_lazily(encode(3) + encode(4))
    assert next(lazy) == 3  # abandoned after one value
    assert decoder.feed(encode(5)) == [4, 5]


def test_a_large_frame_in_pieces_comes_out_whole_as_bytes() -> None:
    payload = encode(LARGE)
    data = frame(payload) + frame(b"<4'ping>")
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(data), 4096):
        out += decoder.feed(data[i : i + 4096])
    assert out == [payload, b"<4'ping>"] and all(type(p) is bytes for p in out)
    assert decoder.buffered == 0


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1000, 100_000])
def test_feed_lazily_in_any_chunks_gives_every_value_once_and_each_hook_once(size: int) -> None:
    calls = 0

    def hook(label: object, fields: list[object]) -> object:
        nonlocal calls
        calls += 1
        return Record(label, tuple(fields))

    values = [*MESSAGES, LARGE, *MESSAGES]
    data = b"".join(encode(v) for v in values)
    decoder = StreamDecoder(record_hook=hook)
    got: list[object] = []
    for i in range(0, len(data), size):
        lazy = decoder.feed_lazily(data[i : i + size])
        if i % (3 * size) == 0:  # sometimes take one value and abandon the rest for now
            got += [v for _, v in zip(range(1), lazy, strict=False)]
        else:
            got += list(lazy)
    got += decoder.feed(b"")
    assert_same_list(got, values)
    assert calls == sum(count_records(v) for v in values)
    assert decoder.buffered == 0
