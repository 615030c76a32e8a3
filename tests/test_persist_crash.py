"""Kill -9 a node with a state directory in the middle of a write-heavy workload.

A real second process (``tests/persist_node.py``) serves persistent counters
and logs over tcp-testing-only; this process drives it from several tasks at
once (make, increment, append, revoke) and kills it with SIGKILL at a random
moment, then restarts it on the same directory, over several rounds.  After
each kill: the database passes SQLite's integrity check and its lock is
free; every URI the node printed enlivens; every acknowledged change is
there (a counter is at least its acknowledged count and at most what was
sent; a log is its acknowledged entries, perhaps plus the one in flight);
every acknowledged revocation holds.  The child runs on the same backend as
the test (asyncio, uvloop, trio).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from procs import TESTS, stop

from captp import E
from captp.errors import CapTPError, RemoteError
from netlayers import tcp_testing_only
from ocapn import Node
from ocapn.persist import StateStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROUNDS = 4
WORKERS = 6


def backend_name(anyio_backend: Any) -> str:
    name, options = anyio_backend
    return "uvloop" if options.get("use_uvloop") else str(name)


class Ledger:
    """What the driver sent and what the node acknowledged."""

    def __init__(self) -> None:
        self.counters: dict[str, list[int]] = {}  # uri -> [acked, sent]
        self.logs: dict[str, list[Any]] = {}  # uri -> acked entries
        self.log_in_flight: dict[str, Any] = {}
        self.revoked: set[str] = set()
        self.revoking: set[str] = set()
        self.busy: set[str] = set()  # logs with an append in flight (one at a time per log)
        self.acks = 0  # increments acknowledged, all rounds
        self.dirs: dict[str, set[str]] = {}  # uri -> names acknowledged
        self.dir_in_flight: dict[str, set[str]] = {}  # uri -> names sent, not acknowledged


async def first_line(proc: subprocess.Popen[str]) -> str:
    """The next line ``proc`` prints (a cancel scope around the call can give up on it)."""
    assert proc.stdout is not None
    line = await anyio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
    return line.strip()


async def start(state: Path, backend: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "persist_node.py"), str(state), backend],
        stdout=subprocess.PIPE, text=True, cwd=TESTS.parent,
    )
    try:
        with anyio.fail_after(60):
            line = await first_line(proc)
    except BaseException:
        stop(proc, 5)
        raise
    if not line:
        stop(proc, 5)
        raise RuntimeError(f"the node printed nothing (exit {proc.poll()})")
    return proc, line


async def verify(client: Node, ledger: Ledger) -> None:
    """Every acknowledged change is there; every URI enlivens."""
    for uri, counts in ledger.counters.items():
        if uri in ledger.revoking:
            continue
        value = await E(await client.enliven(uri)).value()
        acked, sent = counts
        assert acked <= value <= sent, f"counter {uri}: {value} not in [{acked}, {sent}]"
        counts[0] = counts[1] = value  # what the store holds is now the truth
    for uri, entries in ledger.logs.items():
        got = await E(await client.enliven(uri)).all()
        allowed = [entries]
        if uri in ledger.log_in_flight:
            allowed.append([*entries, ledger.log_in_flight.pop(uri)])
        assert got in allowed, f"log {uri}: {got} is not {allowed}"
        ledger.logs[uri] = got
    for uri, names in ledger.dirs.items():
        directory = await client.enliven(uri)
        got = set(await E(directory).names())
        in_flight = ledger.dir_in_flight.pop(uri, set())
        assert names <= got <= names | in_flight, f"dir {uri}: {got} vs {names} + {in_flight}"
        ledger.dirs[uri] = got
        for name in got:  # each held counter was stored with its holder's state
            assert await E(E(directory).get(name)).value() >= 0
    for uri in ledger.revoked:
        with pytest.raises(RemoteError, match="no object at that swiss number"):
            await client.enliven(uri)
    # A revocation in flight either happened or did not; both are fine, once.
    for uri in list(ledger.revoking):
        try:
            await client.enliven(uri)
        except RemoteError:
            ledger.revoked.add(uri)
        ledger.counters.pop(uri, None)
        ledger.revoking.discard(uri)
    ledger.busy.clear()


async def worker(bank: Any, ledger: Ledger, rng: random.Random, client: Node) -> None:
    while True:
        action = rng.random()
        live = [u for u in ledger.counters if u not in ledger.revoking]
        if action < 0.1 or not live:
            uri = await E(bank).make_counter()
            ledger.counters[uri] = [0, 0]
        elif action < 0.15:
            ledger.logs[await E(bank).make_log()] = []
        elif action < 0.17:
            ledger.dirs[await E(bank).make_dir()] = set()
        elif 0.22 <= action < 0.32 and ledger.dirs:
            uri = rng.choice(list(ledger.dirs))
            name = f"n{rng.randrange(1 << 30)}"
            ledger.dir_in_flight.setdefault(uri, set()).add(name)
            counter = E(await client.enliven(uri)).make(name)
            assert await E(counter).incr() == 1  # pipelined on the new, held counter
            ledger.dirs[uri].add(name)
            ledger.dir_in_flight[uri].discard(name)
            ledger.acks += 1
        elif action < 0.22 and len(live) > 3:
            uri = rng.choice(live)
            ledger.revoking.add(uri)
            assert await E(bank).revoke(uri) is True
            ledger.revoking.discard(uri)
            ledger.revoked.add(uri)
            del ledger.counters[uri]
        elif action < 0.45 and ledger.logs:
            uri = rng.choice(list(ledger.logs))
            if uri in ledger.busy:
                continue
            entry = [rng.randrange(1 << 40), os.urandom(rng.randrange(1, 64))]
            ledger.busy.add(uri)
            ledger.log_in_flight[uri] = entry
            await E(await client.enliven(uri)).add(entry)
            ledger.logs[uri].append(entry)
            ledger.acks += 1
            del ledger.log_in_flight[uri]
            ledger.busy.discard(uri)
        else:
            uri = rng.choice(live)
            counts = ledger.counters[uri]
            counts[1] += 1
            try:
                value = await E(await client.enliven(uri)).incr()
            except RemoteError:
                if uri in ledger.revoking or uri in ledger.revoked:
                    continue  # another worker revoked it meanwhile
                raise
            if uri in ledger.counters:
                counts[0] = max(counts[0], value)
            ledger.acks += 1


async def workload(bank: Any, ledger: Ledger, rng: random.Random, client: Node) -> None:
    async def one(seed: int) -> None:
        with contextlib.suppress(CapTPError, OSError):  # the node was killed under us
            await worker(bank, ledger, random.Random(seed), client)

    async with anyio.create_task_group() as tg:
        for _ in range(WORKERS):
            tg.start_soon(one, rng.randrange(1 << 32))


async def test_kill_9_at_random_points_loses_no_acknowledged_change(
    tmp_path: Path, anyio_backend: Any
) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    backend = backend_name(anyio_backend)
    ledger = Ledger()
    bank_uri = None
    proc = None
    try:
        for round_ in range(ROUNDS + 1):
            proc, uri = await start(tmp_path, backend)
            assert bank_uri in (None, uri), f"seed {seed}: the bank's URI changed"
            bank_uri = uri
            async with Node(tcp_testing_only()) as client:
                with anyio.fail_after(120):
                    bank = await client.enliven(uri)
                    await verify(client, ledger)
                    if round_ == ROUNDS:
                        break
                    kill_at = rng.uniform(0.05, 1.0)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(workload, bank, ledger, rng, client)
                        await anyio.sleep(kill_at)
                        os.kill(proc.pid, signal.SIGKILL)
                        await anyio.to_thread.run_sync(proc.wait)
            with StateStore(tmp_path) as store:  # the dead node's lock is free
                assert store.check() == [], f"seed {seed}"
    finally:
        if proc is not None:
            stop(proc, 10)
    assert ledger.acks > 20 * ROUNDS and ledger.revoked, f"seed {seed}: too little work"
    held = sum(len(names) for names in ledger.dirs.values())
    assert held > 0, f"seed {seed}: no directory entry was made"
    print(f"seed {seed}: {ledger.acks} acknowledged writes, {len(ledger.counters)} counters, "
          f"{len(ledger.logs)} logs, {held} held counters, {len(ledger.revoked)} revoked")


async def test_ocapn_serve_state_keeps_its_uri_and_the_objects_state_across_kill_9(
    tmp_path: Path, anyio_backend: Any
) -> None:
    """``ocapn serve --state DIR MODULE:OBJECT``: same URI, same state, after SIGKILL."""
    backend = "trio" if backend_name(anyio_backend) == "trio" else "asyncio"
    command = [
        sys.executable, "-c", "import sys; from ocapn.cli import main; sys.exit(main())",
        "serve", "--state", str(tmp_path / "state"), "_persist_util:PCounter",
        "--backend", backend,
    ]
    uris = []
    for expected in (2, 4):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=TESTS)
        try:
            with anyio.fail_after(60):
                uris.append(await first_line(proc))
                async with Node(tcp_testing_only()) as client:
                    counter = await client.enliven(uris[-1])
                    await E(counter).incr()
                    assert await E(counter).incr() == expected
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            stop(proc, 10)
    assert uris[0] == uris[1] and uris[0].startswith("ocapn://")


async def test_a_second_process_is_refused_and_the_lock_dies_with_the_first(
    tmp_path: Path, anyio_backend: Any
) -> None:
    backend = "trio" if backend_name(anyio_backend) == "trio" else "asyncio"
    command = [
        sys.executable, "-c", "import sys; from ocapn.cli import main; sys.exit(main())",
        "serve", "--state", str(tmp_path), "ocapn.cli:DemoGreeter", "--backend", backend,
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=TESTS)
    try:
        with anyio.fail_after(60):
            uri = await first_line(first)
        second = await anyio.run_process(command, check=False)
        assert second.returncode == 1
        assert f"StateInUse: state directory {tmp_path} is in use by process {first.pid}" in (
            second.stderr.decode()
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        stop(first, 10)
    again = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=TESTS)
    try:
        with anyio.fail_after(60):
            assert await first_line(again) == uri
            async with Node(tcp_testing_only()) as client:
                assert await E(await client.enliven(uri)).greet("you") == "Hello, you!"
    finally:
        stop(again, 10)
