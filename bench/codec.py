"""Syrup codec benchmark: Syrup next to cbor2 and json on the same CapTP-shaped data.

Run from the repository root: ``python -m bench.codec`` (``--quick`` for a
shorter run; ``--base DIR`` also loads the Syrup modules of the checkout in
DIR under another name and compares the two on an OCapN ping round trip's
messages and on the op:deliver, in alternating rounds timed in CPU time;
``--pure`` does the same with this checkout's own pure-Python modules, to
compare the compiled build, ``python -m ocapn.compile``, with them).  The
first line says which build runs (``ocapn.syrup.COMPILED``).  Every figure comes from
this one run, so compare ratios, not absolute numbers across machines.
Times are medians over repeats, each repeat timing many calls with the
garbage collector paused (as ``timeit`` does).  MB is 10**6 bytes of encoded output.

The other formats get the natural equivalent of each message: for cbor2 the
draft OCapN CBOR mapping (records as tag 27 over ``[label, *fields]``,
symbols as tag 280 over their name, bytes as bytes); for json, records as
``[label, *fields]`` lists, symbols as strings and bytes as base64 text.
The last line of output is one JSON object holding every figure.
"""

from __future__ import annotations

import base64
import functools
import json
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2

from captp import Record, Symbol
from ocapn import _native, syrup

S = Symbol
ENCODE_TARGET_US = 5.0
DECODE_TARGET_US = 8.0

# The ~100-byte op:deliver the targets are stated for.
DELIVER = Record(
    S("op:deliver"),
    (
        Record(S("desc:export"), (5,)),
        [S("deposit-gift"), "hello world", 42, b"\x00\x01\x02\x03", [1, 2, 3]],
        3,
        Record(S("desc:import-object"), (7,)),
    ),
)

# A message carrying a 4 KiB bytestring (a file chunk sent to a store).
BLOB = bytes((i * 7 + 3) % 256 for i in range(4096))
DELIVER_4K = Record(
    S("op:deliver"),
    (
        Record(S("desc:export"), (12,)),
        [S("write-chunk"), 40960, BLOB],
        8,
        Record(S("desc:import-object"), (3,)),
    ),
)

