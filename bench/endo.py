"""Endo CapTP over TCP: the Python stack against Node's, measured in one run.

    python -m bench.endo [--trials 3] [--seconds 2] [--calls 10000] [--backend asyncio]

Needs Node and ``npm ci --prefix interop/js``.  Node runs under full
``@endo/init`` lockdown, as the Endo daemon does.  Every run is a client
talking to a server over 127.0.0.1 with netstring framing:

* ``node_to_node``: ``interop/js/bench.mjs`` -> ``interop/js/server.mjs``
* ``python_to_node``: ``captp.endo.connect_tcp`` -> ``interop/js/server.mjs``
* ``node_to_python``: ``interop/js/bench.mjs`` -> ``python -m interop.endo_peer``
* ``raw_to_node``: a bare asyncio protocol sending pre-encoded ``ping``
  frames -> ``server.mjs`` (the floor: no CapTP work on the Python side)

``--base DIR`` also runs ``node_to_base_python``: the same Node client against
``interop.endo_peer`` from the checkout in DIR, in each trial right after
``node_to_python``, and prints the median of the per-trial ratios of this
server over that one (so a change is measured against its base in one run).

Each client opens a fresh connection, warms up, then measures **seq**
(sequential ``ping()`` for ``--seconds``: round trips per second) and
**conc** (``--calls`` concurrent ``echo(i)``: calls per second until all have
settled).  Trials interleave the runs so that machine noise hits all of them
alike; figures are medians.  Ratios are Python over Node (above 1: Python is
faster): our client against JS's client on the same server, and our server
against JS's server with the same client.  The last line of output is JSON
with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from captp import E
from netlayers.endo_tcp import connect_tcp

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "interop" / "js"


@contextmanager
def running(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Start a server that prints ``listening PORT``; yield the port; stop it."""
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=None if env is None else {**os.environ, **env},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "listening":
            raise RuntimeError(f"{command} printed {line!r} instead of 'listening PORT'")
        yield int(line[1])
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def _no_server() -> Iterator[int]:
    yield 0


def node_client(node: str, port: int, seconds: float, calls: int) -> dict[str, float]:
    """One run of ``bench.mjs`` against ``port``."""
    out = subprocess.run(
        [node, "bench.mjs", "--port", str(port), "--seconds", str(seconds), "--calls", str(calls)],
        cwd=JS_DIR, capture_output=True, check=True, timeout=300,
    )
    result: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


async def python_client(port: int, seconds: float, calls: int) -> dict[str, float]:
    """The same measurement as ``bench.mjs``, with ``captp.endo.connect_tcp``."""
    async with connect_tcp("127.0.0.1", port, name="bench") as conn:
        boot = await conn.bootstrap()
        for _ in range(300):
            await E(boot).ping()
        for p in [E(boot).echo(float(i)) for i in range(1000)]:
            await p
        count = 0
        cpu0, start = time.process_time(), time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            await E(boot).ping()
            count += 1
        seq = count / (time.perf_counter() - start)
        seq_cpu_us = (time.process_time() - cpu0) / count * 1e6
        t0 = time.perf_counter()
        promises = [E(boot).echo(float(i)) for i in range(calls)]
        last = None
        for p in promises:
            last = await p
        conc = calls / (time.perf_counter() - t0)
        if last != [float(calls - 1)]:
            raise RuntimeError(f"echo returned {last!r}")
    return {"seq": seq, "conc": conc, "seqCpuUs": seq_cpu_us}


