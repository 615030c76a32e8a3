"""Engine benchmark: CapTP round trips over the in-memory pipe, against asyncio queues.

Run from the repository root::

    python -m bench.engine [--seconds 2] [--uvloop]

It measures, in one run on one event loop:

* sequential round trips (``await E(boot).ping()``) per second, beside the
  same request/response through two ``asyncio.Queue`` objects (the floor:
  two task switches, no encoding); the difference is what CapTP costs;
* wall time of 10,000 concurrent calls;
* a 5-step pipelined chain against 5 awaited calls (measured alternately,
  medians), in process (where pipelining only saves event-loop iterations)
  and over a pipe that holds each message 1 ms, as a network link would.

The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from typing import Any

from captp import E, far
from netlayers import connect_pair

TARGET_OVERHEAD_US = 60.0


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
    """Microseconds per request/response through two asyncio queues."""
    requests: asyncio.Queue[int | None] = asyncio.Queue()
    responses: asyncio.Queue[int] = asyncio.Queue()

    async def server() -> None:
        while (item := await requests.get()) is not None:
            responses.put_nowait(item)

    task = asyncio.create_task(server())
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            requests.put_nowait(n)
            await responses.get()
            n += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    requests.put_nowait(None)
    await task
    return elapsed / n * 1e6


async def captp_round_trips(boot: Any, seconds: float) -> float:
    """Microseconds per sequential ``await E(boot).ping()``."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            await E(boot).ping()
            n += 1
        if time.perf_counter() >= deadline:
            break
    return (time.perf_counter() - start) / n * 1e6


async def concurrent_calls(boot: Any, count: int) -> float:
    """Seconds for ``count`` concurrent echo calls to all settle."""
    start = time.perf_counter()
    promises = [E(boot).echo(i) for i in range(count)]
    for i, p in enumerate(promises):
        assert await p == i
    return time.perf_counter() - start


async def chain(boot: Any, steps: int, pipelined: bool, repeat: int) -> float:
    """Microseconds for a chain of ``steps`` calls, pipelined or awaited one by one."""
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


async def main(seconds: float) -> dict[str, Any]:
    gc.collect()
    async with connect_pair(bootstrap_b=Server()) as (a, _b):
        boot = await a.bootstrap()
        await captp_round_trips(boot, 0.2)  # warm up
        queue_us, captp_us = [], []
        for _ in range(3):
            queue_us.append(await queue_round_trips(seconds / 3))
            captp_us.append(await captp_round_trips(boot, seconds / 3))
        q, c = statistics.median(queue_us), statistics.median(captp_us)
        conc = statistics.median([await concurrent_calls(boot, 10_000) for _ in range(3)])
        piped, awaited = await compare_chains(boot, 5, 100)
    async with connect_pair(bootstrap_b=Server(), latency=0.001) as (a, _b):
        boot = await a.bootstrap()
        piped_1ms, awaited_1ms = await compare_chains(boot, 1, 10)
    return {
        "bench": "engine",
        "loop": type(asyncio.get_running_loop()).__module__,
        "queue_rt_us": round(q, 2),
        "captp_rt_us": round(c, 2),
        "captp_rt_per_s": round(1e6 / c),
        "overhead_us": round(c - q, 2),
        "overhead_target_us": TARGET_OVERHEAD_US,
        "overhead_within_target": c - q <= TARGET_OVERHEAD_US,
        "concurrent_10k_s": round(conc, 3),
        "chain5_pipelined_us": round(piped, 1),
        "chain5_awaited_us": round(awaited, 1),
        "pipelining_speedup": round(awaited / piped, 2),
        "chain5_pipelined_1ms_us": round(piped_1ms, 1),
        "chain5_awaited_1ms_us": round(awaited_1ms, 1),
        "pipelining_speedup_1ms": round(awaited_1ms / piped_1ms, 2),
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per round-trip series")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (if installed)")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        figures = uvloop.run(main(args.seconds))
    else:
        figures = asyncio.run(main(args.seconds))
    print(f"asyncio.Queue round trip:      {figures['queue_rt_us']:8.2f} us")
    print(f"CapTP round trip (pipe):       {figures['captp_rt_us']:8.2f} us "
          f"({figures['captp_rt_per_s']} per second)")
    print(f"CapTP overhead over the queue: {figures['overhead_us']:8.2f} us "
          f"(target <= {TARGET_OVERHEAD_US:.0f} us)")
    print(f"10,000 concurrent calls:       {figures['concurrent_10k_s']:8.3f} s")
    print(f"5-step chain, pipelined:       {figures['chain5_pipelined_us']:8.1f} us")
    print(f"5-step chain, awaited:         {figures['chain5_awaited_us']:8.1f} us "
          f"(pipelining: {figures['pipelining_speedup']}x)")
    print(f"5-step chain, 1 ms link, piped: {figures['chain5_pipelined_1ms_us']:8.1f} us")
    print(f"5-step chain, 1 ms link, awaited:{figures['chain5_awaited_1ms_us']:8.1f} us "
          f"(pipelining: {figures['pipelining_speedup_1ms']}x)")
    print(json.dumps(figures))


if __name__ == "__main__":
    run()
