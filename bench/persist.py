"""Persistence at scale: 100,000 persistent sturdyrefs, restart time and lookup cost.

Run from the repository root::

    python -m bench.persist [--refs 100000] [--restarts 5] [--pairs 300] [--cpu 1]

In one run it:

1. publishes ``--refs`` persistent counters on a node with a state
   directory, in one transaction (and one empty state directory beside it);
2. restarts a server process (``python -m bench.persist serve DIR``) on each
   directory in turn, ``--restarts`` times each, and times from spawning the
   process to its first line ("serving") and to the first answer of a call
   on a sturdyref picked at random (the client node is already running);
3. against the big directory, calls ``--pairs`` sturdyrefs never used since
   the restart (first use: a row read, decoded and restored) each followed by
   a call on the same sturdyref again (warm), enliven + call both times, from
   a fresh client session; the cost of first use is the median difference;
4. in this process, the cost of ``Node.lookup`` alone, first use vs warm.

Targets: restart to serving <= 1 s; first use <= 2 ms beyond a warm use.
Both processes are pinned to ``--cpu`` (as ``taskset -c 1`` would).  The last
line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio

from captp import E, far
from netlayers import tcp_testing_only
from ocapn import Node, Sturdyref
from ocapn.persist import Persistent

TARGET_RESTART_S: Final = 1.0
TARGET_FIRST_USE_EXTRA_MS: Final = 2.0


@far
@dataclass
class BenchCounter(Persistent, restorer="bench-counter"):
    """A small persistent object: a number and a label."""

    n: int = 0
    label: str = ""

    def incr(self) -> int:
        self.n += 1
        self._save()
        return self.n

    def value(self) -> int:
        return self.n


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# == the server process =====================================================================


async def _serve(state: str) -> None:
    started = time.perf_counter()
    async with Node(tcp_testing_only(), state=state, restorers=[BenchCounter]) as node:
        print(f"{node.location} {time.perf_counter() - started:.6f}", flush=True)
        await anyio.sleep_forever()


# == the driver =============================================================================


async def _populate(state: Path, count: int) -> tuple[list[str], float]:
    async with Node(tcp_testing_only(), state=state, restorers=[BenchCounter]) as node:
        assert node.state is not None
        started = time.perf_counter()
        with node.state.transaction():
            uris = [str(node.publish(BenchCounter(i, f"c{i}"))) for i in range(count)]
        return uris, time.perf_counter() - started


def _spawn(state: Path, cpu: int | None) -> tuple[subprocess.Popen[str], float, float]:
    """Start a server; (process, seconds to its first line, seconds it took to open inside)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.persist", "serve", str(state),
         *(["--cpu", str(cpu)] if cpu is not None else [])],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    ready = time.perf_counter() - started
    if len(line) != 2:
        proc.kill()
        raise RuntimeError(f"the server printed {line!r}")
    return proc, ready, float(line[1])


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)


async def _call(client: Node, uri: str, method: str = "value") -> float:
    started = time.perf_counter()
    await E(await client.enliven(uri))[method]()
    return time.perf_counter() - started


async def _restarts(
    big: Path, empty: Path, big_uris: list[str], empty_uri: str, rounds: int, cpu: int | None
) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {
        k: [] for k in ("big_ready", "big_answer", "big_open", "empty_ready", "empty_answer",
                        "empty_open")
    }
    rng = random.Random(1)
    for _ in range(rounds):
        for kind, state, uris in (("big", big, big_uris), ("empty", empty, [empty_uri])):
            started = time.perf_counter()
            proc, ready, opened = _spawn(state, cpu)
            try:
                async with Node(tcp_testing_only()) as client:
                    await _call(client, rng.choice(uris))
                    figures[f"{kind}_answer"].append(time.perf_counter() - started)
            finally:
                _stop(proc)
            figures[f"{kind}_ready"].append(ready)
            figures[f"{kind}_open"].append(opened)
    return figures


async def _first_use(big: Path, uris: list[str], pairs: int, cpu: int | None) -> dict[str, Any]:
    proc, _, _ = _spawn(big, cpu)
    firsts, warms = [], []
    try:
        picked = random.Random(2).sample(uris, pairs)
        async with Node(tcp_testing_only()) as client:
            await _call(client, picked[0])  # the session is up before we time anything
            for uri in picked[1:]:
                firsts.append(await _call(client, uri))
                warms.append(await _call(client, uri))
    finally:
        _stop(proc)
    extra = [(f - w) * 1e3 for f, w in zip(firsts, warms, strict=True)]
    return {
        "first_use_ms": statistics.median(firsts) * 1e3,
        "warm_ms": statistics.median(warms) * 1e3,
        "first_use_extra_ms": statistics.median(extra),
    }


