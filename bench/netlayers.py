"""OCapN round trips and handshakes on websocket and np beside tcp-testing-only, in one run.

Run from the repository root::

    python -m bench.netlayers [--seconds 9] [--cpu 1] [--handshakes 30] [--uvloop]

Three server processes (one node each, on websocket, np and
tcp-testing-only) serve a ``ping`` object; one client process holds a node
per netlayer and measures sequential ``await E(ref).ping()`` round trips per
second.  The three series run in turn, ``ROUNDS`` interleaved rounds with the
order rotated each round, so a noisy machine's drift hits them alike; the
ratios to tcp-testing-only are the medians of the per-round ratios.  Every
process is pinned to one CPU (``--cpu``; ``--cpu -1``: not pinned).

Handshake time: a fresh client node dials each netlayer ``--handshakes``
times (TCP connect, the netlayer's own handshake, both
``op:start-session``); the median is reported.

Targets: np >= 0.85 and websocket >= 0.80 of tcp-testing-only's round
trips per second.  The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any, Final

import anyio

from captp import E, far
from netlayers.choose import make_netlayer
from ocapn.locators import Sturdyref
from ocapn.node import Node

NETLAYERS: Final = ("tcp-testing-only", "websocket", "np")
TARGETS: Final = {"websocket": 0.80, "np": 0.85}
ROUNDS: Final = 7


@far
class Bench:
    def ping(self) -> None:
        return None


def _pin(cpu: int) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


async def _serve(netlayer: str) -> None:
    async with Node(make_netlayer(netlayer)) as node:
        print(node.publish(Bench()), flush=True)
        await anyio.sleep_forever()


async def _round_trips(ref: Any, seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            await E(ref).ping()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


async def _handshake_ms(uri: str, transport: str, times: int) -> float:
    peer = Sturdyref.from_uri(uri).peer
    samples = []
    for _ in range(times):
        async with Node(make_netlayer(transport)) as node:
            start = time.perf_counter()
            await node.connect(peer)
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def _measure(uris: dict[str, str], seconds: float, handshakes: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {t: [] for t in NETLAYERS}
    async with AsyncExitStack() as stack:
        refs = {}
        for transport in NETLAYERS:
            node = await stack.enter_async_context(Node(make_netlayer(transport)))
            refs[transport] = await node.enliven(uris[transport])
            await _round_trips(refs[transport], 0.3)  # warm up
        slice_seconds = seconds / ROUNDS / len(NETLAYERS)
        for round_number in range(ROUNDS):
            order = NETLAYERS[round_number % 3:] + NETLAYERS[: round_number % 3]
            for transport in order:
                rates[transport].append(await _round_trips(refs[transport], slice_seconds))
    handshake = {t: await _handshake_ms(uris[t], t, handshakes) for t in NETLAYERS}
    base = rates["tcp-testing-only"]
    result: dict[str, Any] = {"rounds": ROUNDS}
    for transport in NETLAYERS:
        key = transport.replace("-", "_")
        result[f"{key}_rt_per_s"] = round(statistics.median(rates[transport]))
        result[f"{key}_handshake_ms"] = round(handshake[transport], 2)
    for transport in TARGETS:
        ratios = [r / b for r, b in zip(rates[transport], base, strict=True)]
        result[f"{transport}_ratio"] = round(statistics.median(ratios), 3)
        result[f"{transport}_target"] = TARGETS[transport]
        result[f"{transport}_met"] = result[f"{transport}_ratio"] >= TARGETS[transport]
    return result


def _run(args: argparse.Namespace) -> dict[str, Any]:
    servers = []
    uris = {}
    try:
        for transport in NETLAYERS:
            command = [sys.executable, "-m", "bench.netlayers", "--serve", transport,
                       "--cpu", str(args.cpu)]
            if args.uvloop:
                command.append("--uvloop")
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            servers.append(proc)
            assert proc.stdout is not None
            uris[transport] = proc.stdout.readline().strip()
        _pin(args.cpu)
        options = {"use_uvloop": True} if args.uvloop else {}
        return anyio.run(
            _measure, uris, args.seconds, args.handshakes, backend="asyncio",
            backend_options=options,
        )
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--serve``, one of its servers)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=9.0, help="round-trip time, all told")
    parser.add_argument("--cpu", type=int, default=1, help="CPU to pin to (-1: none)")
    parser.add_argument("--handshakes", type=int, default=30, help="handshakes per netlayer")
    parser.add_argument("--uvloop", action="store_true", help="run every process on uvloop")
    parser.add_argument("--serve", choices=NETLAYERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _pin(args.cpu)
        options = {"use_uvloop": True} if args.uvloop else {}
        anyio.run(_serve, args.serve, backend="asyncio", backend_options=options)
        return 0
    result = _run(args)
    pinned = f"pinned to CPU {args.cpu}" if args.cpu >= 0 else "not pinned"
    print(f"sequential E(ref).ping() round trips, client and servers {pinned}:")
    for transport in NETLAYERS:
        key = transport.replace("-", "_")
        line = f"  {transport:17s} {result[f'{key}_rt_per_s']:7d} rt/s"
        if transport in TARGETS:
            line += (f"  {result[f'{transport}_ratio']:.0%} of tcp-testing-only "
                     f"(target {TARGETS[transport]:.0%}: "
                     f"{'met' if result[f'{transport}_met'] else 'NOT met'})")
        print(line)
    print("handshake (dial to session), median:")
    for transport in NETLAYERS:
        key = transport.replace("-", "_")
        print(f"  {transport:17s} {result[f'{key}_handshake_ms']:7.2f} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
