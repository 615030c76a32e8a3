"""OCapN CBOR beside Syrup: encode and decode of the usual op:deliver and of a 1 MB value.

Run from the repository root, pinned to one core::

    taskset -c 1 python -m bench.cbor            # --quick for a shorter run

Both codecs run in the same process, in interleaved rounds (each round times
every codec on every value), so the ratios survive a noisy machine: the
figures to compare are the medians of the per-round ratios, Syrup time over
CBOR time (above 1: CBOR is faster).  Beside them, ``cbor2`` (its C
extension): ``loads`` alone (no OCapN checks, no records), and ``loads`` plus
``dumps`` and a compare, the least a strict decoder built on cbor2 must do
(``spec-notes/0033`` says why ``ocapn.cbor`` decodes in Python instead).
Target: CBOR decode at least 1.5x faster than Syrup decode, like with like:
the first line says which build of the codecs runs (``ocapn.cbor.COMPILED``);
when it is the compiled one (``python -m ocapn.compile``), the benchmark
runs again in a child process with ``OCAPN_PURE=1`` and prints the pure
figures too.  The last line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from typing import Any, Final

import cbor2

from captp import Record, Symbol
from ocapn import _native, cbor, syrup

S = Symbol
DECODE_TARGET = 1.5

# The ~100-byte op:deliver of bench/codec.py.
DELIVER = Record(
    S("op:deliver"),
    (
        Record(S("desc:export"), (5,)),
        [S("deposit-gift"), "hello world", 42, b"\x00\x01\x02\x03", [1, 2, 3]],
        3,
        Record(S("desc:import-object"), (7,)),
    ),
)


def _one_mb_value() -> Any:
    """About 1 MB of CapTP-shaped data: rows of structs with strings, integers, bytes."""
    rows = [
        {
            "id": n,
            "name": f"customer-{n:06d}",
            "balance": 1_000_000 - 37 * n,
            "active": n % 3 != 0,
            "tags": ["retail", S("gold") if n % 5 == 0 else S("silver")],
            "key": bytes((n * 7 + i) % 256 for i in range(16)),
        }
        for n in range(10_600)
    ]
    return Record(
        S("op:deliver"),
        (
            Record(S("desc:export"), (9,)),
            [S("load-rows"), rows],
            4,
            Record(S("desc:import-object"), (2,)),
        ),
    )


def _time(fn: Callable[[], object], number: int) -> float:
    """Seconds per call over ``number`` calls, the collector paused (as timeit does)."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        if was:
            gc.enable()


# Tags 2/3 swapped with the unused tags 6/7, so that cbor2 keeps bignums apart
# from bare integers; then re-encoded and compared.  This is the least a strict
# decoder built on cbor2 must do (it still misses bare integers and NaN bits,
# and builds no records): the floor of that design, measured.
_SWAP: Final = bytes.maketrans(b"\xc2\xc3\xc6\xc7", b"\xc6\xc7\xc2\xc3")


def _cbor2_roundtrip(data: bytes) -> bool:
    swapped = data.translate(_SWAP)
    return bool(cbor2.dumps(cbor2.loads(swapped)) == swapped)


def _ratios(syrup_times: list[float], cbor_times: list[float]) -> list[float]:
    return [s / c for s, c in zip(syrup_times, cbor_times, strict=True)]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
        pinned = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pinned = []
    rounds = 5 if quick else 15
    cases = {
        "deliver": (DELIVER, 2000 if quick else 5000),
        "1mb": (_one_mb_value(), 1 if quick else 2),
    }
    figures: dict[str, Any] = {}
    print(f"codec build: {_native.REASON}")
    for name, (value, number) in cases.items():
        s_bytes = syrup.encode(value)
        c_bytes = cbor.encode(value)
        assert syrup.decode(s_bytes) == cbor.decode(c_bytes)
        assert cbor.encode(cbor.decode(c_bytes)) == c_bytes
        ops: dict[str, Callable[[], object]] = {
            "syrup_encode": partial(syrup.encode, value),
            "cbor_encode": partial(cbor.encode, value),
            "syrup_decode": partial(syrup.decode, s_bytes),
            "cbor_decode": partial(cbor.decode, c_bytes),
            "cbor2_loads_unchecked": partial(cbor2.loads, c_bytes),
            "cbor2_roundtrip_floor": partial(_cbor2_roundtrip, c_bytes),
        }
        samples: dict[str, list[float]] = {op: [] for op in ops}
        for fn in ops.values():  # warm up
            _time(fn, max(1, number // 10))
        for _ in range(rounds):
            for op, fn in ops.items():
                samples[op].append(_time(fn, number))
        med = {op: statistics.median(xs) for op, xs in samples.items()}
        dec_ratios = _ratios(samples["syrup_decode"], samples["cbor_decode"])
        enc_ratios = _ratios(samples["syrup_encode"], samples["cbor_encode"])
        figures[name] = {
            "syrup_bytes": len(s_bytes),
            "cbor_bytes": len(c_bytes),
            **{f"{op}_us": round(t * 1e6, 2) for op, t in med.items()},
            "decode_speedup": round(statistics.median(dec_ratios), 2),
            "encode_speedup": round(statistics.median(enc_ratios), 2),
        }
        f = figures[name]
        print(
            f"{name:8} {len(s_bytes):>8} B Syrup {len(c_bytes):>8} B CBOR | "
            f"decode Syrup {f['syrup_decode_us']:>10} us CBOR {f['cbor_decode_us']:>10} us "
            f"(x{f['decode_speedup']}) | encode Syrup {f['syrup_encode_us']:>10} us "
            f"CBOR {f['cbor_encode_us']:>10} us (x{f['encode_speedup']}) | "
            f"cbor2 unchecked {f['cbor2_loads_unchecked_us']} us, "
            f"cbor2 round-trip floor {f['cbor2_roundtrip_floor_us']} us"
        )
    met = all(figures[n]["decode_speedup"] >= DECODE_TARGET for n in figures)
    pure: dict[str, Any] | None = None
    if cbor.COMPILED:  # the same again, pure Python, so that each build is compared with itself
        print("-- the same with OCAPN_PURE=1 (pure Python), in a child process:")
        child = subprocess.run(
            [sys.executable, "-m", "bench.cbor", *argv],
            env={**os.environ, "OCAPN_PURE": "1"},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        lines = child.stdout.strip().splitlines()
        print("\n".join(lines[1:-1]))
        pure = json.loads(lines[-1])
    print(
        json.dumps(
            {
                "bench": "cbor",
                "python": platform.python_version(),
                "cbor2": metadata.version("cbor2"),
                "compiled": cbor.COMPILED,
                "cpus": pinned,
                "rounds": rounds,
                "decode_target": DECODE_TARGET,
                "decode_target_met": met,
                **figures,
                "pure": pure,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