async def _lookup_in_process(big: Path, uris: list[str], count: int) -> dict[str, float]:
    async with Node(tcp_testing_only(), state=big, restorers=[BenchCounter]) as node:
        swiss = [Sturdyref.from_uri(u).swiss_num for u in random.Random(3).sample(uris, count)]
        cold, warm = [], []
        for s in swiss:
            t0 = time.perf_counter()
            node.lookup(s)
            t1 = time.perf_counter()
            node.lookup(s)
            t2 = time.perf_counter()
            cold.append(t1 - t0)
            warm.append(t2 - t1)
        return {
            "lookup_first_use_us": statistics.median(cold) * 1e6,
            "lookup_warm_us": statistics.median(warm) * 1e6,
        }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ocapn-bench-persist-"))
    try:
        big, empty = root / "big", root / "empty"
        uris, populate_s = await _populate(big, args.refs)
        (empty_uri,), _ = await _populate(empty, 1)
        db_bytes = sum(p.stat().st_size for p in big.iterdir() if p.is_file())
        restarts = await _restarts(big, empty, uris, empty_uri, args.restarts, args.cpu)
        first_use = await _first_use(big, uris, args.pairs, args.cpu)
        lookup = await _lookup_in_process(big, uris, args.pairs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in restarts.items()}
    result: dict[str, Any] = {
        "bench": "persist",
        "sturdyrefs": args.refs,
        "populate_s": round(populate_s, 3),
        "state_bytes": db_bytes,
        "restart_to_serving_s": round(med["big_ready"], 4),
        "restart_to_first_answer_s": round(med["big_answer"], 4),
        "open_state_and_listen_s": round(med["big_open"], 4),
        "empty_restart_to_serving_s": round(med["empty_ready"], 4),
        "empty_restart_to_first_answer_s": round(med["empty_answer"], 4),
        "restart_ratio_100k_vs_empty": round(med["big_answer"] / med["empty_answer"], 3),
        **{k: round(v, 4) for k, v in first_use.items()},
        **{k: round(v, 2) for k, v in lookup.items()},
        "targets": {
            "restart_to_serving_s": TARGET_RESTART_S,
            "first_use_extra_ms": TARGET_FIRST_USE_EXTRA_MS,
        },
    }
    result["ok"] = (
        result["restart_to_serving_s"] <= TARGET_RESTART_S
        and result["first_use_extra_ms"] <= TARGET_FIRST_USE_EXTRA_MS
    )
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``serve DIR``, be its server process)."""
    parser = argparse.ArgumentParser(prog="python -m bench.persist")
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("state", nargs="?")
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--cpu", type=int, default=None, help="pin both processes to this CPU")
    args = parser.parse_args(argv)
    _pin(args.cpu)
    if args.mode == "serve":
        anyio.run(_serve, args.state)
        return
    result = anyio.run(_main, args)
    print(f"{args.refs} persistent sturdyrefs, {result['state_bytes'] / 1e6:.1f} MB of state, "
          f"published in {result['populate_s']:.2f} s (one transaction)")
    print(f"restart to serving        {result['restart_to_serving_s'] * 1e3:7.1f} ms "
          f"(empty state: {result['empty_restart_to_serving_s'] * 1e3:.1f} ms; "
          f"opening the state and listening inside: "
          f"{result['open_state_and_listen_s'] * 1e3:.1f} ms)")
    print(f"restart to first answer   {result['restart_to_first_answer_s'] * 1e3:7.1f} ms "
          f"(empty state: {result['empty_restart_to_first_answer_s'] * 1e3:.1f} ms; "
          f"ratio {result['restart_ratio_100k_vs_empty']:.2f})")
    print(f"enliven + call, first use {result['first_use_ms']:7.3f} ms, warm "
          f"{result['warm_ms']:.3f} ms, first use costs {result['first_use_extra_ms']:.3f} ms more")
    print(f"Node.lookup alone: first use {result['lookup_first_use_us']:.1f} us, "
          f"warm {result['lookup_warm_us']:.2f} us")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
