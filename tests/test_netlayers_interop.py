"""websocket and np between separate processes over real sockets: the suite peer's objects.

The peer is ``python -m interop.testsuite_peer --netlayer N`` (under asyncio
or trio); the node in the test process runs under asyncio, uvloop and trio.
Handoffs take a third process, ``tests/interop_node.py N``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from procs import spawn

from captp import E, RemoteRef, Symbol, far, same_value
from interop.testsuite_peer import SWISS_NUMS
from netlayers.choose import make_netlayer
from ocapn import Node, OCapNSession, PeerLocation, Sturdyref

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

PEERS = [("websocket", "asyncio"), ("websocket", "trio"), ("np", "asyncio"), ("np", "trio")]


@pytest.fixture(scope="module", params=PEERS, ids=[f"{n}-{b}" for n, b in PEERS])
def suite_peer(request: pytest.FixtureRequest) -> Iterator[PeerLocation]:
    netlayer, backend = request.param
    args = ["-m", "interop.testsuite_peer", "--netlayer", netlayer, "--port", "0",
            "--backend", backend]
    with spawn(*args) as uri:
        yield PeerLocation.from_uri(uri)


@pytest.fixture(scope="module")
def recorder_uris() -> Iterator[dict[str, str]]:
    with spawn("tests/interop_node.py", "websocket") as ws, spawn("tests/interop_node.py", "np") \
            as np:
        yield {"websocket": ws, "np": np}


@asynccontextmanager
async def client(peer: PeerLocation) -> AsyncIterator[tuple[Node, OCapNSession]]:
    async with Node(make_netlayer(peer.transport)) as node:
        yield node, await node.connect(peer)


def fetch(session: OCapNSession, name: str) -> Any:
    return E(session.bootstrap()).fetch(SWISS_NUMS[name])


async def wait_until(condition: Any, what: str, seconds: float = 20.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


async def test_echo_every_type_and_a_large_message(suite_peer: PeerLocation) -> None:
    async with client(suite_peer) as (_, session):
        values = ["foo", 1, False, b"bar", ["baz"], Symbol("s"), 2.5, {"k": None}, -(2**80)]
        echo = fetch(session, "echo-gc")
        assert same_value(await E(echo)(*values), values)
        big = os.urandom(2_000_000)  # np: in chunks (both sides offer them)
        assert await E(echo)(big) == [big]


async def test_pipelining(suite_peer: PeerLocation) -> None:
    async with client(suite_peer) as (_, session):
        factory = E(fetch(session, "car-factory-builder"))()
        car = E(factory)([Symbol("red"), Symbol("zoomracer")])
        assert await E(car)() == "Vroom! I am a red zoomracer car!"


async def test_callback_and_gc(suite_peer: PeerLocation) -> None:
    heard: list[Any] = []

    def hear(*args: Any) -> str:
        heard.append(args)
        return "thanks"

    async with client(suite_peer) as (_, session):
        greeter = await fetch(session, "greeter")
        E.send_only(greeter)(far(hear))
        await wait_until(lambda: heard, "a greeting")
        assert heard == [("Hello",)]
        await wait_until(lambda: session.engine.stats()["answers"] == 0, "op:gc-answers")
        echo = await fetch(session, "echo-gc")
        await E(echo)()
        await wait_until(lambda: session.engine.stats()["exports"] == 1, "quiet tables")
        E.send_only(echo)(far(lambda: None))
        await wait_until(lambda: session.engine.stats()["exports"] == 1, "op:gc-exports")


async def test_handoffs_both_ways(suite_peer: PeerLocation, recorder_uris: dict[str, str]) -> None:
    recorder_uri = recorder_uris[suite_peer.transport]
    async with client(suite_peer) as (node, session):
        recorder = await node.enliven(recorder_uri)
        before = len(await E(recorder).log())
        greeter = await fetch(session, "greeter")
        E.send_only(greeter)(recorder)  # we give; the suite peer receives
        with anyio.fail_after(20):
            while len(log := await E(recorder).log()) == before:
                await anyio.sleep(0.01)
        assert log[-1] == ["Hello"]
        assert suite_peer.designator in await E(recorder).peers()  # a direct session
        enlivener = await fetch(session, "sturdyref-enlivener")
        handed = await E(enlivener)(Sturdyref.from_uri(recorder_uri))  # the peer gives
        assert type(handed) is RemoteRef and handed is recorder


@pytest.mark.parametrize("netlayer", ["websocket", "np"])
def test_cli_serve_and_call(netlayer: str) -> None:
    with spawn("-m", "ocapn.cli", "serve", "--netlayer", netlayer,
               "ocapn.cli:DemoGreeter") as uri:
        assert f".{netlayer}/s/" in uri
        done = subprocess.run(
            [sys.executable, "-m", "ocapn.cli", "call", uri, "greet", '"net"'],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == '"Hello, net!"'


def test_cli_key_file_keeps_the_uri(tmp_path: Any) -> None:
    key = str(tmp_path / "node.key")
    designators = []
    for _ in range(2):
        with spawn("-m", "ocapn.cli", "serve", "--netlayer", "np", "--key-file", key,
                   "ocapn.cli:DemoGreeter") as uri:
            designators.append(PeerLocation.from_uri(uri.split("/s/")[0]).designator)
    assert designators[0] == designators[1]
    os.chmod(key, 0o644)
    done = subprocess.run(
        [sys.executable, "-m", "ocapn.cli", "serve", "--netlayer", "websocket", "--key-file",
         key, "ocapn.cli:DemoGreeter"], capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "KeyFileError" in done.stderr and "chmod 600" in done.stderr
