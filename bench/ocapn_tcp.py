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

``--base DIR`` adds a fourth pair: OCapN from another checkout of the
project (e.g. ``git worktree add /tmp/base 48d35e4``), interleaved with the
others, so that a change is measured against its base in the same run.
``--other DIR`` (repeatable) adds more such pairs (e.g. the previous
``main``), reported beside the base.

``--bulk`` measures instead how fast a 1 MB bytes argument moves
(``await E(ref).size(blob)``) against a raw socket copy of the same bytes
(blocking sockets: ``sendall`` 1 MB, the peer ``recv_into`` a reused buffer
and answers one byte), interleaved the same way; pinned only.

``--layers`` profiles instead (cProfile, CPU time) 4,000 round trips between
two nodes in this process and prints each layer's share of the CPU: Syrup,
the OCapN wire, the engine, asyncio, the channel, system calls (with
``--base DIR``, the same for that checkout, in a child process).

``--per-side`` measures instead, for each side of ``await E(ref).ping()``
(both pinned, as above): event-loop iterations (``select`` calls), user and
system CPU time (``getrusage``) and context switches per round trip, for this
checkout and any ``--base`` / ``--other``, their series interleaved
(``--seconds`` sets nothing here: each series is ``--round-trips`` calls).

``--instructions`` counts instead the instructions each side executes per
round trip (both pinned): one side runs under ``valgrind --tool=callgrind``,
counting switched on after the warm-up, for ``--round-trips`` calls; then
the other side, for this checkout and any ``--base`` / ``--other``.  Unlike
time, the count does not move with the load of a shared machine, so it
shows a small change that timing cannot; it does not see cache misses or the
kernel, and a change in it need not show in time (cheap, cache-hot
instructions removed: spec-notes/0041 "Time, not instructions").  It still
moves by 1-3% between runs (valgrind's slowness changes how reads coalesce
and how often garbage-collection messages go): compare builds within one
run.  Needs valgrind.

``--idle N`` measures the memory an idle session holds on the server: a
server node in its own process, N client nodes in another each open one
session to it, and the growth of the server's resident memory (and of the
Python heap, by ``tracemalloc``) is divided by N.

"pinned" runs both processes on one CPU (``--cpu``, as ``taskset -c 1``
would), which measures the CPU spent per call; "unpinned" lets the kernel
place them, which adds cross-CPU wake-ups (roughly what a real link adds).
The targets (issue 9) are OCapN at 60% or more of the plain ``Protocol``
ping-pong's round trips per second, and 40% or more of the
``BufferedProtocol`` one, pinned.  The last line of output is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import selectors
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

TARGET_RATIO: Final = 0.60  # of the Protocol ping-pong
TARGET_BUFFERED_RATIO: Final = 0.40  # of the BufferedProtocol ping-pong
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

    async def seq(seconds: str) -> dict[str, Any]:
        return {"rt_per_s": await _sequential(call, float(seconds))}

    async def timed_burst() -> dict[str, Any]:
        start = time.perf_counter()
        await burst()
        return {"burst_s": time.perf_counter() - start}

    await _answer({"seq": seq, "burst": timed_burst})


async def _answer(commands: Mapping[str, Callable[..., Awaitable[dict[str, Any]]]]) -> None:
    """Print ``ready``, then answer each line on stdin (a command and its arguments) with
    the one JSON line its handler returns; any other command (``quit``) ends."""
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command, *args = line.split() or ["quit"]
        handler = commands.get(command)
        if handler is None:
            return
        print(json.dumps(await handler(*args)), flush=True)


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

        def size(self, blob: bytes) -> int:
            return len(blob)

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


def _child(
    args: list[str], cpu: int | None, generic: bool, cwd: str | None = None,
    wrapper: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """This module in a child process (using the packages of the checkout at ``cwd``, if given).

    For another checkout the child runs this file, so that it can play roles
    that checkout's own copy of the benchmark may not know (through runpy, so
    that this file's folder does not go first on ``sys.path``: ``bench``
    holds modules named like the project's packages).  ``wrapper`` goes
    before the interpreter (a profiler's command line).
    """
    here = ["-m", "bench.ocapn_tcp"]
    if cwd is not None:
        run_file = "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='__main__')"
        here = ["-c", run_file, os.path.abspath(__file__)]
    command = [*wrapper, sys.executable, *here, *args]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if generic:
        command.append("--generic")
    env = None
    if cwd is not None:
        env = {**os.environ, "PYTHONPATH": cwd}
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env
    )


