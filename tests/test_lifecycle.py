"""Life-cycle of references: wrong-thread use, when_broken, unobserved broken promises."""

from __future__ import annotations

import gc
import logging
from typing import Any

import anyio
import anyio.to_thread
import pytest

from captp import ConnectionLost, E, RemoteError, WrongThread, far, when_broken
from netlayers import connect_pair

pytestmark = pytest.mark.anyio


@far
class Service:
    def ok(self) -> str:
        return "ok"

    def fail(self) -> None:
        raise ValueError("nope")

    def me(self) -> Service:
        return self


async def test_a_reference_used_from_another_thread_raises_wrong_thread() -> None:
    async with connect_pair(bootstrap_b=Service()) as (a, _b):
        ref = await a.bootstrap()
        promise = E(ref).me()
        with pytest.raises(WrongThread, match="another thread"):
            await anyio.to_thread.run_sync(lambda: E(ref).ok())
        with pytest.raises(WrongThread):
            await anyio.to_thread.run_sync(lambda: E(promise).ok())
        with pytest.raises(WrongThread):
            await anyio.to_thread.run_sync(lambda: E.get(ref).x)
        assert await E(ref).ok() == "ok"  # nothing was sent, the session is fine


async def test_when_broken_hears_the_session_end() -> None:
    heard: list[BaseException] = []
    async with connect_pair(bootstrap_b=Service()) as (a, _b):
        ref = await a.bootstrap()
        when_broken(ref, heard.append)
        cancel = when_broken(ref, lambda e: heard.append(RuntimeError("cancelled one ran")))
        cancel()
        via_promise: list[BaseException] = []
        when_broken(E(ref).me(), via_promise.append)  # fulfilled with a reference: watches it
        assert await E(ref).ok() == "ok"
        assert heard == [] and via_promise == []
        await a.aclose("test over")
    assert len(heard) == 1 and type(heard[0]) is ConnectionLost
    assert "test over" in str(heard[0])
    assert len(via_promise) == 1 and type(via_promise[0]) is ConnectionLost


async def test_when_broken_on_a_broken_promise() -> None:
    heard: list[BaseException] = []
    async with connect_pair(bootstrap_b=Service()) as (a, _b):
        ref = await a.bootstrap()
        p = E(ref).fail()
        when_broken(p, heard.append)
        with pytest.raises(RemoteError):
            await p
    assert len(heard) == 1 and type(heard[0]) is RemoteError


async def test_an_unawaited_broken_promise_is_reported_once(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="captp")
    async with connect_pair(bootstrap_b=Service()) as (a, _b):
        ref = await a.bootstrap()
        E(ref).fail()  # dropped at once: nobody will look at it
        awaited = E(ref).fail()
        assert await E(ref).ok() == "ok"  # answers come in order: both failures are in
        gc.collect()
        with pytest.raises(RemoteError):
            await awaited
        del awaited
        gc.collect()
        reports = [r for r in caplog.records if "nobody awaited" in r.getMessage()]
        assert [(r.levelno, r.getMessage()) for r in reports] == [
            (logging.WARNING,
             "a promise was broken and nobody awaited it: RemoteError: ValueError: nope"),
        ]


def test_transport_failures_are_said_in_words() -> None:
    from captp._connection import lost_reason, transport_error_text

    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
    except anyio.BrokenResourceError as broken:
        text = transport_error_text(broken)
    assert text == (
        "the connection broke (ConnectionResetError: [Errno 104] Connection reset by peer):"
        " the peer went away or the network failed"
    )
    assert transport_error_text(anyio.BrokenResourceError()) == (
        "the connection broke: the peer went away or the network failed"
    )
    assert lost_reason(anyio.EndOfStream()) == "peer closed the connection"
    assert lost_reason(anyio.ClosedResourceError()) == (
        "transport failed: the connection was already closed on this side"
    )
    assert "BrokenResourceError()" not in lost_reason(anyio.BrokenResourceError())


async def test_a_pipelined_failure_is_reported_once_by_the_last_promise(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="captp")
    async with connect_pair(bootstrap_b=Service()) as (a, _b):
        ref = await a.bootstrap()
        E(E(ref).fail()).ok()  # both dropped: the first's reason reaches the second
        assert await E(ref).ok() == "ok"
        gc.collect()
        reports = [r for r in caplog.records if "nobody awaited" in r.getMessage()]
        assert len(reports) == 1
        with pytest.raises(RemoteError):
            await E(E(ref).fail()).ok()  # awaited at the end of the chain: nothing to report
        gc.collect()
        reports = [r for r in caplog.records if "nobody awaited" in r.getMessage()]
        assert len(reports) == 1
