"""ocapn.sync: a node on a background thread, used with blocking calls."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from captp import E, RemoteError, WrongThread, far
from netlayers import tcp_testing_only
from ocapn.sync import CallTimeout, SyncNode, SyncRef


@far
class Counter:
    def __init__(self, n: int = 0) -> None:
        self.n = n

    def incr(self) -> int:
        self.n += 1
        return self.n


@far
class Service:
    def __init__(self) -> None:
        self.threads: set[int] = set()

    def make_counter(self, start: int) -> Counter:
        self.threads.add(threading.get_ident())
        return Counter(start)

    def pair(self) -> list[Any]:
        return [Counter(), {"c": Counter(10)}]

    def apply(self, counter: Any) -> Any:
        return E(counter).incr()

    def fail(self) -> None:
        raise ValueError("no such key: 'a'")

    async def never(self) -> None:
        await anyio.sleep_forever()


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_blocking_calls_between_two_sync_nodes(backend: str) -> None:
    service = Service()
    with SyncNode(tcp_testing_only(), backend=backend) as server, SyncNode(
        tcp_testing_only(), backend=backend, timeout=20
    ) as client:
        uri = server.publish(service)
        assert uri.startswith("ocapn://")
        ref = client.enliven(uri)
        counter = ref.make_counter(41)
        assert type(counter) is SyncRef
        assert counter.incr() == 42
        assert counter.incr() == 43
        # the object ran on the server's thread, not the test's
        assert service.threads and threading.get_ident() not in service.threads
        # references inside answers come back wrapped; references go out unwrapped
        first, struct = ref.pair()
        assert first.incr() == 1 and struct["c"].incr() == 11
        assert ref.apply(counter) == 44


def test_errors_and_timeouts_are_named() -> None:
    with SyncNode(tcp_testing_only()) as server, SyncNode(tcp_testing_only()) as client:
        ref = client.enliven(server.publish(Service()))
        with pytest.raises(RemoteError, match="ValueError: no such key"):
            ref.fail()
        with pytest.raises(CallTimeout, match=r"within 0\.2 s"):
            ref.never(timeout=0.2)
        assert ref.make_counter(1).incr() == 2  # the session survives a timeout


def test_run_pipelines_on_the_node_thread() -> None:
    with SyncNode(tcp_testing_only()) as server, SyncNode(tcp_testing_only()) as client:
        ref = client.enliven(server.publish(Service()))

        async def chain(service: Any) -> int:
            result: int = await E(E(service).make_counter(9)).incr()  # one round trip
            return result

        assert client.run(chain, ref.ref) == 10


def test_a_stopped_node_says_so() -> None:
    node = SyncNode(tcp_testing_only())
    with pytest.raises(RuntimeError, match="not running"):
        node.publish(Service())
    with node:
        node.publish(Service())
    with pytest.raises(RuntimeError, match="not running"):
        node.enliven("ocapn://x.tcp-testing-only/s/abc")


def test_async_references_stay_on_the_node_thread() -> None:
    service = Service()
    with SyncNode(tcp_testing_only()) as server, SyncNode(tcp_testing_only()) as client:
        ref = client.enliven(server.publish(service))
        with pytest.raises(WrongThread, match="another thread"):
            E(ref.ref).make_counter(1)
        assert service.threads == set()  # nothing was sent
        assert ref.make_counter(1).incr() == 2
