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
  guest, beside the same call between two connections in one process over
  a socketpair, with the same channel, codec and framing (``_channel``,
  OCapN Syrup, ``len:`` frames) and the same timing loop (a function in
  both: the guest's loop is not module-level code).  Also: the worker on
  asyncio's own loop instead of its default (uvloop when installed), an
  unconfined worker (the process boundary without the kernel layers), and
  the in-memory pipe (no system calls, no framing: not like with like).
  Rounds are interleaved; each figure is the median of the rounds.  When
  this process is pinned (``taskset``) and other CPUs exist, the same call
  again with the worker pinned to those other CPUs (``split``): the placement
  a host with cores to spare may get.  Beside
  wall time, the CPU time per call of both sides (worker plus host, or the
  one process): on a busy machine the wall time also holds the wait for a
  core at each of the two wake-ups.

``--boundary`` adds where the process boundary's cost comes from, without
confinement: the same call with its serving side in a child process, once
forked from this one (the interpreter's code at the same addresses) and
once started afresh (laid out afresh, as every worker is: with address-space
randomization its code sits elsewhere, so the two processes do not share
the CPU's branch-prediction state).  ``setarch -R`` in front of the command
turns randomization off for the run and shows the difference vanish; it is
a diagnosis, not a setting to deploy (spec-notes/0034).

The call's ratio depends on the interpreter's build: where its code sits
at one fixed address in every process (a non-PIE ``python3`` with libpython
linked in, as Debian ships it), host and worker share the branch
predictors' state for it and the boundary costs far less than where each
process has it at its own random address (pyenv's default build).  The run
says which it is.

Targets: zygote start <= 10 ms, cold start <= 150 ms, call overhead (guest
over the in-process socketpair baseline) <= 1.3x.  The last line of output
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
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


@far
class Chat:
    def __init__(self) -> None:
        self._key = "sk-bench"

    def complete(self, messages: list[dict[str, str]]) -> str:
        return "ok"


# The guest's timing loop: the same function as timed_calls below.
GUEST_LOOP = """
import time

async def timed_calls(chat, n):
    msgs = [{'role': 'user', 'content': 'hi'}]
    for _ in range(50):
        await E(chat).complete(msgs)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await E(chat).complete(msgs)
    return [(time.perf_counter() - started) / n * 1e6, (time.process_time() - cpu) / n * 1e6]

result = await timed_calls(chat, n)
"""


async def start_ms(policy: Policy) -> float:
    """Milliseconds from entering a compartment to the confined worker's first answer."""
    started = time.perf_counter()
    async with Compartment({}, policy):
        elapsed = (time.perf_counter() - started) * 1e3
    return elapsed


def _py_initialize_address() -> int:
    return ctypes.cast(ctypes.pythonapi.Py_Initialize, ctypes.c_void_p).value or 0


def interpreter_code_fixed() -> bool:
    """Whether the interpreter's code sits at the same address in every process.

    True for a non-PIE interpreter with libpython linked in (Debian's and
    Ubuntu's ``python3``); False where it is randomized per process (a PIE or
    ``--enable-shared`` build: pyenv's default).  Host and worker then share
    the branch predictors' state for that code only in the first case
    (spec-notes/0034).
    """
    probe = (
        "import ctypes; "
        "print(ctypes.cast(ctypes.pythonapi.Py_Initialize, ctypes.c_void_p).value)"
    )
    there = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return int(there) == _py_initialize_address()


def python_startup_ms() -> float:
    """Milliseconds to start and end a bare interpreter (the same run's reference for cold)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1e3


async def timed_calls(chat: Any, n: int) -> tuple[float, float]:
    """Wall and CPU microseconds per call (CPU: this whole process, both sides here)."""
    msgs = [{"role": "user", "content": "hi"}]
    for _ in range(50):
        await E(chat).complete(msgs)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await E(chat).complete(msgs)
    return (
        (time.perf_counter() - started) / n * 1e6,
        (time.process_time() - cpu) / n * 1e6,
    )


async def guest_us(c: Compartment, n: int) -> tuple[float, float]:
    """Wall microseconds per call timed by the guest; CPU of both sides (worker plus host)."""
    host_cpu = time.process_time()
    wall_us, worker_cpu_us = await c.evaluate(GUEST_LOOP, n=n)
    host_cpu_us = (time.process_time() - host_cpu) / (n + 50) * 1e6
    return wall_us, worker_cpu_us + host_cpu_us


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


async def serve_chat(sock: socket.socket) -> None:
    """Serve a Chat as the bootstrap of one session over ``sock`` until the peer closes it."""
    async with open_vat() as vat, anyio.create_task_group() as tg:
        channel = await _channel.open_channel(sock, tg)
        b = _channel.session_over(channel, vat, bootstrap=Chat(), max_message=1 << 24, name="b")
        await b.run()
        tg.cancel_scope.cancel()


def serve_fd(fd: int) -> None:
    """The child started afresh by :func:`across_child`."""
    anyio.run(serve_chat, socket.socket(fileno=fd))


async def call_over(sock: socket.socket, n: int) -> tuple[float, float]:
    """Microseconds per call to the Chat served at the other end of ``sock``."""
    async with open_vat() as vat, anyio.create_task_group() as tg:
        channel = await _channel.open_channel(sock, tg)
        a = _channel.session_over(channel, vat, max_message=1 << 24, name="a")
        tg.start_soon(a.run)
        result = await timed_calls(await a.bootstrap(), n)
        await a.aclose()
        tg.cancel_scope.cancel()
    return result


def across_child(how: str, n: int) -> float:
    """Wall microseconds per call, served by a child forked from this process or started afresh.

    A forked child runs the interpreter's code at the same addresses as this
    process; one started afresh has its own address-space layout, as a
    worker has.  Neither is confined.  Run outside an event loop.
    """
    ours, theirs = socket.socketpair()
    if how == "fork":
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                serve_fd(theirs.detach())
            finally:
                os._exit(0)
        theirs.close()
        wall, _ = anyio.run(call_over, ours, n)
        os.waitpid(pid, 0)
        return wall
    fd = theirs.fileno()
    child = subprocess.Popen(
        [sys.executable, "-c", f"import bench.confine as b; b.serve_fd({fd})"], pass_fds=(fd,)
    )
    theirs.close()
    wall, _ = anyio.run(call_over, ours, n)
    child.wait()
    return wall


def boundary(rounds: int, calls: int) -> dict[str, Any]:
    """The same call in one process, across a fork, across a fresh process: interleaved rounds."""
    one: list[float] = []
    forked: list[float] = []
    fresh: list[float] = []
    for _ in range(rounds):
        one.append(anyio.run(socketpair_us, calls)[0])
        forked.append(across_child("fork", calls))
        fresh.append(across_child("fresh", calls))
    in_process = statistics.median(one)
    figures = {
        "in_process_us": round(in_process, 1),
        "forked_child_us": round(statistics.median(forked), 1),
        "fresh_child_us": round(statistics.median(fresh), 1),
        "aslr": _aslr(),
    }
    figures["forked_ratio"] = round(figures["forked_child_us"] / in_process, 2)
    figures["fresh_ratio"] = round(figures["fresh_child_us"] / in_process, 2)
    return figures


def _aslr() -> bool:
    """Whether this process's address space is randomized (``setarch -R`` turns it off)."""
    with open("/proc/self/personality") as f:
        return not int(f.read(), 16) & 0x0040000  # ADDR_NO_RANDOMIZE


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
    guest_asyncio: list[float] = []
    guest_asyncio_cpu: list[float] = []
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
    on_asyncio = await stack.enter_async_context(
        Compartment({"chat": Chat()}, zygote.with_(loop="asyncio"))
    )
    c = await stack.enter_async_context(Compartment({"chat": Chat()}, zygote))
    host_cpus = os.sched_getaffinity(0)
    other_cpus = set(range(os.cpu_count() or 1)) - host_cpus
    split: Compartment | None = None
    if other_cpus:  # pinned: the same worker again, on the CPUs this process is not on
        split = await stack.enter_async_context(Compartment({"chat": Chat()}, zygote))
        os.sched_setaffinity(split.pid, other_cpus)
    guest_split: list[float] = []
    guest_split_cpu: list[float] = []
    for _ in range(max(rounds // 2, 5)):
        bare.append((await unconfined.evaluate(GUEST_LOOP, n=calls))[0])
        wall_us, cpu_us = await guest_us(on_asyncio, calls)
        guest_asyncio.append(wall_us)
        guest_asyncio_cpu.append(cpu_us)
        wall_us, cpu_us = await guest_us(c, calls)
        guest.append(wall_us)
        guest_cpu.append(cpu_us)
        if split is not None:
            wall_us, cpu_us = await guest_us(split, calls)
            guest_split.append(wall_us)
            guest_split_cpu.append(cpu_us)
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
        "worker_loop": c.report().loop,
        "guest_call_us": round(statistics.median(guest), 1),
        "guest_call_asyncio_worker_us": round(statistics.median(guest_asyncio), 1),
        "socketpair_call_us": round(statistics.median(pair), 1),
        "pipe_call_us": round(statistics.median(pipe), 1),
        "unconfined_worker_call_us": round(statistics.median(bare), 1),
        "guest_call_cpu_us": round(statistics.median(guest_cpu), 1),
        "guest_call_asyncio_worker_cpu_us": round(statistics.median(guest_asyncio_cpu), 1),
        "socketpair_call_cpu_us": round(statistics.median(pair_cpu), 1),
    }
    figures["cpu_ratio_vs_socketpair"] = round(
        figures["guest_call_cpu_us"] / figures["socketpair_call_cpu_us"], 2
    )
    figures["call_ratio_vs_socketpair"] = round(
        figures["guest_call_us"] / figures["socketpair_call_us"], 2
    )
    figures["asyncio_worker_ratio_vs_socketpair"] = round(
        figures["guest_call_asyncio_worker_us"] / figures["socketpair_call_us"], 2
    )
    figures["asyncio_worker_cpu_ratio_vs_socketpair"] = round(
        figures["guest_call_asyncio_worker_cpu_us"] / figures["socketpair_call_cpu_us"], 2
    )
    figures["call_ratio_vs_unconfined_worker"] = round(
        figures["guest_call_us"] / figures["unconfined_worker_call_us"], 2
    )
    figures["call_ratio_vs_pipe"] = round(figures["guest_call_us"] / figures["pipe_call_us"], 2)
    figures["interpreter_code_fixed"] = interpreter_code_fixed()
    figures["host_cpus"] = sorted(host_cpus)
    figures["worker_cpus"] = sorted(os.sched_getaffinity(c.pid))
    figures["split_worker_cpus"] = sorted(other_cpus)
    if split is not None:
        figures["guest_call_split_us"] = round(statistics.median(guest_split), 1)
        figures["guest_call_split_cpu_us"] = round(statistics.median(guest_split_cpu), 1)
        figures["split_ratio_vs_socketpair"] = round(
            figures["guest_call_split_us"] / figures["socketpair_call_us"], 2
        )
        figures["split_cpu_ratio_vs_socketpair"] = round(
            figures["guest_call_split_cpu_us"] / figures["socketpair_call_cpu_us"], 2
        )
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
    parser.add_argument("--boundary", action="store_true",
                        help="also: the same call across a forked and a fresh child, unconfined")
    parser.add_argument("--host-uvloop", action="store_true",
                        help="run this process (the host, and the in-process baseline) on uvloop")
    args = parser.parse_args()
    options = {"use_uvloop": True} if args.host_uvloop else {}
    figures = anyio.run(main, args.rounds, args.calls, backend="asyncio", backend_options=options)
    figures["host_loop"] = "uvloop" if args.host_uvloop else "asyncio"
    print(f"worker start from the zygote  {figures['zygote_start_ms']:8.2f} ms"
          f"   (target <= {TARGET_ZYGOTE_MS} ms)")
    print(f"  right after another start     {figures['zygote_burst_start_ms']:8.2f} ms")
    print(f"worker start, cold            {figures['cold_start_ms']:8.1f} ms"
          f"   (target <= {TARGET_COLD_MS} ms)")
    print(f"  (a bare `python -I -c pass`   {figures['bare_python_start_ms']:8.1f} ms in this run)")
    print(f"guest -> host call            {figures['guest_call_us']:8.1f} us"
          f"   (worker on {figures['worker_loop']}, host on {figures['host_loop']};"
          f" CPUs: host {figures['host_cpus']}, worker {figures['worker_cpus']})")
    print(f"same call, socketpair in-proc {figures['socketpair_call_us']:8.1f} us"
          f"   ratio {figures['call_ratio_vs_socketpair']} (target <= {TARGET_CALL_RATIO})")
    fixed = figures["interpreter_code_fixed"]
    print("  (the interpreter's code is at "
          + ("one fixed address in every process" if fixed else "a random address per process")
          + ": see spec-notes/0034)")
    print(f"  CPU per call, both sides: guest {figures['guest_call_cpu_us']:.1f} us,"
          f" in-process {figures['socketpair_call_cpu_us']:.1f} us,"
          f" ratio {figures['cpu_ratio_vs_socketpair']}")
    print(f"same call, worker on asyncio  {figures['guest_call_asyncio_worker_us']:8.1f} us"
          f"   ratio {figures['asyncio_worker_ratio_vs_socketpair']}"
          f" (CPU {figures['guest_call_asyncio_worker_cpu_us']:.1f} us,"
          f" ratio {figures['asyncio_worker_cpu_ratio_vs_socketpair']})")
    if "guest_call_split_us" in figures:
        print(f"same call, worker on CPU {figures['split_worker_cpus']}"
              f" {figures['guest_call_split_us']:8.1f} us"
              f"   ratio {figures['split_ratio_vs_socketpair']}"
              f" (host on {figures['host_cpus']}; CPU {figures['guest_call_split_cpu_us']:.1f} us,"
              f" ratio {figures['split_cpu_ratio_vs_socketpair']})")
    else:
        print("  (unpinned: the scheduler places the worker; pin with taskset for a split figure)")
    print(f"same call, unconfined worker  {figures['unconfined_worker_call_us']:8.1f} us"
          f"   ratio {figures['call_ratio_vs_unconfined_worker']} (what confinement adds)")
    print(f"same call, memory pipe        {figures['pipe_call_us']:8.1f} us"
          f"   ratio {figures['call_ratio_vs_pipe']} (no system calls: not like with like)")
    if figures["missing_layers"]:
        print(f"(best effort: this kernel lacks {figures['missing_layers']})")
    if args.boundary:
        b = boundary(max(args.rounds // 2, 5), args.calls)
        figures["boundary"] = b
        print(f"boundary, unconfined (address layout randomized: {b['aslr']}):")
        print(f"  in one process              {b['in_process_us']:8.1f} us")
        print(f"  child forked from this one  {b['forked_child_us']:8.1f} us"
              f"   ratio {b['forked_ratio']} (same code addresses)")
        print(f"  child started afresh        {b['fresh_child_us']:8.1f} us"
              f"   ratio {b['fresh_ratio']} (laid out afresh, as a worker is)")
    print(json.dumps(figures))


if __name__ == "__main__":
    run()
