"""Our nodes in separate processes over real sockets: what the conformance suite exercises.

The peer is ``python -m interop.testsuite_peer`` (the same objects the suite
fetches), run with each wire profile; the node in the test process reads every
variant.  Handoffs take three processes: this one, the suite peer, and
``tests/interop_node.py`` serving a Recorder.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from procs import spawn

from captp import BrokenPromise, E, RemoteError, RemoteRef, Symbol, far, same_value
from interop.testsuite_peer import SWISS_NUMS
from netlayers import tcp_testing_only
from ocapn import Node, OCapNSession, PeerLocation, Sturdyref
from ocapn.wire import PROFILES, SPEC_PROFILE, WireProfile

pytestmark = [pytest.mark.anyio, pytest.mark.interop]


# The profile the test process's client speaks to each peer: a peer started
# with --profile cbor answers in the encoding it is dialed in, so the client
# dials it in CBOR.
_CLIENT_PROFILES: dict[PeerLocation, WireProfile] = {}


@pytest.fixture(scope="module", params=["spec", "suite-main", "cbor"])
def suite_peer(request: pytest.FixtureRequest) -> Iterator[PeerLocation]:
    args = ["-m", "interop.testsuite_peer", "--port", "0", "--profile", request.param]
    with spawn(*args) as uri:
        location = PeerLocation.from_uri(uri)
        _CLIENT_PROFILES[location] = PROFILES[request.param]
        yield location


@pytest.fixture(scope="module")
def recorder_uri() -> Iterator[str]:
    with spawn("tests/interop_node.py") as uri:
        yield uri


@asynccontextmanager
async def client(peer: PeerLocation) -> AsyncIterator[tuple[Node, OCapNSession]]:
    async with Node(tcp_testing_only(), profile=_CLIENT_PROFILES.get(peer, SPEC_PROFILE)) as node:
        session = await node.connect(peer)
        assert session.wire.out_encoding == node.profile.encoding
        assert session.wire.in_encoding == node.profile.encoding  # the peer answers in kind
        yield node, session


def fetch(session: OCapNSession, name: str) -> Any:
    return E(session.bootstrap()).fetch(SWISS_NUMS[name])


async def wait_until(condition: Any, what: str, seconds: float = 20.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


async def test_echo_keeps_every_type(suite_peer: PeerLocation) -> None:
    async with client(suite_peer) as (_, session):
        values = ["foo", 1, False, b"bar", ["baz"], Symbol("s"), 2.5, {"k": None}, -(2**80)]
        echoed = await E(fetch(session, "echo-gc"))(*values)
        assert same_value(echoed, values)


async def test_pipelined_chain_of_four(suite_peer: PeerLocation) -> None:
    async with client(suite_peer) as (_, session):
        builder = fetch(session, "car-factory-builder")  # nothing awaited until the end
        factory = E(builder)()
        car = E(factory)([Symbol("red"), Symbol("zoomracer")])
        assert await E(car)() == "Vroom! I am a red zoomracer car!"


async def test_pipelined_chain_breaks(suite_peer: PeerLocation) -> None:
    async with client(suite_peer) as (_, session):
        factory = E(fetch(session, "car-factory-builder"))()
        car = E(factory)([1, 2, 3, 4, 5])
        with pytest.raises(RemoteError, match="TypeError: a car is made from"):
            await E(car)()


async def test_greeter_calls_back_and_releases_its_answer(suite_peer: PeerLocation) -> None:
    heard: list[Any] = []

    def hear(*args: Any) -> str:
        heard.append(args)
        return "thanks"

    async with client(suite_peer) as (_, session):
        greeter = await fetch(session, "greeter")
        E.send_only(greeter)(far(hear))
        await wait_until(lambda: heard, "a greeting")
        assert heard == [("Hello",)]
        # The greeter asked with an answer position; once we answered it drops it.
        await wait_until(lambda: session.engine.stats()["answers"] == 0, "op:gc-answers")


@pytest.mark.parametrize("shape", ["one", "four in one message", "four messages"])
async def test_references_passed_to_echo_are_released(
    suite_peer: PeerLocation, shape: str
) -> None:
    async with client(suite_peer) as (_, session):
        echo = await fetch(session, "echo-gc")
        await E(echo)()  # settle the bookkeeping of the fetch first
        await wait_until(lambda: session.engine.stats()["exports"] == 1, "quiet tables")
        thing = far(lambda: None)
        if shape == "one":
            E.send_only(echo)(thing)
        elif shape == "four in one message":
            E.send_only(echo)(thing, thing, thing, thing)
        else:
            for _ in range(4):
                E.send_only(echo)(thing)
        assert session.engine.stats()["exports"] == 2
        await wait_until(lambda: session.engine.stats()["exports"] == 1, "op:gc-exports")


async def test_promise_and_resolver(suite_peer: PeerLocation) -> None:
    async with client(suite_peer) as (_, session):
        maker = await fetch(session, "promise-resolver")
        promise, resolver = await E(maker)()
        E.send_only(resolver).fulfill(Symbol("ok"))
        assert await promise == Symbol("ok")
        promise, resolver = await E(maker)()
        E.send_only(resolver).break_(Symbol("oh-no"))
        with pytest.raises(BrokenPromise) as info:
            await promise
        assert info.value.reason == Symbol("oh-no")  # the reason arrives as it was sent


async def test_handoff_we_give_the_peer_receives(
    suite_peer: PeerLocation, recorder_uri: str
) -> None:
    """Gifter: this process; receiver: the suite peer; exporter: the recorder's process."""
    async with client(suite_peer) as (node, session):
        recorder = await node.enliven(recorder_uri)
        before = len(await E(recorder).log())
        greeter = await fetch(session, "greeter")
        E.send_only(greeter)(recorder)  # a reference from another session: a handoff
        with anyio.fail_after(20):
            while len(log := await E(recorder).log()) == before:
                await anyio.sleep(0.01)
        assert log[-1] == ["Hello"]
        assert suite_peer.designator in await E(recorder).peers()  # a direct session


