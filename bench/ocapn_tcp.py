"""OCapN round trips over tcp-testing-only, client and server in two processes.

Run from the repository root::

    python -m bench.ocapn_tcp [--seconds 7] [--cpu 1] [--placement pinned|unpinned|both]

For each placement it measures, in one run, side by side (the three
client/server pairs run their series in turn, seven rounds of
``--seconds``/7 each, so that a noisy machine's drift hits them alike; the
ratios are the medians of the per-round ratios):

* a plain asyncio length-prefixed ping-pong (``asyncio.Protocol``, 4-byte
  length + 50-byte payload), and the same with ``asyncio.BufferedProtocol``;
* OCapN: ``await E(ref).ping()`` between two nodes (the default ``spec``
  profile, unframed Syrup), sequential round trips per second, and the wall
  time of 10,000 concurrent ``E(ref).echo(i)`` calls.

``--generic`` runs the OCapN side over the generic anyio path (the one trio
uses) instead of the asyncio fast path, for comparison.

"pinned" runs both processes on one CPU (``--cpu``, as ``taskset -c 1``
would), which measures the CPU spent per call; "unpinned" lets the kernel
place them, which adds cross-CPU wake-ups (roughly what a real link adds).
The target is OCapN at 40% or more of the plain ``Protocol`` ping-pong's
round trips per second, pinned.  The last line of output is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from typing import Any, Final

TARGET_RATIO: Final = 0.40
ROUNDS: Final = 7  # interleaved series per placement
CONCURRENT: Final = 10_000
PAYLOAD: Final = b"x" * 50
HEADER: Final = struct.Struct(">I")


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# == plain asyncio ping-pong ================================================================


def _whole_frames(buf: bytearray, end: int) -> tuple[int, int]:
    """How many bytes, and how many frames, at the start of ``buf[:end]`` are whole frames."""
    pos = count = 0
    while end - pos >= 4:
        (n,) = HEADER.unpack_from(buf, pos)
        if end - pos < 4 + n:
            break
        pos += 4 + n
        count += 1
    return pos, count


class _Side:
    """One side of the ping-pong: what it does with the whole frames at the start of ``buf``."""

    transport: asyncio.Transport
    buf: bytearray

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def frames(self, size: int, count: int) -> None:
        raise NotImplementedError


class _Echo(_Side):
    def frames(self, size: int, count: int) -> None:
        self.transport.write(bytes(self.buf[:size]))


class _Client(_Side):
    expected = 0
    waiter: asyncio.Future[None] | None = None

    def frames(self, size: int, count: int) -> None:
        self.expected -= count
        if self.expected <= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def round_trips(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        message = HEADER.pack(len(PAYLOAD)) + PAYLOAD
        self.expected = count
        self.waiter = loop.create_future()
        self.transport.write(message * count)
        await self.waiter


class _Plain(_Side, asyncio.Protocol):
    """Reads with ``asyncio.Protocol``: each read's bytes appended to ``buf``."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        size, count = _whole_frames(self.buf, len(self.buf))
        if size:
            self.frames(size, count)
            del self.buf[:size]


class _Buffered(_Side, asyncio.BufferedProtocol):
    """Reads with ``asyncio.BufferedProtocol`` into one preallocated buffer."""

    def __init__(self) -> None:
        self.buf = bytearray(256 * 1024)
        self.end = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        size, count = _whole_frames(self.buf, self.end)
        if size:
            self.frames(size, count)
            self.buf[: self.end - size] = self.buf[size : self.end]
            self.end -= size


class _EchoProtocol(_Echo, _Plain):
    pass


class _ClientProtocol(_Client, _Plain):
    pass


class _BufferedEcho(_Echo, _Buffered):
    pass


class _BufferedClient(_Client, _Buffered):
    pass