class _Pair:
    """A server process and a client process that runs series on request."""

    def __init__(
        self, kind: str, cpu: int | None, generic: bool, cwd: str | None = None,
        server_wrapper: Sequence[str] = (), client_wrapper: Sequence[str] = (),
    ) -> None:
        self.server = _child(["--role", f"{kind}-server"], cpu, generic, cwd, server_wrapper)
        assert self.server.stdout is not None
        address = self.server.stdout.readline().strip()
        self.client = _child(
            ["--role", f"{kind}-client", "--address", address], cpu, generic, cwd, client_wrapper
        )
        assert self.client.stdout is not None and self.client.stdin is not None
        self._in, self._out = self.client.stdin, self.client.stdout
        if self._out.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} client did not start")

    def ask(self, command: str) -> dict[str, float]:
        self._in.write(command + "\n")
        self._in.flush()
        answer: dict[str, float] = json.loads(self._out.readline())
        return answer

    def tell_server(self, command: str) -> dict[str, float]:
        """Send ``command`` to the server (a per-side one) and read its one-line answer."""
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(command + "\n")
        self.server.stdin.flush()
        answer: dict[str, float] = json.loads(self.server.stdout.readline())
        return answer

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._in.write("quit\n")
            self._in.flush()
        self.client.wait(30)
        self.server.terminate()
        self.server.wait()


def _interleaved(
    pairs: dict[str, _Pair], seconds: float, key: str
) -> dict[str, list[float]]:
    """Per-round figures of each pair, the pairs taking turns (the order rotating)."""
    kinds = list(pairs)
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_number in range(ROUNDS):
        shift = round_number % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            rates[kind].append(pairs[kind].ask(f"seq {seconds / ROUNDS}")[key])
    return rates


def _ratio(rates: dict[str, list[float]], over: str, under: str) -> float:
    """The median of the per-round ratios of two series."""
    return round(
        statistics.median(o / u for o, u in zip(rates[over], rates[under], strict=True)), 3
    )


