"""Engine benchmark: CapTP round trips over the in-memory pipe, against asyncio queues.

Run from the repository root::

    python -m bench.engine [--seconds 2] [--uvloop] [--base DIR] [--other DIR ...]

It measures, on one event loop:

* sequential round trips (``await E(boot).ping()``), beside the same
  request/response through two ``asyncio.Queue`` objects (the floor: two
  task switches, no encoding); the difference is what CapTP costs (the
  *overhead*);
* the time of 10,000 concurrent calls;
* a 5-step pipelined chain against 5 awaited calls, in process (where
  pipelining only saves event-loop iterations) and over a pipe that holds
  each message 1 ms, as a network link would.

Times are CPU time of the process (``time.process_time``): on a shared
machine the wall time also counts the other processes' turns.

``--base DIR`` runs the same measurements on another checkout of the project
(e.g. ``git archive 48d35e4 | tar -x -C /tmp/base``) in a child process, in
rounds that alternate with this checkout's (each checkout in a child of its
own), so that the machine's drift hits both alike; the ratios are medians of
per-round ratios.  ``--other DIR`` adds more checkouts the same way (e.g.
the previous ``main``), reported beside the others; ``--pure`` adds this
checkout once more with ``OCAPN_PURE=1`` (its pure-Python build beside the
compiled one, if there is one: ``python -m ocapn.compile``).  Each checkout's
build (compiled or pure, and why) is printed with its figures.  Issue 9's targets are
relative to the base 48d35e4: the overhead and the 10k concurrent calls at
most 0.56 of the base's (54 -> 30 us and 0.54 -> 0.3 s on the machine the
issue was measured on).  The last line of output is one JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from captp import E, far
from netlayers import connect_pair

# Issue 9: at most this fraction of the base 48d35e4's figure, measured in the same run.
TARGET_RATIO = 0.56

ROUNDS = 7


@far
class Node:
    def next(self) -> Node:
        return self


@far
class Server:
    def __init__(self) -> None:
        self.node = Node()

    def ping(self) -> None:
        return None

    def echo(self, x: Any) -> Any:
        return x

    def start(self) -> Node:
        return self.node


async def queue_round_trips(seconds: float) -> float:
    """CPU microseconds per request/response through two asyncio queues."""
    requests: asyncio.Queue[int | None] = asyncio.Queue()
    responses: asyncio.Queue[int] = asyncio.Queue()

    async def server() -> None:
        while (item := await requests.get()) is not None:
            responses.put_nowait(item)

    task = asyncio.create_task(server())
    n = 0
    start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(200):
            requests.put_nowait(n)
            await responses.get()
            n += 1
        if time.process_time() >= deadline:
            break
    elapsed = time.process_time() - start
    requests.put_nowait(None)
    await task
    return elapsed / n * 1e6


async def captp_round_trips(boot: Any, seconds: float) -> float:
    """CPU microseconds per sequential ``await E(boot).ping()``."""
    n = 0
    start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(200):
            await E(boot).ping()
            n += 1
        if time.process_time() >= deadline:
            break
    return (time.process_time() - start) / n * 1e6


async def concurrent_calls(boot: Any, count: int) -> float:
    """CPU seconds for ``count`` concurrent echo calls to all settle."""
    start = time.process_time()
    promises = [E(boot).echo(i) for i in range(count)]
    for i, p in enumerate(promises):
        assert await p == i
    return time.process_time() - start


async def chain(boot: Any, steps: int, pipelined: bool, repeat: int) -> float:
    """Wall microseconds for a chain of ``steps`` calls, pipelined or awaited one by one."""
    start = time.perf_counter()
    for _ in range(repeat):
        if pipelined:
            x = E(boot).start()
            for _ in range(steps - 1):
                x = E(x).next()
            await x
        else:
            y = await E(boot).start()
            for _ in range(steps - 1):
                y = await E(y).next()
    return (time.perf_counter() - start) / repeat * 1e6


async def compare_chains(boot: Any, rounds: int, repeat: int) -> tuple[float, float]:
    """Median microseconds of a 5-step chain, pipelined and awaited, measured alternately."""
    await asyncio.sleep(0.05)  # let the gc batches of earlier work go out first
    gc.collect()
    piped, awaited = [], []
    for _ in range(max(rounds, 1) * 2 + 1):
        piped.append(await chain(boot, 5, True, repeat))
        awaited.append(await chain(boot, 5, False, repeat))
    return statistics.median(piped), statistics.median(awaited)


async def serve_commands() -> None:
    """The child: a pipe pair, and one measurement per command read from stdin."""
    loop = asyncio.get_running_loop()
    async with connect_pair(bootstrap_b=Server()) as (a, _b):
        boot = await a.bootstrap()
        await captp_round_trips(boot, 0.2)  # warm up
        print("ready", _build(), flush=True)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                return
            answer: dict[str, float]
            if line[0] == "rt":
                seconds = float(line[1])
                gc.collect()
                q = await queue_round_trips(seconds / 2)
                c = await captp_round_trips(boot, seconds / 2)
                answer = {"queue_rt_us": q, "captp_rt_us": c, "overhead_us": c - q}
            elif line[0] == "burst":
                await asyncio.sleep(0.05)  # the gc batches of earlier work first
                gc.collect()
                answer = {"concurrent_10k_s": await concurrent_calls(boot, 10_000)}
            elif line[0] == "chains":
                piped, awaited = await compare_chains(boot, 2, 100)
                answer = {"chain5_pipelined_us": piped, "chain5_awaited_us": awaited}
            else:
                raise ValueError(f"unknown command {line!r}")
            print(json.dumps(answer), flush=True)


async def latency_chains() -> dict[str, float]:
    """A 5-step chain over a pipe that holds each message 1 ms."""
    async with connect_pair(bootstrap_b=Server(), latency=0.001) as (a, _b):
        boot = await a.bootstrap()
        piped, awaited = await compare_chains(boot, 1, 10)
    return {"chain5_pipelined_1ms_us": piped, "chain5_awaited_1ms_us": awaited}


def _build() -> str:
    """Which build of the hot modules runs in this process (older checkouts: by their files)."""
    for chooser in ("captp._native", "ocapn._native"):
        try:
            reason: str = importlib.import_module(chooser).REASON
        except ImportError:
            continue
        return reason
    return "pure Python (no compiled build in this checkout)"


class _Child:
    """One checkout's benchmark in a child process, answering commands."""

    def __init__(self, cwd: str | None, uvloop: bool, pure: bool = False) -> None:
        if cwd is None:
            command = [sys.executable, "-m", "bench.engine", "--child"]
            env = {**os.environ, "OCAPN_PURE": "1"} if pure else None
        else:
            # Run this file (another checkout's copy may not know --child),
            # through runpy so that its folder does not go first on sys.path.
            run_file = "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='__main__')"
            command = [sys.executable, "-c", run_file, os.path.abspath(__file__), "--child"]
            env = {**os.environ, "PYTHONPATH": cwd}
        if uvloop:
            command.append("--uvloop")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self._in, self._out = self.process.stdin, self.process.stdout
        ready, _, self.build = self._out.readline().strip().partition(" ")
        if ready != "ready":
            raise RuntimeError(f"the benchmark child in {cwd or 'this checkout'} did not start")

    def ask(self, command: str) -> dict[str, float]:
        self._in.write(command + "\n")
        self._in.flush()
        answer: dict[str, float] = json.loads(self._out.readline())
        return answer

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._in.write("quit\n")
            self._in.flush()
        self.process.wait(30)


