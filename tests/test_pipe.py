"""End to end over the in-memory pipe: real Syrup bytes, real event loops (asyncio and trio)."""

from __future__ import annotations

import gc
from typing import Any

import anyio
import pytest
from _far_util import Counter

from captp import (
    ConnectionLost,
    E,
    Promise,
    RemoteError,
    RemoteRef,
    Symbol,
    Tagged,
    far,
    make_promise,
    null,
    same_value,
)
from netlayers import connect_pair as _connect_pair
from ocapn.wire import CBOR_PROFILE, SPEC_PROFILE, WireProfile

pytestmark = pytest.mark.anyio

# Every test runs in Syrup and in CBOR (the 100k-object soak: CBOR under asyncio only).
_PROFILE: list[WireProfile] = [SPEC_PROFILE]


@pytest.fixture(autouse=True, params=[SPEC_PROFILE, CBOR_PROFILE], ids=["syrup", "cbor"])
def _encoding(request: pytest.FixtureRequest) -> None:
    name = request.node.name
    if request.param is CBOR_PROFILE and name.startswith("test_100k") and "asyncio" not in name:
        pytest.skip("the soak runs in CBOR under asyncio only")
    _PROFILE[0] = request.param


def connect_pair(**kwargs: Any) -> Any:
    return _connect_pair(profile=_PROFILE[0], **kwargs)


@far
class Greeter:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.kept: list[Any] = []

    def make_counter(self) -> Counter:
        return Counter()

    def log_message(self, text: str) -> None:
        self.log.append(text)

    async def slow_double(self, x: int) -> int:
        await anyio.sleep(0.01)
        return 2 * x

    def echo(self, *args: Any) -> list[Any]:
        return list(args)

    def fail(self, message: str) -> None:
        raise TypeError(message)

    def keep(self, x: Any) -> int:
        self.kept.append(x)
        return len(self.kept)

    def call_me(self, fn: Any, arg: Any) -> Promise:
        result: Promise = E(fn)(arg)
        return result

    def drop_all(self) -> None:
        self.kept.clear()

    def ignore(self, x: Any) -> None:
        pass


async def test_the_issue_example() -> None:
    greeter = Greeter()
    async with connect_pair(bootstrap_b=greeter) as (alice, _bob):
        remote = await alice.bootstrap()
        assert type(remote) is RemoteRef
        p = E(remote).make_counter()  # a promise, not awaited
        assert await E(p).incr() == 1  # pipelined: one trip
        assert await E(p).incr() == 2
        assert E.send_only(remote).log_message("hi") is None
        await E(remote).echo()  # a later round trip: the send-only has arrived
        assert greeter.log == ["hi"]


async def test_async_methods_run_in_the_vat() -> None:
    async with connect_pair(bootstrap_b=Greeter()) as (a, _):
        boot = await a.bootstrap()
        results = await _gather([E(boot).slow_double(i) for i in range(20)])
        assert results == [2 * i for i in range(20)]


async def test_every_passable_round_trips_exactly() -> None:
    values: list[Any] = [
        None, null, True, False, 0, -1, 2**200, -(2**70), 1.5, -0.0, float("inf"),
        float("nan"), "", "björn ☃", b"", b"\x00\xff", Symbol("sym"), [], [1, [2, [3]]],
        {}, {"b": 1, "aa": 2, "a": 3}, Tagged("copySet", [1, 2]),
    ]
    async with connect_pair(bootstrap_b=Greeter()) as (a, _):
        boot = await a.bootstrap()
        echoed = await E(boot).echo(*values)
        assert len(echoed) == len(values)
        for sent, got in zip(values, echoed, strict=True):
            assert same_value(sent, got), (sent, got)


async def test_remote_exception_reaches_the_caller_by_name() -> None:
    async with connect_pair(bootstrap_b=Greeter()) as (a, _):
        boot = await a.bootstrap()
        with pytest.raises(RemoteError, match=r"^TypeError: boom$"):
            await E(boot).fail("boom")
        # a pipelined send to the broken answer breaks with the same reason
        with pytest.raises(RemoteError, match="TypeError: boom"):
            await E(E(boot).fail("boom")).anything()