def _measure(
    seconds: float, cpu: int | None, generic: bool, base: str | None = None,
    others: Sequence[str] = (),
) -> dict[str, Any]:
    """Interleave series of the pairs, so that the machine's drift hits all alike."""
    kinds = ["plain", "buffered", "ocapn"]
    pairs = {kind: _Pair(kind, cpu, generic) for kind in kinds}
    if base is not None:
        pairs["base"] = _Pair("ocapn", cpu, generic, cwd=base)
    for other in others:
        pairs[other] = _Pair("ocapn", cpu, generic, cwd=other)
    try:
        rates = _interleaved(pairs, seconds, "rt_per_s")
        bursts = {kind: statistics.median(pairs[kind].ask("burst")["burst_s"] for _ in range(3))
                  for kind in pairs}
    finally:
        for pair in pairs.values():
            pair.close()
    median = {kind: statistics.median(values) for kind, values in rates.items()}
    per_round = [o / p for o, p in zip(rates["ocapn"], rates["plain"], strict=True)]
    per_round_buffered = [o / b for o, b in zip(rates["ocapn"], rates["buffered"], strict=True)]
    extra: dict[str, Any] = {}
    if others:
        extra["others"] = {
            other: {
                "rt_per_s": round(median[other]),
                "ratio_to_protocol": _ratio(rates, other, "plain"),
                "ratio_to_buffered": _ratio(rates, other, "buffered"),
                "this_over_it": _ratio(rates, "ocapn", other),
                "concurrent_10k_s": round(bursts[other], 3),
            }
            for other in others
        }
    if base is not None:
        extra |= {
            "base_rt_per_s": round(median["base"]),
            "base_ratio_to_protocol": _ratio(rates, "base", "plain"),
            "base_ratio_to_buffered": _ratio(rates, "base", "buffered"),
            "speedup_over_base": _ratio(rates, "ocapn", "base"),
            "base_concurrent_10k_s": round(bursts["base"], 3),
        }
    return extra | {
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


# == per side: loop iterations and CPU per round trip ========================================


class _CountingSelector(selectors.DefaultSelector):
    """The event loop's selector, counting its ``select`` calls: one per loop iteration."""

    calls = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.calls += 1
        events: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
        return events


def _counters(selector: _CountingSelector) -> tuple[float, float, int, int, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw, usage.ru_nivcsw, selector.calls


def _per_round_trip(
    before: tuple[float, float, int, int, int], after: tuple[float, float, int, int, int], n: int
) -> dict[str, float]:
    user, system, voluntary, involuntary, iterations = (b - a for a, b in zip(
        before, after, strict=True
    ))
    return {
        "iterations": round(iterations / n, 3),
        "cpu_us": round((user + system) / n * 1e6, 1),
        "user_us": round(user / n * 1e6, 1),
        "sys_us": round(system / n * 1e6, 1),
        "voluntary_switches": round(voluntary / n, 3),
        "involuntary_switches": round(involuntary / n, 3),
    }


def _counting_loop(selector: _CountingSelector) -> dict[str, Any]:
    return {"loop_factory": lambda: asyncio.SelectorEventLoop(selector)}


def _side_server() -> None:
    """An OCapN server; on stdin ``mark`` starts counting, ``report N`` prints per round trip."""
    import anyio

    from captp import far
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    @far
    class Bench:
        def ping(self) -> None:
            return None

    selector = _CountingSelector()

    async def main() -> None:
        async with Node(TcpTestingNetlayer()) as node:
            print(node.publish(Bench()), flush=True)
            loop = asyncio.get_running_loop()
            mark = _counters(selector)
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                command, *rest = line.split() or ["quit"]
                if command == "mark":
                    mark = _counters(selector)
                    print("{}", flush=True)
                elif command == "report":
                    after = _counters(selector)
                    print(json.dumps(_per_round_trip(mark, after, int(rest[0]))), flush=True)
                else:
                    return

    anyio.run(main, backend="asyncio", backend_options=_counting_loop(selector))


def _side_client(uri: str) -> None:
    """An OCapN client; on stdin ``seq N`` makes N round trips and prints its figures."""
    import anyio

    from captp import E
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    selector = _CountingSelector()

    async def main() -> None:
        async with Node(TcpTestingNetlayer()) as node:
            ref = await node.enliven(uri)
            for _ in range(500):
                await E(ref).ping()

            async def seq(count: str) -> dict[str, Any]:
                n = int(count)
                before = _counters(selector)
                start = time.perf_counter()
                for _ in range(n):
                    await E(ref).ping()
                wall = time.perf_counter() - start
                figures = _per_round_trip(before, _counters(selector), n)
                return {**figures, "wall_us": round(wall / n * 1e6, 1)}

            await _answer({"seq": seq})

    anyio.run(main, backend="asyncio", backend_options=_counting_loop(selector))


def _checkouts(base: str | None, others: Sequence[str]) -> dict[str, str | None]:
    """The checkouts a per-side mode runs, by name: this one (None), the base, the others."""
    checkouts: dict[str, str | None] = {"this": None}
    if base is not None:
        checkouts["base"] = base
    checkouts.update((other, other) for other in others)
    return checkouts


def _measure_per_side(
    cpu: int, round_trips: int, base: str | None, others: Sequence[str]
) -> dict[str, Any]:
    """Each checkout's per-side figures: medians of interleaved series."""
    checkouts = _checkouts(base, others)
    pairs = {name: _Pair("side", cpu, False, cwd) for name, cwd in checkouts.items()}
    series: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"server": [], "client": []} for name in pairs
    }
    try:
        names = list(pairs)
        for round_number in range(ROUNDS):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                pair = pairs[name]
                pair.tell_server("mark")
                series[name]["client"].append(pair.ask(f"seq {round_trips}"))
                series[name]["server"].append(pair.tell_server(f"report {round_trips}"))
    finally:
        for pair in pairs.values():
            pair.close()
    return {
        name: {
            side: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
            for side, rounds in sides.items()
        }
        for name, sides in series.items()
    }