# A message carrying a nested struct: dicts, lists, strings and integers.
ORDER = {
    "id": 918273645,
    "customer": {
        "name": "Ada Lovelace",
        "email": "ada@example.org",
        "address": {"street": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH"},
        "tags": ["vip", "engine", "notes"],
    },
    "lines": [
        {"sku": f"SKU-{n:05d}", "qty": n % 7 + 1, "price": 1999 + 250 * n, "gift": n % 3 == 0}
        for n in range(6)
    ],
    "total": 28_944,
    "currency": "GBP",
    "notes": "Leave with the porter; do not bend.",
}
DELIVER_STRUCT = Record(
    S("op:deliver"),
    (
        Record(S("desc:answer"), (4,)),
        [S("place-order"), ORDER],
        9,
        Record(S("desc:import-object"), (11,)),
    ),
)

# The two messages of an OCapN ``E(ref).ping()`` round trip, as the wire
# writes them: the question (the resolver is a reference the wire's default()
# describes) and the answer (``None`` becomes ``<void>`` through default()).
_VOID = Record(S("void"), ())
_RESOLVER = Record(S("desc:import-object"), (5,))


class _Reference:
    """Stands for a live reference: not a Syrup value, so default() describes it."""


def _wire_default(value: object) -> object:
    return _VOID if value is None else _RESOLVER


PING_QUESTION = Record(
    S("op:deliver"), (Record(S("desc:export"), (0,)), [S("ping")], 1, _Reference())
)
PING_ANSWER = Record(
    S("op:deliver"), (Record(S("desc:export"), (5,)), [S("fulfill"), None], False, False)
)

MESSAGES: dict[str, Any] = {
    "deliver": DELIVER,
    "deliver_4k_bytes": DELIVER_4K,
    "deliver_struct": DELIVER_STRUCT,
}


def to_cbor(value: Any) -> Any:
    """The draft OCapN CBOR form of a Syrup value (records tag 27, symbols tag 280)."""
    if type(value) is Record:
        return cbor2.CBORTag(27, [to_cbor(value.label), *(to_cbor(f) for f in value.fields)])
    if type(value) is Symbol:
        return cbor2.CBORTag(280, value.name)
    if type(value) is list:
        return [to_cbor(x) for x in value]
    if type(value) is dict:
        return {k: to_cbor(v) for k, v in value.items()}
    return value


def to_json(value: Any) -> Any:
    """A JSON form: records as lists, symbols as strings, bytes as base64."""
    if type(value) is Record:
        return [to_json(value.label), *(to_json(f) for f in value.fields)]
    if type(value) is Symbol:
        return value.name
    if type(value) is bytes:
        return base64.b64encode(value).decode("ascii")
    if type(value) is list:
        return [to_json(x) for x in value]
    if type(value) is dict:
        return {k: to_json(v) for k, v in value.items()}
    return value


def json_encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def measure(fn: Callable[[], object], repeats: int, budget: float) -> float:
    """Median seconds per call of ``fn``."""
    timer = timeit.Timer(fn)
    number = 1
    while True:  # calibrate: one repeat should take about `budget` seconds
        elapsed = timer.timeit(number)
        if elapsed >= budget / 4:
            break
        number *= 4
    number = max(1, int(number * budget / max(elapsed, 1e-9)))
    return statistics.median(t / number for t in timer.repeat(repeat=repeats, number=number))


def _load_base_syrup(base: str) -> tuple[Any, Any, Any]:
    """The ``_syrup_encode``, ``_syrup_decode`` and ``_syrup_stream`` modules of a checkout,
    renamed and loaded from source (so pure Python, whatever is compiled there)."""
    import pathlib
    import types

    package = types.ModuleType("_base_syrup")
    package.__path__ = []
    sys.modules["_base_syrup"] = package
    loaded = {}
    for name in ("_syrup_types", "_syrup_encode", "_syrup_decode", "_syrup_stream"):
        path = pathlib.Path(base, "ocapn", f"{name}.py")
        source = path.read_text().replace("from ocapn._syrup_", "from _base_syrup._syrup_")
        module = types.ModuleType(f"_base_syrup.{name}")
        module.__file__ = str(path)
        sys.modules[module.__name__] = module
        exec(compile(source, str(path), "exec"), module.__dict__)
        loaded[name] = module
    return loaded["_syrup_encode"], loaded["_syrup_decode"], loaded["_syrup_stream"]


def _ping_side_cpu_us(encode: Any, stream: Any, rounds: int) -> list[float]:
    """Per round: CPU us of one encode and one stream decode of the ping messages."""
    ping = [PING_QUESTION, PING_ANSWER]
    data = [encode.encode(m, default=_wire_default) for m in ping]

    def hook(label: object, fields: list[object]) -> object:
        return Record(label, tuple(fields))

    decoder = stream.StreamDecoder(record_hook=hook, key_order="either")

    def side() -> None:
        for m in ping:
            encode.encode(m, default=_wire_default)
        for chunk in data:
            for _ in decoder.feed_lazily(chunk):
                pass

    timer = timeit.Timer(side, timer=time.process_time)
    return [timer.timeit(2000) / 2000 / 2 * 1e6 for _ in range(rounds)]


def _deliver_cpu_us(encode: Any, decode: Any) -> tuple[float, float]:
    """CPU us of one encode and of one decode of the op:deliver."""
    data = encode.encode(DELIVER)
    enc = timeit.Timer(lambda: encode.encode(DELIVER), timer=time.process_time).timeit(2000)
    dec = timeit.Timer(lambda: decode.decode(data), timer=time.process_time).timeit(2000)
    return enc / 2000 * 1e6, dec / 2000 * 1e6


def compare_with_base(base: str) -> dict[str, Any]:
    """This checkout's Syrup against another's, rounds alternating, CPU time."""
    from ocapn import _syrup_decode, _syrup_encode, _syrup_stream

    implementations = {
        "this": (_syrup_encode, _syrup_decode, _syrup_stream),
        "base": _load_base_syrup(base),
    }
    figures = ("ping", "deliver_encode", "deliver_decode")
    times: dict[str, dict[str, list[float]]] = {
        name: {f: [] for f in figures} for name in implementations
    }
    for round_number in range(9):
        order = ["this", "base"] if round_number % 2 else ["base", "this"]
        for name in order:
            encode, decode, stream = implementations[name]
            times[name]["ping"] += _ping_side_cpu_us(encode, stream, 1)
            enc, dec = _deliver_cpu_us(encode, decode)
            times[name]["deliver_encode"].append(enc)
            times[name]["deliver_decode"].append(dec)
    result: dict[str, Any] = {}
    for figure in figures:
        this, there = times["this"][figure], times["base"][figure]
        ratios = [t / b for t, b in zip(this, there, strict=True)]
        key = "" if figure == "ping" else f"{figure}_"
        result[f"this_{key}us" if key else "this_us_per_side"] = round(statistics.median(this), 3)
        result[f"base_{key}us" if key else "base_us_per_side"] = round(statistics.median(there), 3)
        result[f"{key}this_over_base"] = round(statistics.median(ratios), 3)
        result[f"{key}this_over_base_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    return result


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    repeats, budget = (5, 0.01) if quick else (9, 0.04)
    started = time.perf_counter()

    hook_calls = 0

    def hook(label: object, fields: list[object]) -> object:
        nonlocal hook_calls
        hook_calls += 1
        return Record(label, tuple(fields))

    formats: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any], Callable[[Any], Any]]]
    formats = {
        "syrup": (syrup.encode, syrup.decode, lambda v: v),
        "cbor2": (cbor2.dumps, cbor2.loads, to_cbor),
        "json": (json_encode, json.loads, to_json),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for fmt, (encode, decode, convert) in formats.items():
        results[fmt] = {}
        for name, message in MESSAGES.items():
            value = convert(message)
            data = encode(value)
            assert data == encode(decode(data)) or fmt == "json", (fmt, name)
            enc = measure(functools.partial(encode, value), repeats, budget)
            dec = measure(functools.partial(decode, data), repeats, budget)
            results[fmt][name] = {
                "bytes": len(data),
                "encode_us": enc * 1e6,
                "decode_us": dec * 1e6,
                "encode_msgs_per_s": 1 / enc,
                "decode_msgs_per_s": 1 / dec,
                "encode_mb_per_s": len(data) / enc / 1e6,
                "decode_mb_per_s": len(data) / dec / 1e6,
            }
        # The mix: one of each message, back to back.
        total_bytes = sum(r["bytes"] for r in results[fmt].values())
        enc_s = sum(r["encode_us"] for r in results[fmt].values()) / 1e6
        dec_s = sum(r["decode_us"] for r in results[fmt].values()) / 1e6
        results[fmt]["mix"] = {
            "bytes": total_bytes,
            "encode_us": enc_s * 1e6,
            "decode_us": dec_s * 1e6,
            "encode_msgs_per_s": 3 / enc_s,
            "decode_msgs_per_s": 3 / dec_s,
            "encode_mb_per_s": total_bytes / enc_s / 1e6,
            "decode_mb_per_s": total_bytes / dec_s / 1e6,
        }

    # The target figures, measured again on their own, plus the paths the
    # message layer will use: a record_hook, and a stream read in 1 KiB chunks.
    deliver_bytes = syrup.encode(DELIVER)
    encode_us = measure(lambda: syrup.encode(DELIVER), repeats * 2, budget) * 1e6
    decode_us = measure(lambda: syrup.decode(deliver_bytes), repeats * 2, budget) * 1e6
    hook_us = measure(lambda: syrup.decode(deliver_bytes, record_hook=hook), repeats, budget) * 1e6
    stream_data = b"".join(syrup.encode(m) for m in MESSAGES.values()) * 20
    chunks = [stream_data[i : i + 1024] for i in range(0, len(stream_data), 1024)]

    def read_stream() -> None:
        decoder = syrup.StreamDecoder()
        for chunk in chunks:
            decoder.feed(chunk)
        decoder.close()

    stream_s = measure(read_stream, repeats, budget * 4)

    # Syrup's share of an OCapN ping round trip, per side: each side encodes
    # one of the two messages and decodes the other, with default() and a
    # record_hook as the OCapN wire uses them, through a StreamDecoder.
    ping = [PING_QUESTION, PING_ANSWER]
    ping_bytes = [syrup.encode(m, default=_wire_default) for m in ping]
    ping_stream = syrup.StreamDecoder(record_hook=hook, key_order="either")

    def ping_encode() -> None:
        for m in ping:
            syrup.encode(m, default=_wire_default)

    def ping_decode() -> None:
        for data in ping_bytes:
            for _ in ping_stream.feed_lazily(data):
                pass

    ping_side_us = (
        measure(ping_encode, repeats * 2, budget) + measure(ping_decode, repeats * 2, budget)
    ) / 2 * 1e6

    print(f"Syrup codec benchmark (Python {platform.python_version()}, {platform.machine()})")
    print(f"codec build: {_native.REASON}")
    print("median per message; MB = 10**6 encoded bytes\n")
    header = f"{'message':18s} {'format':6s} {'bytes':>6s} {'enc us':>8s} {'dec us':>8s}"
    header += f" {'enc MB/s':>9s} {'dec MB/s':>9s} {'enc msg/s':>10s} {'dec msg/s':>10s}"
    print(header)
    for name in [*MESSAGES, "mix"]:
        for fmt in formats:
            r = results[fmt][name]
            print(
                f"{name:18s} {fmt:6s} {r['bytes']:6d} {r['encode_us']:8.2f} {r['decode_us']:8.2f}"
                f" {r['encode_mb_per_s']:9.1f} {r['decode_mb_per_s']:9.1f}"
                f" {r['encode_msgs_per_s']:10.0f} {r['decode_msgs_per_s']:10.0f}"
            )
    print()
    print(f"op:deliver ({len(deliver_bytes)} bytes):")
    print(
        f"  encode {encode_us:.2f} us  = {encode_us / ENCODE_TARGET_US:.2f} x the "
        f"{ENCODE_TARGET_US:g} us target"
    )
    print(
        f"  decode {decode_us:.2f} us  = {decode_us / DECODE_TARGET_US:.2f} x the "
        f"{DECODE_TARGET_US:g} us target"
    )
    print(f"  decode with a record_hook {hook_us:.2f} us")
    per_message_stream_us = stream_s / 60 * 1e6
    print(
        f"StreamDecoder, the mix x20 in 1 KiB chunks: {len(stream_data) / stream_s / 1e6:.1f} MB/s,"
        f" {per_message_stream_us:.2f} us per message"
    )
    print(
        f"OCapN ping round trip, Syrup per side (one encode with default(), one stream"
        f" decode with a record_hook): {ping_side_us:.2f} us"
    )
    comparison: dict[str, Any] | None = None
    if "--base" in argv or "--pure" in argv:
        if "--pure" in argv:
            base, label = str(Path(__file__).resolve().parent.parent), "this checkout's pure Python"
        else:
            base = label = argv[argv.index("--base") + 1]
        comparison = compare_with_base(base)
        comparison["base"] = label
        print(
            f"against {label}: ping round trip, Syrup CPU per side"
            f" {comparison['this_us_per_side']:.2f} us here, {comparison['base_us_per_side']:.2f}"
            f" us there: {comparison['this_over_base']:.3f} of it"
            f" (rounds {comparison['this_over_base_range'][0]:.3f}"
            f"-{comparison['this_over_base_range'][1]:.3f});"
            f" op:deliver encode {comparison['deliver_encode_this_over_base']:.3f},"
            f" decode {comparison['deliver_decode_this_over_base']:.3f} of it"
        )
    elapsed = time.perf_counter() - started
    print(f"(run took {elapsed:.1f} s)")
    summary = {
        "bench": "codec",
        "python": platform.python_version(),
        "compiled": syrup.COMPILED,
        "quick": quick,
        "deliver_bytes": len(deliver_bytes),
        "deliver_encode_us": round(encode_us, 3),
        "deliver_decode_us": round(decode_us, 3),
        "deliver_encode_target_ratio": round(encode_us / ENCODE_TARGET_US, 3),
        "deliver_decode_target_ratio": round(decode_us / DECODE_TARGET_US, 3),
        "deliver_decode_with_hook_us": round(hook_us, 3),
        "stream_mb_per_s": round(len(stream_data) / stream_s / 1e6, 2),
        "stream_us_per_message": round(per_message_stream_us, 3),
        "ping_round_trip_syrup_us_per_side": round(ping_side_us, 3),
        "against_base": comparison,
        "results": {
            fmt: {name: {k: round(v, 3) for k, v in r.items()} for name, r in by_msg.items()}
            for fmt, by_msg in results.items()
        },
        "seconds": round(elapsed, 1),
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv[1:])