async def test_callback_both_ways() -> None:
    async with connect_pair(bootstrap_b=Greeter()) as (a, _):
        boot = await a.bootstrap()
        assert await E(boot).call_me(far(lambda x: x * 3), 14) == 42


async def test_promise_passed_and_resolved_later() -> None:
    greeter = Greeter()
    async with connect_pair(bootstrap_b=greeter) as (a, _):
        boot = await a.bootstrap()
        promise, resolver = make_promise()
        assert await E(boot).keep(promise) == 1
        (remote_promise,) = greeter.kept
        assert isinstance(remote_promise, Promise)
        resolver.resolve(Counter())
        counter = await remote_promise
        assert type(counter) is RemoteRef  # our Counter, seen from the other side


async def test_closing_breaks_pending_and_later_sends() -> None:
    @far
    class Never:
        async def wait(self) -> None:
            await anyio.sleep_forever()

    async with connect_pair(bootstrap_b=Never()) as (a, b):
        boot = await a.bootstrap()
        pending = E(boot).wait()
        await anyio.sleep(0.01)
        await b.aclose("server going away")
        with pytest.raises(ConnectionLost, match="server going away"):
            await pending
        with pytest.raises(ConnectionLost):
            await E(boot).wait()


async def test_100k_objects_and_tables_return_to_their_starting_size() -> None:
    greeter = Greeter()
    async with connect_pair(bootstrap_b=greeter) as (a, b):
        boot = await a.bootstrap()
        start_a, start_b = a.engine.stats(), b.engine.stats()
        for _ in range(100):
            batch = [Counter() for _ in range(1000)]
            back = await E(boot).echo(*batch)  # out and back: identity is preserved
            assert all(x is y for x, y in zip(batch, back, strict=True))
            assert await E(boot).keep(back[:10]) > 0
            del batch, back
        await E(boot).drop_all()
        gc.collect()
        for _ in range(50):  # gc messages cross in both directions
            await anyio.sleep(0.01)
            gc.collect()
            if a.engine.stats() == start_a and b.engine.stats() == start_b:
                break
        assert a.engine.stats() == start_a
        assert b.engine.stats() == start_b


async def test_references_in_the_last_message_of_a_burst_are_released() -> None:
    async with connect_pair(bootstrap_b=Greeter()) as (a, b):
        boot = await a.bootstrap()
        await E(boot).echo()
        await anyio.sleep(0.05)  # the gc batch of that call has gone out
        start = a.engine.stats()
        E.send_only(boot).ignore(Counter())  # the last message b gets: no answer, no gc
        for _ in range(50):
            await anyio.sleep(0.01)
            gc.collect()
            if a.engine.stats() == start:
                break
        # b dropped the Counter though its reader is idle with nothing newer
        assert a.engine.stats() == start
        assert b.engine.stats()["imports"] == 0


async def _gather(promises: list[Promise]) -> list[Any]:
    results: list[Any] = [None] * len(promises)

    async def one(i: int, p: Promise) -> None:
        results[i] = await p

    async with anyio.create_task_group() as tg:
        for i, p in enumerate(promises):
            tg.start_soon(one, i, p)
    return results


async def test_a_peer_that_closes_its_channel_ends_the_session_after_what_it_sent() -> None:
    # Under asyncio the pipe pushes messages to the driver; under trio the
    # driver reads them.  Either way, what was sent before the close arrives,
    # then the session ends as the transport's end.
    from captp._connection import Connection
    from captp._vat import open_vat
    from netlayers.memory import memory_pipe
    from ocapn.wire import OCapNWire

    greeter = Greeter()
    async with open_vat() as vat, anyio.create_task_group() as tg:
        left, right = memory_pipe()
        a = Connection(left, lambda s: OCapNWire(s, _PROFILE[0]), vat, name="a")
        b = Connection(
            right, lambda s: OCapNWire(s, _PROFILE[0]), vat, bootstrap=greeter, name="b"
        )
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        boot = await a.bootstrap()
        assert await E(boot).echo("hello") == ["hello"]
        E.send_only(boot).log_message("last words")
        await left.aclose()  # no abort: the channel just ends
        with anyio.fail_after(10):
            await b.ended.wait()
        assert greeter.log == ["last words"]
        assert b.engine.dead is not None
        assert "peer closed the connection" in b.engine.dead.reason
        tg.cancel_scope.cancel()