def _measure_instructions(
    cpu: int, round_trips: int, base: str | None, others: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Each checkout's instructions per round trip on each side (callgrind, one side at a time)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    checkouts = _checkouts(base, others)
    counts: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="ocapn-callgrind-") as tmp:
        for name, cwd in checkouts.items():
            counts[name] = {}
            for side in ("server", "client"):
                out = os.path.join(tmp, f"{len(counts)}-{side}.%p")
                valgrind = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no",
                            f"--callgrind-out-file={out}"]
                wrappers = {f"{side}_wrapper": valgrind}
                pair = _Pair("side", cpu, False, cwd, **wrappers)
                try:
                    pid = (pair.server if side == "server" else pair.client).pid
                    pair.ask("seq 200")  # more warm-up, now under valgrind's translation
                    _callgrind_control(pid, "-i", "on")
                    pair.ask(f"seq {round_trips}")
                    _callgrind_control(pid, "-d")
                    counts[name][side] = _callgrind_total(out.replace("%p", str(pid)) + ".1")
                    _callgrind_control(pid, "-i", "off")
                finally:
                    pair.close()
            counts[name] = {side: n // round_trips for side, n in counts[name].items()}
    return counts


def _callgrind_control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _callgrind_total(path: str) -> int:
    """The instruction count a callgrind dump records."""
    with open(path) as dump:
        for line in dump:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no total in {path}")


# == a 1 MB bytes argument against a raw socket copy =========================================

BULK: Final = 1_000_000


def _raw_bulk_server() -> None:
    """Blocking sockets: read a 4-byte length and that many bytes, answer one byte."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(BULK + 4)
    view = memoryview(buffer)
    while True:
        got = 0
        while got < 4 or got < 4 + HEADER.unpack_from(buffer)[0]:
            n = conn.recv_into(view[got:])
            if n == 0:
                return
            got += n
        conn.sendall(b"k")


def _raw_bulk_client(port: int) -> None:
    import socket

    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = HEADER.pack(BULK) + bytes(BULK)

    def transfer() -> None:
        conn.sendall(message)
        if conn.recv(1) != b"k":
            raise RuntimeError("the raw server did not answer")

    def series(seconds: float) -> float:
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            transfer()
            n += 1
        return n * BULK / 1e6 / (time.perf_counter() - start)

    series(0.3)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *rest = line.split() or ["quit"]
        if command != "seq":
            return
        print(json.dumps({"mb_per_s": series(float(rest[0]))}), flush=True)


def _ocapn_bulk_client(uri: str, generic: bool) -> None:
    import anyio

    from captp import E
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    async def main() -> None:
        async with Node(TcpTestingNetlayer(fast_path=not generic)) as node:
            ref = await node.enliven(uri)
            blob = bytes(BULK)

            async def series(seconds: float) -> float:
                n = 0
                start = time.perf_counter()
                while time.perf_counter() - start < seconds:
                    if await E(ref).size(blob) != BULK:
                        raise RuntimeError("the OCapN server got the wrong size")
                    n += 1
                return n * BULK / 1e6 / (time.perf_counter() - start)

            await series(0.3)

            async def seq(seconds: str) -> dict[str, Any]:
                return {"mb_per_s": await series(float(seconds))}

            await _answer({"seq": seq})

    anyio.run(main)


def _measure_bulk(seconds: float, cpu: int, generic: bool, base: str | None) -> dict[str, Any]:
    pairs = {"raw": _Pair("raw-bulk", cpu, generic), "ocapn": _Pair("ocapn-bulk", cpu, generic)}
    if base is not None:
        pairs["base"] = _Pair("ocapn-bulk", cpu, generic, cwd=base)
    try:
        rates = _interleaved(pairs, seconds, "mb_per_s")
    finally:
        for pair in pairs.values():
            pair.close()
    result: dict[str, Any] = {
        f"{kind}_mb_per_s": round(statistics.median(values), 1) for kind, values in rates.items()
    }
    result["ratio_to_raw"] = _ratio(rates, "ocapn", "raw")
    if base is not None:
        result["base_ratio_to_raw"] = _ratio(rates, "base", "raw")
    return result


# == memory per idle session ================================================================


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _idle_server() -> None:
    """An OCapN node; on stdin ``mem`` prints its RSS and traced Python heap."""
    import tracemalloc

    import anyio

    from captp import far
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    @far
    class Bench:
        def ping(self) -> None:
            return None

    async def main() -> None:
        tracemalloc.start()
        async with Node(TcpTestingNetlayer()) as node:
            print(node.publish(Bench()), flush=True)
            loop = asyncio.get_running_loop()
            while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "mem":
                gc.collect()
                heap = tracemalloc.get_traced_memory()[0]
                print(json.dumps({"rss_kib": _rss_kib(), "heap": heap}), flush=True)

    anyio.run(main)


def _idle_clients(uri: str, count: int) -> None:
    """``count`` client nodes, each with one live session to ``uri``, held open."""
    import anyio

    from captp import E
    from netlayers import TcpTestingNetlayer
    from ocapn import Node

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(count):
                node = await stack.enter_async_context(Node(TcpTestingNetlayer()))
                await E(await node.enliven(uri)).ping()
            print("ready", flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.readline)

    anyio.run(main)


def _measure_idle(count: int, base: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {"sessions": count}
    for name, cwd in [("this", None), ("base", base)]:
        if name == "base" and base is None:
            continue
        server = _child(["--role", "idle-server"], None, False, cwd)
        assert server.stdin is not None and server.stdout is not None
        uri = server.stdout.readline().strip()

        def mem(server: subprocess.Popen[str] = server) -> dict[str, int]:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write("mem\n")
            server.stdin.flush()
            answer: dict[str, int] = json.loads(server.stdout.readline())
            return answer

        clients = []
        try:
            for how_many in (1, count):  # one session first, so lazy imports are done
                client = _child(
                    ["--role", "idle-clients", "--address", uri, "--count", str(how_many)],
                    None, False, cwd,
                )
                assert client.stdout is not None
                if client.stdout.readline().strip() != "ready":
                    raise RuntimeError("the idle clients did not start")
                clients.append(client)
                if how_many == 1:
                    time.sleep(0.5)
                    before = mem()
            time.sleep(0.5)
            after = mem()
        finally:
            for client in clients:
                assert client.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    client.stdin.write("\n")
                    client.stdin.flush()
                client.wait(60)
            server.terminate()
            server.wait()
        prefix = "" if name == "this" else "base_"
        result[prefix + "rss_kib_per_session"] = round(
            (after["rss_kib"] - before["rss_kib"]) / count, 1
        )
        result[prefix + "heap_kib_per_session"] = round(
            (after["heap"] - before["heap"]) / 1024 / count, 1
        )
    return result


# == where the CPU of a round trip goes, by layer ==========================================

_LAYER_ROUND_TRIPS: Final = 4000


def _layer_of(filename: str, function: str) -> str:
    if "_syrup_" in filename:
        return "syrup"
    if filename.endswith(os.path.join("ocapn", "wire.py")):
        return "ocapn wire"
    if f"{os.sep}ocapn{os.sep}" in filename:
        return "ocapn session/node"
    if f"{os.sep}captp{os.sep}" in filename:
        return "captp engine"
    if f"{os.sep}netlayers{os.sep}" in filename:
        return "netlayers channel"
    if "asyncio" in filename or "selectors" in filename or "anyio" in filename:
        return "asyncio/anyio"
    if function.startswith(("<method 'send'", "<method 'recv_into'", "<method 'poll'")):
        return "system calls"
    return "builtins (dict, list, ...) and the rest"


def _layers() -> dict[str, float]:
    """Each layer's share of the CPU of ping round trips between two nodes in this process."""
    import cProfile
    import pstats

    import anyio

    from captp import E, far
    from netlayers import tcp_testing_only
    from ocapn import Node

    @far
    class Bench:
        def ping(self) -> None:
            return None

    shares: dict[str, float] = {}

    async def main() -> None:
        async with Node(tcp_testing_only()) as a, Node(tcp_testing_only()) as b:
            ref = await b.enliven(a.publish(Bench()))
            for _ in range(500):
                await E(ref).ping()
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            for _ in range(_LAYER_ROUND_TRIPS):
                await E(ref).ping()
            profile.disable()
        stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        for (filename, _, function), (_, _, tottime, _, _) in stats.items():
            layer = _layer_of(filename, function)
            shares[layer] = shares.get(layer, 0.0) + tottime
        total = sum(shares.values())
        for layer in shares:
            shares[layer] = round(shares[layer] / total, 3)
        shares["profiled_cpu_us_per_round_trip"] = round(total / _LAYER_ROUND_TRIPS * 1e6, 1)

    anyio.run(main)
    return dict(sorted(shares.items(), key=lambda item: -item[1]))


def _print_layers(name: str, shares: dict[str, float]) -> None:
    print(f"{name}: {shares['profiled_cpu_us_per_round_trip']} us of CPU per round trip"
          " under cProfile (which inflates Python-heavy layers); shares:")
    for layer, share in shares.items():
        if layer != "profiled_cpu_us_per_round_trip":
            print(f"  {layer:42s} {share:6.1%}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=7.0, help="sequential time per pair, over all rounds"
    )
    parser.add_argument("--cpu", type=int, default=None, help="the CPU for the pinned runs")
    parser.add_argument("--placement", default="both", choices=["pinned", "unpinned", "both"])
    parser.add_argument("--generic", action="store_true",
                        help="OCapN over the generic anyio path, not the asyncio fast path")
    parser.add_argument("--base", help="also run OCapN from the checkout in this directory")
    parser.add_argument("--other", action="append", default=[], metavar="DIR",
                        help="and from this checkout too (repeatable; round trips only)")
    parser.add_argument("--bulk", action="store_true",
                        help="measure a 1 MB bytes argument against a raw socket copy")
    parser.add_argument("--layers", action="store_true",
                        help="profile round trips in this process; each layer's share of the CPU")
    parser.add_argument("--per-side", action="store_true",
                        help="loop iterations, CPU and context switches per round trip, each side")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per round trip on each side (callgrind)")
    parser.add_argument("--round-trips", type=int, default=3000,
                        help="round trips per series with --per-side (per count: --instructions)")
    parser.add_argument("--idle", type=int, metavar="N",
                        help="measure the server's memory per idle session, over N sessions")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    base = os.path.abspath(args.base) if args.base else None

    if args.role is not None:  # a child process
        _pin(args.cpu)
        gc.collect()
        if args.role == "plain-server":
            asyncio.run(_plain_server(False))
        elif args.role == "buffered-server":
            asyncio.run(_plain_server(True))
        elif args.role in ("plain-client", "buffered-client"):
            asyncio.run(_plain_client(int(args.address), args.role == "buffered-client"))
        elif args.role in ("ocapn-server", "ocapn-bulk-server"):
            _ocapn_server(args.generic)
        elif args.role == "ocapn-client":
            _ocapn_client(args.address, args.generic)
        elif args.role == "raw-bulk-server":
            _raw_bulk_server()
        elif args.role == "raw-bulk-client":
            _raw_bulk_client(int(args.address))
        elif args.role == "ocapn-bulk-client":
            _ocapn_bulk_client(args.address, args.generic)
        elif args.role == "idle-server":
            _idle_server()
        elif args.role == "idle-clients":
            _idle_clients(args.address, args.count)
        elif args.role == "layers":
            print(json.dumps(_layers()))
        elif args.role == "side-server":
            _side_server()
        elif args.role == "side-client":
            _side_client(args.address)
        return

    cpus = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else (1 if 1 in cpus else cpus[0])
    figures: dict[str, Any] = {
        "bench": "ocapn_tcp",
        "python": sys.version.split()[0],
        "ocapn_path": "generic anyio" if args.generic else "asyncio fast path",
    }
    if args.per_side:
        figures["bench"] = "ocapn_tcp per side"
        sides = figures["per_side"] = _measure_per_side(
            cpu, args.round_trips, base, [os.path.abspath(other) for other in args.other]
        )
        print(f"per round trip of await E(ref).ping(), both sides on CPU {cpu} (medians of"
              f" {ROUNDS} interleaved series of {args.round_trips}):")
        print(f"  {'checkout':28s} {'side':7s} {'iterations':>10s} {'CPU us':>7s} {'user':>6s}"
              f" {'sys':>5s} {'switches vol/invol':>19s}")
        for name, per_side in sides.items():
            for side, it in per_side.items():
                print(f"  {name[-28:]:28s} {side:7s} {it['iterations']:10.2f} {it['cpu_us']:7.1f}"
                      f" {it['user_us']:6.1f} {it['sys_us']:5.1f} {it['voluntary_switches']:9.2f}"
                      f"/{it['involuntary_switches']:.2f}")
            print(f"  {'':28s} wall per round trip {per_side['client']['wall_us']:.1f} us")
        print(json.dumps(figures))
        return
    if args.instructions:
        figures["bench"] = "ocapn_tcp instructions"
        n = args.round_trips
        counts = figures["instructions_per_round_trip"] = _measure_instructions(
            cpu, n, base, [os.path.abspath(other) for other in args.other]
        )
        print(f"instructions per round trip of await E(ref).ping(), both sides on CPU {cpu}"
              f" (callgrind, {n} round trips after warm-up):")
        print(f"  {'checkout':40s} {'server':>9s} {'client':>9s}")
        for name, sides in counts.items():
            print(f"  {name[-40:]:40s} {sides['server']:9d} {sides['client']:9d}")
        print(json.dumps(figures))
        return
    if args.layers:
        figures["bench"] = "ocapn_tcp layers"
        _pin(cpu)
        figures["layers"] = _layers()
        _print_layers("this checkout", figures["layers"])
        if base is not None:
            child = _child(["--role", "layers"], cpu, False, base)
            out, _ = child.communicate()
            figures["base_layers"] = json.loads(out.splitlines()[-1])
            _print_layers(f"base ({base})", figures["base_layers"])
        print(json.dumps(figures))
        return
    if args.idle is not None:
        figures["bench"] = "ocapn_tcp idle sessions"
        idle = figures["idle"] = _measure_idle(args.idle, base)
        print(f"server memory per idle session, over {args.idle} sessions: "
              f"{idle['rss_kib_per_session']} KiB RSS, {idle['heap_kib_per_session']} KiB "
              "Python heap" + (f"; base: {idle['base_rss_kib_per_session']} KiB RSS, "
                               f"{idle['base_heap_kib_per_session']} KiB heap" if base else ""))
        print(json.dumps(figures))
        return
    if args.bulk:
        figures["bench"] = "ocapn_tcp bulk"
        bulk = figures["bulk_pinned"] = _measure_bulk(args.seconds, cpu, args.generic, base)
        print(f"a 1 MB bytes argument, pinned to CPU {cpu}: raw socket copy "
              f"{bulk['raw_mb_per_s']} MB/s, OCapN {bulk['ocapn_mb_per_s']} MB/s: "
              f"{bulk['ratio_to_raw']:.0%} of raw"
              + (f"; base {bulk['base_mb_per_s']} MB/s: {bulk['base_ratio_to_raw']:.0%}"
                 if base else ""))
        print(json.dumps(figures))
        return
    placements = ["pinned", "unpinned"] if args.placement == "both" else [args.placement]
    for placement in placements:
        result = _measure(
            args.seconds, cpu if placement == "pinned" else None, args.generic, base,
            [os.path.abspath(other) for other in args.other],
        )
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
        if base is not None:
            print(f"  base OCapN ({base}):  {result['base_rt_per_s']:8d} rt/s"
                  f"   10k concurrent {result['base_concurrent_10k_s']:.3f} s;"
                  f" base / Protocol {result['base_ratio_to_protocol']:.0%},"
                  f" base / BufferedProtocol {result['base_ratio_to_buffered']:.0%};"
                  f" this / base {result['speedup_over_base']:.2f}x")
        for other, it in result.get("others", {}).items():
            print(f"  other OCapN ({other}):  {it['rt_per_s']:8d} rt/s"
                  f"   10k concurrent {it['concurrent_10k_s']:.3f} s;"
                  f" / Protocol {it['ratio_to_protocol']:.0%},"
                  f" / BufferedProtocol {it['ratio_to_buffered']:.0%};"
                  f" this / it {it['this_over_it']:.2f}x")
    if "pinned" in figures:
        pinned = figures["pinned"]
        figures["target_ratio"] = TARGET_RATIO
        figures["target_buffered_ratio"] = TARGET_BUFFERED_RATIO
        figures["target_met"] = (
            pinned["ratio_to_protocol"] >= TARGET_RATIO
            and pinned["ratio_to_buffered"] >= TARGET_BUFFERED_RATIO
        )
        print(f"target: OCapN >= {TARGET_RATIO:.0%} of the Protocol ping-pong and "
              f">= {TARGET_BUFFERED_RATIO:.0%} of the BufferedProtocol one, pinned: "
              f"{'met' if figures['target_met'] else 'NOT met'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    run()