def _interleaved(children: dict[str, _Child], command: str, rounds: int) -> list[dict[str, Any]]:
    """Each round, every child answers ``command`` in turn (the order rotating)."""
    names = list(children)
    out: list[dict[str, Any]] = []
    for number in range(rounds):
        shift = number % len(names)
        row: dict[str, Any] = {}
        for name in names[shift:] + names[:shift]:
            row[name] = children[name].ask(command)
        out.append(row)
    return out


PURE = "this, OCAPN_PURE=1"
"""The name of this checkout's pure-Python run (``--pure``)."""


def measure(
    seconds: float, uvloop: bool, checkouts: dict[str, str | None]
) -> dict[str, Any]:
    """Figures of each checkout (by name), and ratios to ``base`` if it is one of them."""
    children = {
        name: _Child(cwd, uvloop, pure=name == PURE) for name, cwd in checkouts.items()
    }
    try:
        rts = _interleaved(children, f"rt {seconds / ROUNDS}", ROUNDS)
        bursts = _interleaved(children, "burst", 3)
        chains = _interleaved(children, "chains", 1)
    finally:
        for child in children.values():
            child.close()
    figures: dict[str, Any] = {}
    for name in checkouts:
        q = statistics.median(r[name]["queue_rt_us"] for r in rts)
        c = statistics.median(r[name]["captp_rt_us"] for r in rts)
        piped = chains[0][name]["chain5_pipelined_us"]
        awaited = chains[0][name]["chain5_awaited_us"]
        figures[name] = {
            "build": children[name].build,
            "queue_rt_us": round(q, 2),
            "captp_rt_us": round(c, 2),
            "overhead_us": round(statistics.median(r[name]["overhead_us"] for r in rts), 2),
            "concurrent_10k_s": round(
                statistics.median(b[name]["concurrent_10k_s"] for b in bursts), 3
            ),
            "chain5_pipelined_us": round(piped, 1),
            "chain5_awaited_us": round(awaited, 1),
            "pipelining_speedup": round(awaited / piped, 2),
        }
    if "base" in checkouts:
        for name in checkouts:
            if name == "base":
                continue
            figures[name]["overhead_vs_base"] = round(statistics.median(
                r[name]["overhead_us"] / r["base"]["overhead_us"] for r in rts
            ), 3)
            figures[name]["concurrent_10k_vs_base"] = round(statistics.median(
                b[name]["concurrent_10k_s"] / b["base"]["concurrent_10k_s"] for b in bursts
            ), 3)
    return figures


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="round-trip time per checkout, over all rounds")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (if installed)")
    parser.add_argument("--base", help="compare with the checkout in this directory")
    parser.add_argument("--other", action="append", default=[], metavar="DIR",
                        help="also measure the checkout in this directory (repeatable)")
    parser.add_argument("--pure", action="store_true",
                        help="also measure this checkout with OCAPN_PURE=1")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        gc.collect()
        if args.uvloop:
            import uvloop

            uvloop.run(serve_commands())
        else:
            asyncio.run(serve_commands())
        return

    checkouts: dict[str, str | None] = {"this": None}
    if args.pure:
        checkouts[PURE] = None
    if args.base:
        checkouts["base"] = os.path.abspath(args.base)
    for other in args.other:
        checkouts[os.path.abspath(other)] = os.path.abspath(other)
    figures: dict[str, Any] = {
        "bench": "engine",
        "loop": "uvloop" if args.uvloop else "asyncio",
        "python": sys.version.split()[0],
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "target_vs_base": TARGET_RATIO,
        "checkouts": measure(args.seconds, args.uvloop, checkouts),
    }
    latency = asyncio.run(latency_chains())  # wall time on a slow link: the loop matters little
    figures["chain5_1ms"] = {k: round(v, 1) for k, v in latency.items()}
    for name, f in figures["checkouts"].items():
        print(f"{name}: {f['build']}")
        print(f"  asyncio.Queue round trip:       {f['queue_rt_us']:8.2f} us CPU")
        print(f"  CapTP round trip (pipe):        {f['captp_rt_us']:8.2f} us CPU")
        print(f"  CapTP overhead over the queues: {f['overhead_us']:8.2f} us CPU"
              + (f"  ({f['overhead_vs_base']:.2f}x base)" if "overhead_vs_base" in f else ""))
        print(f"  10,000 concurrent calls:        {f['concurrent_10k_s']:8.3f} s CPU"
              + (f"  ({f['concurrent_10k_vs_base']:.2f}x base)"
                 if "concurrent_10k_vs_base" in f else ""))
        print(f"  5-step chain, pipelined / awaited: {f['chain5_pipelined_us']:.1f} / "
              f"{f['chain5_awaited_us']:.1f} us ({f['pipelining_speedup']}x)")
    one_ms = figures["chain5_1ms"]
    print(f"this, 5-step chain over a 1 ms link, pipelined / awaited: "
          f"{one_ms['chain5_pipelined_1ms_us']:.0f} / {one_ms['chain5_awaited_1ms_us']:.0f} us")
    this = figures["checkouts"]["this"]
    if "overhead_vs_base" in this:
        figures["target_met"] = (
            this["overhead_vs_base"] <= TARGET_RATIO
            and this["concurrent_10k_vs_base"] <= TARGET_RATIO
        )
        print(f"target (issue 9): overhead and 10k concurrent calls <= {TARGET_RATIO}x base: "
              f"{'met' if figures['target_met'] else 'NOT met'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    run()