async def _plain_server(buffered: bool) -> None:
    loop = asyncio.get_running_loop()
    factory: Any = _BufferedEcho if buffered else _EchoProtocol
    server = await loop.create_server(factory, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def _plain_client(port: int, buffered: bool) -> None:
    loop = asyncio.get_running_loop()
    factory: Any = _BufferedClient if buffered else _ClientProtocol
    _, client = await loop.create_connection(factory, "127.0.0.1", port)

    async def burst() -> None:
        await client.round_trips(CONCURRENT)

    await _serve_commands(lambda: client.round_trips(1), burst)


async def _serve_commands(call: Any, burst: Any) -> None:
    """Warm up, then run what the driver asks on stdin: ``seq SECONDS``, ``burst``, ``quit``."""
    await _sequential(call, 0.3)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command, *rest = line.split() or ["quit"]
        if command == "seq":
            print(json.dumps({"rt_per_s": await _sequential(call, float(rest[0]))}), flush=True)
        elif command == "burst":
            start = time.perf_counter()
            await burst()
            print(json.dumps({"burst_s": time.perf_counter() - start}), flush=True)
        else:
            return


async def _sequential(call: Any, seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            await call()
        n += 100
        if time.perf_counter() >= deadline:
            return n / (time.perf_counter() - start)


# == OCapN ==================================================================================


def _ocapn_server(generic: bool) -> None:
    import anyio

    from captp import far
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    @far
    class Bench:
        def ping(self) -> None:
            return None

        def echo(self, x: Any) -> Any:
            return x

    async def main() -> None:
        async with Node(TcpTestingNetlayer(fast_path=not generic)) as node:
            print(node.publish(Bench()), flush=True)
            await anyio.sleep_forever()

    anyio.run(main)


def _ocapn_client(uri: str, generic: bool) -> None:
    import anyio

    from captp import E
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    async def main() -> None:
        async with Node(TcpTestingNetlayer(fast_path=not generic)) as node:
            ref = await node.enliven(uri)

            async def burst() -> None:
                promises = [E(ref).echo(i) for i in range(CONCURRENT)]
                for i, p in enumerate(promises):
                    assert await p == i

            await _serve_commands(E(ref).ping, burst)

    anyio.run(main)


# == the driver =============================================================================


def _child(args: list[str], cpu: int | None, generic: bool) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.ocapn_tcp", *args]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if generic:
        command.append("--generic")
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


class _Pair:
    """A server process and a client process that runs series on request."""

    def __init__(self, kind: str, cpu: int | None, generic: bool) -> None:
        self.server = _child(["--role", f"{kind}-server"], cpu, generic)
        assert self.server.stdout is not None
        address = self.server.stdout.readline().strip()
        self.client = _child(["--role", f"{kind}-client", "--address", address], cpu, generic)
        assert self.client.stdout is not None and self.client.stdin is not None
        self._in, self._out = self.client.stdin, self.client.stdout
        if self._out.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} client did not start")

    def ask(self, command: str) -> dict[str, float]:
        self._in.write(command + "\n")
        self._in.flush()
        answer: dict[str, float] = json.loads(self._out.readline())
        return answer

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._in.write("quit\n")
            self._in.flush()
        self.client.wait(30)
        self.server.terminate()
        self.server.wait()


def _measure(seconds: float, cpu: int | None, generic: bool) -> dict[str, Any]:
    """Interleave series of the three pairs, so that the machine's drift hits all alike."""
    kinds = ["plain", "buffered", "ocapn"]
    pairs = {kind: _Pair(kind, cpu, generic) for kind in kinds}
    try:
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for round_number in range(ROUNDS):
            order = kinds[round_number % 3:] + kinds[: round_number % 3]
            for kind in order:
                rates[kind].append(pairs[kind].ask(f"seq {seconds / ROUNDS}")["rt_per_s"])
        bursts = {kind: statistics.median(pairs[kind].ask("burst")["burst_s"] for _ in range(3))
                  for kind in kinds}
    finally:
        for pair in pairs.values():
            pair.close()
    median = {kind: statistics.median(values) for kind, values in rates.items()}
    per_round = [o / p for o, p in zip(rates["ocapn"], rates["plain"], strict=True)]
    per_round_buffered = [o / b for o, b in zip(rates["ocapn"], rates["buffered"], strict=True)]
    return {
        "plain_protocol_rt_per_s": round(median["plain"]),
        "plain_buffered_rt_per_s": round(median["buffered"]),
        "ocapn_rt_per_s": round(median["ocapn"]),
        "ocapn_rt_us": round(1e6 / median["ocapn"], 1),
        "ratio_to_protocol": round(statistics.median(per_round), 3),
        "ratio_to_protocol_range": [round(min(per_round), 3), round(max(per_round), 3)],
        "ratio_to_buffered": round(statistics.median(per_round_buffered), 3),
        "plain_protocol_concurrent_10k_s": round(bursts["plain"], 3),
        "plain_buffered_concurrent_10k_s": round(bursts["buffered"], 3),
        "ocapn_concurrent_10k_s": round(bursts["ocapn"], 3),
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=7.0, help="sequential time per pair, over all rounds"
    )
    parser.add_argument("--cpu", type=int, default=None, help="the CPU for the pinned runs")
    parser.add_argument("--placement", default="both", choices=["pinned", "unpinned", "both"])
    parser.add_argument("--generic", action="store_true",
                        help="OCapN over the generic anyio path, not the asyncio fast path")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role is not None:  # a child process
        _pin(args.cpu)
        gc.collect()
        if args.role == "plain-server":
            asyncio.run(_plain_server(False))
        elif args.role == "buffered-server":
            asyncio.run(_plain_server(True))
        elif args.role in ("plain-client", "buffered-client"):
            asyncio.run(_plain_client(int(args.address), args.role == "buffered-client"))
        elif args.role == "ocapn-server":
            _ocapn_server(args.generic)
        elif args.role == "ocapn-client":
            _ocapn_client(args.address, args.generic)
        return

    cpus = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else (1 if 1 in cpus else cpus[0])
    figures: dict[str, Any] = {
        "bench": "ocapn_tcp",
        "python": sys.version.split()[0],
        "ocapn_path": "generic anyio" if args.generic else "asyncio fast path",
    }
    placements = ["pinned", "unpinned"] if args.placement == "both" else [args.placement]
    for placement in placements:
        result = _measure(args.seconds, cpu if placement == "pinned" else None, args.generic)
        figures[placement] = result
        where = f"both on CPU {cpu}" if placement == "pinned" else "placed by the kernel"
        print(f"{placement} ({where}):")
        print(f"  plain asyncio Protocol ping-pong:  {result['plain_protocol_rt_per_s']:8d} rt/s"
              f"   10k concurrent {result['plain_protocol_concurrent_10k_s']:.3f} s")
        print(f"  plain asyncio BufferedProtocol:    {result['plain_buffered_rt_per_s']:8d} rt/s"
              f"   10k concurrent {result['plain_buffered_concurrent_10k_s']:.3f} s")
        print(f"  OCapN E(ref).ping():               {result['ocapn_rt_per_s']:8d} rt/s"
              f"   10k concurrent {result['ocapn_concurrent_10k_s']:.3f} s"
              f"   ({result['ocapn_rt_us']} us per round trip)")
        low, high = result["ratio_to_protocol_range"]
        print(f"  OCapN / Protocol: {result['ratio_to_protocol']:.0%} (median of {ROUNDS} rounds,"
              f" {low:.0%}-{high:.0%})   OCapN / BufferedProtocol:"
              f" {result['ratio_to_buffered']:.0%}")
    if "pinned" in figures:
        figures["target_ratio"] = TARGET_RATIO
        figures["target_met"] = figures["pinned"]["ratio_to_protocol"] >= TARGET_RATIO
        print(f"target: OCapN >= {TARGET_RATIO:.0%} of the Protocol ping-pong, pinned: "
              f"{'met' if figures['target_met'] else 'NOT met'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    run()
