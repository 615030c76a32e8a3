"""Confinement benchmark: worker start (zygote and cold) and the cost of a guest's call.

Run from the repository root (pinned, as the other benchmarks are)::

    taskset -c 1 python -m bench.confine [--rounds 20]

It measures, in one run, on asyncio:

* worker start, forked from the zygote and cold: from entering
  ``Compartment`` until the worker, confined, has answered its first call
  (beside a bare interpreter's start and exit, to show how busy the machine
  is).  From the zygote twice: spaced out, when its spare child is ready,
  and right after another start, when it forks on demand;
* a guest -> host call, ``await E(chat).complete(msgs)`` timed inside the
  guest, beside the same call between two connections in one process
  (over a socketpair with the same channel and codec, and over the
  in-memory pipe), and from an unconfined worker (the process boundary
  without the kernel layers); rounds of the three are interleaved and each figure is
  the median of the rounds.  Beside wall time, the CPU time per call of
  both sides (worker plus host, or the one process): on a busy machine the
  wall time also holds the wait for a core at each of the two wake-ups.

Targets: zygote start <= 10 ms, cold start <= 150 ms, call overhead (guest
over the in-process socketpair baseline) <= 1.3x.  The last line of output
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import AsyncExitStack
from typing import Any

import anyio

from captp import E, far, open_vat
from captp.confine import Compartment, Mode, Policy, _channel, probe
from netlayers import connect_pair

TARGET_ZYGOTE_MS = 10.0
TARGET_COLD_MS = 150.0
TARGET_CALL_RATIO = 1.3
MESSAGES = [{"role": "user", "content": "hi"}]


@far
class Chat:
    def __init__(self) -> None:
        self._key = "sk-bench"

    def complete(self, messages: list[dict[str, str]]) -> str:
        return "ok"


GUEST_LOOP = """
import time
msgs = [{'role': 'user', 'content': 'hi'}]
for _ in range(50):
    await E(chat).complete(msgs)
start, cpu = time.perf_counter(), time.process_time()
for _ in range(n):
    await E(chat).complete(msgs)
result = [(time.perf_counter() - start) / n * 1e6, (time.process_time() - cpu) / n * 1e6]
"""


async def start_ms(policy: Policy) -> float:
    """Milliseconds from entering a compartment to the confined worker's first answer."""
    started = time.perf_counter()
    async with Compartment({}, policy):
        elapsed = (time.perf_counter() - started) * 1e3
    return elapsed


