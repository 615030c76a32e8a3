"""OCapN round trips over tcp-testing-only, client and server in two processes.

Run from the repository root::

    python -m bench.ocapn_tcp [--seconds 3] [--cpu 1] [--placement pinned|unpinned|both]

For each placement it measures, in one run, side by side:

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
CONCURRENT: Final = 10_000
PAYLOAD: Final = b"x" * 50
HEADER: Final = struct.Struct(">I")


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# == plain asyncio ping-pong ================================================================


class _EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(bytes(self.buf[: 4 + n]))
            del self.buf[: 4 + n]
        if out:
            self.transport.write(b"".join(out))


class _ClientProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.expected = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (n,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            del self.buf[: 4 + n]
            self.expected -= 1
        if self.expected <= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def round_trips(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        message = HEADER.pack(len(PAYLOAD)) + PAYLOAD
        self.expected = count
        self.waiter = loop.create_future()
        self.transport.write(message * count)
        await self.waiter


class _BufferedClient(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(256 * 1024)
        self.end = 0
        self.waiter: asyncio.Future[None] | None = None
        self.expected = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        pos = 0
        while self.end - pos >= 4:
            (n,) = HEADER.unpack_from(self.buf, pos)
            if self.end - pos < 4 + n:
                break
            pos += 4 + n
            self.expected -= 1
        if pos:
            self.buf[: self.end - pos] = self.buf[pos : self.end]
            self.end -= pos
        if self.expected <= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def round_trips(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        message = HEADER.pack(len(PAYLOAD)) + PAYLOAD
        self.expected = count
        self.waiter = loop.create_future()
        self.transport.write(message * count)
        await self.waiter


class _BufferedEcho(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(256 * 1024)
        self.end = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        pos = 0
        while self.end - pos >= 4:
            (n,) = HEADER.unpack_from(self.buf, pos)
            if self.end - pos < 4 + n:
                break
            pos += 4 + n
        if pos:
            self.transport.write(bytes(self.buf[:pos]))
            self.buf[: self.end - pos] = self.buf[pos : self.end]
            self.end -= pos


async def _plain_server(buffered: bool) -> None:
    loop = asyncio.get_running_loop()
    factory: Any = _BufferedEcho if buffered else _EchoProtocol
    server = await loop.create_server(factory, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def _plain_client(port: int, seconds: float, buffered: bool) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    factory: Any = _BufferedClient if buffered else _ClientProtocol
    _, client = await loop.create_connection(factory, "127.0.0.1", port)
    await _sequential(lambda: client.round_trips(1), 0.3)
    rates = [await _sequential(lambda: client.round_trips(1), seconds / 3) for _ in range(3)]
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        await client.round_trips(CONCURRENT)
        walls.append(time.perf_counter() - start)
    return {"rt_per_s": statistics.median(rates), "concurrent_s": statistics.median(walls)}


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


def _ocapn_client(uri: str, seconds: float, generic: bool) -> dict[str, float]:
    import anyio

    from captp import E
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    async def main() -> dict[str, float]:
        async with Node(TcpTestingNetlayer(fast_path=not generic)) as node:
            ref = await node.enliven(uri)
            ping = E(ref).ping
            await _sequential(ping, 0.3)
            rates = [await _sequential(ping, seconds / 3) for _ in range(3)]
            walls = []
            for _ in range(3):
                start = time.perf_counter()
                promises = [E(ref).echo(i) for i in range(CONCURRENT)]
                for i, p in enumerate(promises):
                    assert await p == i
                walls.append(time.perf_counter() - start)
                del promises
            return {"rt_per_s": statistics.median(rates), "concurrent_s": statistics.median(walls)}

    return anyio.run(main)


# == the driver =============================================================================


def _child(args: list[str], cpu: int | None, generic: bool) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.ocapn_tcp", *args]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if generic:
        command.append("--generic")
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _pair(
    server_role: str, client_role: str, seconds: float, cpu: int | None, generic: bool = False
) -> dict[str, float]:
    server = _child(["--role", server_role], cpu, generic)
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip()
        client = _child(["--role", client_role, "--address", address,
                         "--seconds", str(seconds)], cpu, generic)
        out, _ = client.communicate(timeout=600)
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        server.terminate()
        server.wait()


def _measure(seconds: float, cpu: int | None, generic: bool) -> dict[str, Any]:
    protocol = _pair("plain-server", "plain-client", seconds, cpu)
    buffered = _pair("buffered-server", "buffered-client", seconds, cpu)
    ocapn = _pair("ocapn-server", "ocapn-client", seconds, cpu, generic)
    return {
        "plain_protocol_rt_per_s": round(protocol["rt_per_s"]),
        "plain_buffered_rt_per_s": round(buffered["rt_per_s"]),
        "ocapn_rt_per_s": round(ocapn["rt_per_s"]),
        "ocapn_rt_us": round(1e6 / ocapn["rt_per_s"], 1),
        "ratio_to_protocol": round(ocapn["rt_per_s"] / protocol["rt_per_s"], 3),
        "ratio_to_buffered": round(ocapn["rt_per_s"] / buffered["rt_per_s"], 3),
        "plain_protocol_concurrent_10k_s": round(protocol["concurrent_s"], 3),
        "plain_buffered_concurrent_10k_s": round(buffered["concurrent_s"], 3),
        "ocapn_concurrent_10k_s": round(ocapn["concurrent_s"], 3),
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per sequential series")
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
            buffered = args.role == "buffered-client"
            result = asyncio.run(_plain_client(int(args.address), args.seconds, buffered))
            print(json.dumps(result))
        elif args.role == "ocapn-server":
            _ocapn_server(args.generic)
        elif args.role == "ocapn-client":
            print(json.dumps(_ocapn_client(args.address, args.seconds, args.generic)))
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
        print(f"  OCapN / Protocol: {result['ratio_to_protocol']:.0%}"
              f"   OCapN / BufferedProtocol: {result['ratio_to_buffered']:.0%}")
    if "pinned" in figures:
        figures["target_ratio"] = TARGET_RATIO
        figures["target_met"] = figures["pinned"]["ratio_to_protocol"] >= TARGET_RATIO
        print(f"target: OCapN >= {TARGET_RATIO:.0%} of the Protocol ping-pong, pinned: "
              f"{'met' if figures['target_met'] else 'NOT met'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    run()