async def raw_client(port: int, seconds: float) -> dict[str, float]:
    """Sequential pings from a bare asyncio protocol with pre-built frames: the floor."""
    loop = asyncio.get_running_loop()
    waiter: list[asyncio.Future[None]] = []

    class Ping(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:  # each answer fits one read here
            if data.endswith(b",") and waiter and not waiter[0].done():
                waiter[0].set_result(None)

    transport, _ = await loop.create_connection(Ping, "127.0.0.1", port)

    async def ask(frame: bytes) -> None:
        waiter[:] = [loop.create_future()]
        transport.write(frame)
        await waiter[0]

    def frame(text: str) -> bytes:
        data = text.encode()
        return b"%d:%b," % (len(data), data)

    await ask(frame('{"type":"CTP_BOOTSTRAP","epoch":0,"questionID":"q-1"}'))
    call = '{"type":"CTP_CALL","epoch":0,"questionID":"q-%d","target":"o-1","method":{"body":"[\\"ping\\",[]]","slots":[]}}'  # noqa: E501
    n = 2
    for _ in range(300):
        await ask(frame(call % n))
        n += 1
    count = 0
    cpu0, start = time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        await ask(frame(call % n))
        n += 1
        count += 1
    elapsed = time.perf_counter() - start
    transport.close()
    return {"seq": count / elapsed, "seqCpuUs": (time.process_time() - cpu0) / count * 1e6}


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table, then one line of JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.endo", description="Endo CapTP over TCP: Python against Node."
    )
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each seq run")
    parser.add_argument("--calls", type=int, default=10_000, help="calls in each conc run")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--base", help="also measure the Python server of this checkout")
    args = parser.parse_args(argv)
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@endo" / "captp").exists():
        print("needs node and `npm ci --prefix interop/js`", file=sys.stderr)
        return 2

    runs: dict[str, list[dict[str, float]]] = {
        "node_to_node": [], "python_to_node": [], "node_to_python": [], "raw_to_node": [],
    }
    steps: list[tuple[str, Callable[[int], dict[str, float]]]] = [
        ("node_to_node", lambda port: node_client(node, port, args.seconds, args.calls)),
        ("python_to_node", lambda port: anyio.run(
            python_client, port, args.seconds, args.calls, backend=args.backend)),
        ("raw_to_node", lambda port: anyio.run(raw_client, port, args.seconds)),
    ]
    base = str(Path(args.base).resolve()) if args.base else None
    base_command = [sys.executable, "-m", "interop.endo_peer", "--port", "0"]
    if base is not None:
        runs["node_to_base_python"] = []
    with running([node, "server.mjs", "--port", "0"], JS_DIR) as node_port, running(
        [sys.executable, "-m", "interop.endo_peer", "--port", "0"], ROOT
    ) as python_port, (
        running(base_command, Path(base), {"PYTHONPATH": base}) if base else _no_server()
    ) as base_port:
        for trial in range(args.trials):
            for name, run in steps:
                runs[name].append(run(node_port))
            runs["node_to_python"].append(node_client(node, python_port, args.seconds, args.calls))
            if base is not None:
                runs["node_to_base_python"].append(
                    node_client(node, base_port, args.seconds, args.calls)
                )
            print(f"trial {trial + 1}/{args.trials} done", file=sys.stderr)

    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    figures: dict[str, Any] = {
        name: {key: round(median(r, key), 1) for key in r[0] if key != "rss"}
        for name, r in runs.items()
    }
    ratios = {
        "python_client_seq": figures["python_to_node"]["seq"] / figures["node_to_node"]["seq"],
        "python_client_conc": figures["python_to_node"]["conc"] / figures["node_to_node"]["conc"],
        "python_server_seq": figures["node_to_python"]["seq"] / figures["node_to_node"]["seq"],
        "python_server_conc": figures["node_to_python"]["conc"] / figures["node_to_node"]["conc"],
    }
    print(f"Endo CapTP over TCP: Node {version} under full lockdown (@endo/init), "
          f"Python {platform.python_version()} ({args.backend}), median of {args.trials} trials")
    print(f"{'':22}{'seq rt/s':>12}{'conc calls/s':>15}{'client CPU us/rt':>19}")
    for name, fig in figures.items():
        conc = f"{fig['conc']:15.0f}" if "conc" in fig else f"{'-':>15}"
        cpu = f"{fig['seqCpuUs']:19.1f}" if "seqCpuUs" in fig else f"{'-':>19}"
        print(f"{name.replace('_to_', ' -> '):22}{fig['seq']:12.0f}{conc}{cpu}")
    print(f"Python client / Node client: seq {ratios['python_client_seq']:.2f}x, "
          f"conc {ratios['python_client_conc']:.2f}x")
    print(f"Python server / Node server: seq {ratios['python_server_seq']:.2f}x, "
          f"conc {ratios['python_server_conc']:.2f}x")
    if base is not None:
        for key in ("seq", "conc"):
            ratios[f"python_server_over_base_{key}"] = statistics.median(
                new[key] / old[key]
                for new, old in zip(runs["node_to_python"], runs["node_to_base_python"],
                                    strict=True)
            )
        print(f"Python server / base Python server ({base}), median of per-trial ratios: "
              f"seq {ratios['python_server_over_base_seq']:.2f}x, "
              f"conc {ratios['python_server_over_base_conc']:.2f}x")
    print(json.dumps({
        "bench": "endo",
        **figures,
        "ratio": {k: round(v, 3) for k, v in ratios.items()},
        "trials": args.trials, "seconds": args.seconds, "calls": args.calls,
        "node": version, "python": platform.python_version(), "backend": args.backend,
        "lockdown": "full",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