def python_startup_ms() -> float:
    """Milliseconds to start and end a bare interpreter (the same run's reference for cold)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1e3


async def timed_calls(chat: Any, n: int) -> tuple[float, float]:
    """Wall and CPU microseconds per call (CPU: this whole process, both sides here)."""
    for _ in range(50):
        await E(chat).complete(MESSAGES)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await E(chat).complete(MESSAGES)
    return (
        (time.perf_counter() - started) / n * 1e6,
        (time.process_time() - cpu) / n * 1e6,
    )


async def socketpair_us(n: int) -> tuple[float, float]:
    """Microseconds per call between two connections in this process, over a socketpair."""
    a_sock, b_sock = socket.socketpair()
    async with open_vat() as vat, anyio.create_task_group() as tg:
        a_chan = await _channel.open_channel(a_sock, tg)
        b_chan = await _channel.open_channel(b_sock, tg)
        a = _channel.session_over(a_chan, vat, max_message=1 << 24, name="a")
        b = _channel.session_over(b_chan, vat, bootstrap=Chat(), max_message=1 << 24, name="b")
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        result = await timed_calls(await a.bootstrap(), n)
        await a.aclose()
        await b.aclose()
        tg.cancel_scope.cancel()
    return result


async def pipe_us(n: int) -> tuple[float, float]:
    """Microseconds per call between two connections over the in-memory pipe."""
    async with connect_pair(bootstrap_b=Chat()) as (a, _b):
        return await timed_calls(await a.bootstrap(), n)


async def main(rounds: int, calls: int) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        return await measure(stack, rounds, calls)


async def measure(stack: AsyncExitStack, rounds: int, calls: int) -> dict[str, Any]:
    missing = [n for n, layer in probe().items() if not layer.ok]
    mode: Mode = "strict" if not missing else "best_effort"
    zygote = Policy(mode=mode, modules=("time",))
    cold = zygote.with_(start="cold")
    await start_ms(zygote)  # start the zygote itself once
    zygote_ms: list[float] = []
    cold_ms: list[float] = []
    bare_ms: list[float] = []
    burst_ms: list[float] = []
    for i in range(rounds):
        await anyio.sleep(0.2)  # starts spaced out: the zygote has its spare ready
        zygote_ms.append(await start_ms(zygote))
        burst_ms.append(await start_ms(zygote))  # right after another: forked on demand
        if i % 4 == 0:
            cold_ms.append(await start_ms(cold))
            bare_ms.append(python_startup_ms())
    guest: list[float] = []
    guest_cpu: list[float] = []
    pair: list[float] = []
    pair_cpu: list[float] = []
    pipe: list[float] = []
    bare: list[float] = []
    quiet = logging.getLogger("captp.confine")
    level = quiet.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unconfined worker says so loudly
        quiet.setLevel(logging.ERROR)
        unconfined = await stack.enter_async_context(
            Compartment({"chat": Chat()}, zygote.with_(mode="unconfined"))
        )
        quiet.setLevel(level)
    async with Compartment({"chat": Chat()}, zygote) as c:
        for _ in range(max(rounds // 2, 5)):
            bare.append((await unconfined.evaluate(GUEST_LOOP, n=calls))[0])
            host_cpu = time.process_time()
            wall_us, worker_cpu_us = await c.evaluate(GUEST_LOOP, n=calls)
            host_cpu_us = (time.process_time() - host_cpu) / (calls + 50) * 1e6
            guest.append(wall_us)
            guest_cpu.append(worker_cpu_us + host_cpu_us)
            wall_us, cpu_us = await socketpair_us(calls)
            pair.append(wall_us)
            pair_cpu.append(cpu_us)
            pipe.append((await pipe_us(calls))[0])
    figures: dict[str, Any] = {
        "mode": mode,
        "missing_layers": missing,
        "zygote_start_ms": round(statistics.median(zygote_ms), 2),
        "zygote_burst_start_ms": round(statistics.median(burst_ms), 2),
        "cold_start_ms": round(statistics.median(cold_ms), 1),
        "bare_python_start_ms": round(statistics.median(bare_ms), 1),
        "guest_call_us": round(statistics.median(guest), 1),
        "socketpair_call_us": round(statistics.median(pair), 1),
        "pipe_call_us": round(statistics.median(pipe), 1),
        "unconfined_worker_call_us": round(statistics.median(bare), 1),
        "guest_call_cpu_us": round(statistics.median(guest_cpu), 1),
        "socketpair_call_cpu_us": round(statistics.median(pair_cpu), 1),
    }
    figures["cpu_ratio_vs_socketpair"] = round(
        figures["guest_call_cpu_us"] / figures["socketpair_call_cpu_us"], 2
    )
    figures["call_ratio_vs_socketpair"] = round(
        figures["guest_call_us"] / figures["socketpair_call_us"], 2
    )
    figures["call_ratio_vs_unconfined_worker"] = round(
        figures["guest_call_us"] / figures["unconfined_worker_call_us"], 2
    )
    figures["call_ratio_vs_pipe"] = round(figures["guest_call_us"] / figures["pipe_call_us"], 2)
    figures["targets"] = {
        "zygote_start_ms": TARGET_ZYGOTE_MS,
        "cold_start_ms": TARGET_COLD_MS,
        "call_ratio_vs_socketpair": TARGET_CALL_RATIO,
    }
    figures["met"] = {
        "zygote_start": figures["zygote_start_ms"] <= TARGET_ZYGOTE_MS,
        "cold_start": figures["cold_start_ms"] <= TARGET_COLD_MS,
        "call_ratio": figures["call_ratio_vs_socketpair"] <= TARGET_CALL_RATIO,
    }
    return figures


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    figures = anyio.run(main, args.rounds, args.calls)
    print(f"worker start from the zygote  {figures['zygote_start_ms']:8.2f} ms"
          f"   (target <= {TARGET_ZYGOTE_MS} ms)")
    print(f"  right after another start     {figures['zygote_burst_start_ms']:8.2f} ms")
    print(f"worker start, cold            {figures['cold_start_ms']:8.1f} ms"
          f"   (target <= {TARGET_COLD_MS} ms)")
    print(f"  (a bare `python -I -c pass`   {figures['bare_python_start_ms']:8.1f} ms in this run)")
    print(f"guest -> host call            {figures['guest_call_us']:8.1f} us")
    print(f"same call, socketpair in-proc {figures['socketpair_call_us']:8.1f} us"
          f"   ratio {figures['call_ratio_vs_socketpair']} (target <= {TARGET_CALL_RATIO})")
    print(f"  CPU per call, both sides: guest {figures['guest_call_cpu_us']:.1f} us,"
          f" in-process {figures['socketpair_call_cpu_us']:.1f} us,"
          f" ratio {figures['cpu_ratio_vs_socketpair']}")
    print(f"same call, unconfined worker  {figures['unconfined_worker_call_us']:8.1f} us"
          f"   ratio {figures['call_ratio_vs_unconfined_worker']} (what confinement adds)")
    print(f"same call, memory pipe        {figures['pipe_call_us']:8.1f} us"
          f"   ratio {figures['call_ratio_vs_pipe']}")
    if figures["missing_layers"]:
        print(f"(best effort: this kernel lacks {figures['missing_layers']})")
    print(json.dumps(figures))


if __name__ == "__main__":
    run()