async def test_handoff_the_peer_gives_we_receive(
    suite_peer: PeerLocation, recorder_uri: str
) -> None:
    """Gifter: the suite peer (its enlivener); receiver: this process; exporter: the recorder."""
    async with client(suite_peer) as (node, session):
        recorder = await node.enliven(recorder_uri)
        enlivener = await fetch(session, "sturdyref-enlivener")
        handed = await E(enlivener)(Sturdyref.from_uri(recorder_uri))
        assert type(handed) is RemoteRef
        assert handed is recorder  # withdrawn from the recorder's node: our own import
        assert await E(handed)("via", "handoff") >= 1


async def test_cli_serve_and_call() -> None:
    with spawn("-m", "ocapn.cli", "serve", "ocapn.cli:DemoGreeter") as uri:
        def call(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "ocapn.cli", "call", uri, *args],
                capture_output=True, text=True, timeout=60,
            )

        done = await anyio.to_thread.run_sync(call, "greet", "world")
        assert (done.returncode, done.stdout) == (0, '"Hello, world!"\n')
        done = await anyio.to_thread.run_sync(call, "greet", "['a 1]")
        assert done.stdout == "\"Hello, [Symbol('a'), 1]!\"\n"
        done = await anyio.to_thread.run_sync(call, "nope")
        assert done.returncode == 1
        assert "DemoGreeter has no method 'nope'" in done.stderr


def test_cli_call_to_a_silent_peer_times_out_with_a_hint() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks
        port = silent.getsockname()[1]
        uri = f"ocapn://{'a' * 52}.tcp-testing-only/s/AAAA?host=127.0.0.1&port={port}"
        done = subprocess.run(
            [sys.executable, "-m", "ocapn.cli", "call", uri, "--timeout", "0.5"],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr == (
        "ocapn call: TimeoutError: no session within 0.5 s: the peer did not finish the"
        " handshake (a peer that frames with len:, such as Endo, needs --profile endo)\n"
    )


def test_cli_demo_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ocapn.cli", "demo"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert '-> "Hello, world!"' in done.stdout
    assert "-> 42  (pipelined, one trip)" in done.stdout
    assert done.stdout.strip().endswith("done")
