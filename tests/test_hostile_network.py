"""Hostile networks (issue 10): what a session leaves behind when it ends, over real sockets.

A node serves over tcp-testing-only; raw peers (hand-written bytes over TCP)
open sessions, start work on the node and vanish.  Each test asserts that
nothing of theirs stays: no running call, no gift, no session object.
"""

from __future__ import annotations

import gc
import secrets
import weakref
from typing import Any

import anyio
import pytest
from rawpeer import RawPeer, deliver, desc, sym

from captp import Record, far
from netlayers import tcp_testing_only
from ocapn import Node
from ocapn.certificates import encode_value
from ocapn.errors import HandoffError
from ocapn.session import OCapNSession

pytestmark = pytest.mark.anyio


@far
class Waiter:
    """A far method that never returns; it counts how its calls ended."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.all_started = anyio.Event()
        self.expect = 0

    async def wait(self) -> None:
        self.started += 1
        if self.started >= self.expect:
            self.all_started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise

    def echo(self, x: Any) -> Any:
        return x


def _deliver_only(to: Record, args: list[Any]) -> Record:
    return Record(sym("op:deliver-only"), (to, args))


async def _until(predicate: Any, what: str) -> None:
    with anyio.fail_after(20):
        while not predicate():
            await anyio.sleep(0.01)


async def test_a_sessions_calls_are_cancelled_when_it_ends() -> None:
    """Calls (direct and pipelined on an answer) see cancellation when the peer leaves."""
    async with Node(tcp_testing_only()) as server:
        waiter = Waiter()
        waiter.expect = 200
        server.publish(waiter, b"waiter")
        async with RawPeer.connect(server.location) as raw:
            await raw.handshake()
            fetched = await raw.fetch(b"waiter")
            data = b"".join(
                encode_value(_deliver_only(desc("export", fetched), [sym("wait")]))
                for _ in range(100)
            )
            # and 100 more pipelined on the answer to a fetch
            data += encode_value(deliver(desc("export", 0), [sym("fetch"), b"waiter"], 0, False))
            data += b"".join(
                encode_value(_deliver_only(desc("answer", 0), [sym("wait")])) for _ in range(100)
            )
            await raw.send(data)
            with anyio.fail_after(20):
                await waiter.all_started.wait()
            session = server.sessions[0]
            assert session.connection.calls.running == 200
        await _until(lambda: waiter.cancelled == 200, "every call cancelled")
        assert session.connection.calls.running == 0
        assert not server.sessions


async def test_an_aborted_session_cancels_its_calls_and_others_go_on() -> None:
    async with Node(tcp_testing_only()) as server, Node(tcp_testing_only()) as client:
        waiter = Waiter()
        waiter.expect = 10
        sturdyref = server.publish(waiter, b"waiter")
        good = await client.enliven(sturdyref)
        from captp import E

        kept = E(good).wait()  # a call of the good session, which stays
        async with RawPeer.connect(server.location) as raw:
            await raw.handshake()
            fetched = await raw.fetch(b"waiter")
            await raw.send(b"".join(
                encode_value(_deliver_only(desc("export", fetched), [sym("wait")]))
                for _ in range(9)
            ))
            with anyio.fail_after(20):
                await waiter.all_started.wait()
            await raw.send(Record(sym("op:frobnicate"), (1,)))  # a protocol error: aborted
            await raw.expect_abort()
        await _until(lambda: waiter.cancelled == 9, "the raw session's calls cancelled")
        assert await E(good).echo(5) == 5
        assert waiter.cancelled == 9  # the good session's call runs on
        del kept


async def test_gifts_of_a_session_that_ends_in_the_same_write_are_dropped() -> None:
    """hello, fetch, deposit-gift and FIN in one write leave no gift behind."""
    async with Node(tcp_testing_only()) as server:
        waiter = Waiter()
        server.publish(waiter, b"waiter")
        for _ in range(20):
            async with RawPeer.connect(server.location) as raw:
                data = encode_value(raw.hello_record())
                data += encode_value(deliver(desc("export", 0), [sym("fetch"), b"waiter"], 0,
                                             False))
                data += encode_value(_deliver_only(
                    desc("export", 0),
                    [sym("deposit-gift"), secrets.token_bytes(8), desc("answer", 0)],
                ))
                await raw.stream.send(data)
                await raw.stream.send_eof()
                with anyio.fail_after(20):
                    await raw.expect_eof()
        await _until(lambda: not server.sessions, "every session ended")
        assert len(server.gifts) == 0


async def test_a_deposit_from_a_session_that_ended_is_refused() -> None:
    async with Node(tcp_testing_only()) as server:
        server.publish(Waiter(), b"waiter")
        async with RawPeer.connect(server.location) as raw:
            await raw.handshake()
            await raw.fetch(b"waiter")
            session = server.sessions[0]
        await _until(lambda: not session.alive, "the session ended")
        with pytest.raises(HandoffError, match="session that has ended"):
            server.handoffs.deposit(session, b"late", Waiter())
        assert len(server.gifts) == 0


async def test_a_closed_connection_frees_its_session_at_once() -> None:
    """The handshake timer does not keep a session (and its buffers) alive for its 30 s."""
    async with Node(tcp_testing_only()) as server:
        refs: list[weakref.ref[OCapNSession]] = []
        for handshake in (False, True):
            async with RawPeer.connect(server.location) as raw:
                if handshake:
                    await raw.handshake()
                else:
                    await raw.send(b"<")  # a partial message, then gone
                await _until(lambda: bool(server._all), "the node took the connection")
                refs.append(weakref.ref(next(iter(server._all))))
            await _until(lambda: not server._all, "the session ended")
        for _ in range(100):
            gc.collect()
            if all(r() is None for r in refs):
                break
            await anyio.sleep(0.02)
        assert [r() for r in refs] == [None, None]


async def test_calls_after_the_end_are_cancelled_before_they_run() -> None:
    from captp._connection import SessionCalls

    async with Node(tcp_testing_only()) as server:
        calls = SessionCalls(server.vat)
        calls.cancel()
        ran = anyio.Event()
        reached = []

        async def late() -> None:
            ran.set()
            await anyio.sleep(0)
            reached.append(True)  # never: cancelled at the first await

        calls.spawn(late)
        with anyio.fail_after(10):
            await ran.wait()
        await anyio.sleep(0.05)
        assert reached == [] and calls.running == 0
