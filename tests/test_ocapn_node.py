"""The node in one process: sessions, sturdyrefs, crossed hellos, handoffs, the gift table.

Nodes meet over the in-memory network (message framing) and over real
tcp-testing-only sockets (stream framing), under asyncio and trio, in Syrup
and (the ``-cbor`` kinds) in the draft CBOR encoding.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from _far_util import Counter

from captp import E, Promise, RemoteError, RemoteRef, far, make_promise
from captp.errors import ConnectionLost
from netlayers import MemoryNetwork, TcpTestingNetlayer, tcp_testing_only
from ocapn import (
    HandoffError,
    Node,
    PeerLocation,
    PeerUnreachable,
    SignedEnvelope,
    Sturdyref,
    UnsupportedTransport,
)
from ocapn.certificates import GiftTable, HandoffGive, HandoffReceive
from ocapn.wire import CBOR_PROFILE, SPEC_PROFILE

pytestmark = pytest.mark.anyio


@far
class Holder:
    """Keeps what it is given and can call it."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def keep(self, x: Any) -> int:
        self.kept.append(x)
        return len(self.kept)

    def call_kept(self, method: str) -> Any:
        return E(self.kept[-1])[method]()

    def echo(self, x: Any) -> Any:
        return x

    def make_counter(self) -> Counter:
        return Counter()


@asynccontextmanager
async def nodes(count: int, kind: str, encodings: str = "") -> AsyncIterator[list[Node]]:
    """``kind``: memory or tcp, with ``-cbor`` for CBOR nodes; ``encodings``: one
    letter per node (``s`` Syrup, ``c`` CBOR) to mix them."""
    network = MemoryNetwork()
    cbor = kind.endswith("-cbor")
    async with AsyncExitStack() as stack:
        result = []
        for i in range(count):
            netlayer = network.netlayer() if kind.startswith("memory") else tcp_testing_only()
            use_cbor = encodings[i] == "c" if encodings else cbor
            profile = CBOR_PROFILE if use_cbor else SPEC_PROFILE
            result.append(await stack.enter_async_context(Node(netlayer, profile=profile)))
        yield result


KINDS = pytest.mark.parametrize("kind", ["memory", "tcp", "memory-cbor", "tcp-cbor"])


@KINDS
async def test_publish_enliven_call_and_pipeline(kind: str) -> None:
    async with nodes(2, kind) as (a, b):
        sturdyref = a.publish(Holder())
        assert type(sturdyref) is Sturdyref and sturdyref.peer == a.location
        holder = await b.enliven(str(sturdyref))
        assert type(holder) is RemoteRef
        assert await E(E(holder).make_counter()).incr() == 1
        again = await b.enliven(sturdyref)
        assert again is holder  # the same export comes back as the same reference
        assert len(b.sessions) == 1 and len(a.sessions) == 1
        assert a.sessions[0].session_id == b.sessions[0].session_id


async def test_enliven_own_sturdyref_gives_the_object_itself() -> None:
    async with nodes(1, "memory") as (a,):
        holder = Holder()
        assert await a.enliven(a.publish(holder)) is holder


async def test_unknown_swiss_number_breaks_the_fetch_only() -> None:
    async with nodes(2, "memory") as (a, b):
        good = a.publish(Holder())
        bad = Sturdyref(a.location, b"no such thing")
        with pytest.raises(RemoteError, match="UnknownSwissNum"):
            await b.enliven(bad)
        assert await E(await b.enliven(good)).echo(5) == 5


async def test_unpublish_stops_fetch_but_not_live_references() -> None:
    async with nodes(2, "memory") as (a, b):
        sturdyref = a.publish(Holder(), b"swiss")
        holder = await b.enliven(sturdyref)
        a.unpublish(b"swiss")
        with pytest.raises(RemoteError, match="UnknownSwissNum"):
            await b.enliven(sturdyref)
        assert await E(holder).echo("still") == "still"


async def test_connect_errors_are_named() -> None:
    async with nodes(1, "tcp") as (a,):
        with pytest.raises(UnsupportedTransport, match="onion"):
            await a.connect(PeerLocation("onion", "abc"))
        nobody = PeerLocation("tcp-testing-only", "x", {"host": "127.0.0.1", "port": "1"})
        with pytest.raises(PeerUnreachable):
            await a.connect(nobody)
        with pytest.raises(PeerUnreachable, match="this node"):
            await a.connect(a.location)


@KINDS
async def test_crossed_hellos_leave_one_session(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ocapn")

    async def enliven(found: dict[str, Any], name: str, node: Node, other: Node) -> None:
        found[name] = await node.enliven(Sturdyref(other.location, b"h"))

    for _ in range(5):
        async with nodes(2, kind) as (a, b):
            a.publish(Holder(), b"h")
            b.publish(Holder(), b"h")
            found: dict[str, Any] = {}

            async with anyio.create_task_group() as tg:  # both dial at once
                tg.start_soon(enliven, found, "a", a, b)
                tg.start_soon(enliven, found, "b", b, a)
            assert len(a.sessions) == 1 and len(b.sessions) == 1
            assert a.sessions[0].session_id == b.sessions[0].session_id
            assert await E(found["a"]).echo(1) == 1
            assert await E(found["b"]).echo(2) == 2
    assert "crossed hellos mitigated" in caplog.text


async def test_crossed_hellos_settle_alike_when_one_dial_connects_late() -> None:
    """A peer's hello that arrives while our own dial to it is still connecting
    waits for that dial: both nodes must compare the same two connections."""

    class SlowDial(TcpTestingNetlayer):
        @asynccontextmanager
        async def _connect(self, location: PeerLocation) -> AsyncIterator[Any]:
            await anyio.sleep(0.2)  # the peer's hello reaches us meanwhile
            async with TcpTestingNetlayer.connect(self, location) as channel:
                yield channel

        def connect(self, location: PeerLocation) -> Any:
            return self._connect(location)

    async with Node(SlowDial()) as a, Node(tcp_testing_only()) as b:
        a.publish(Holder(), b"h")
        b.publish(Holder(), b"h")
        found: dict[str, Any] = {}

        async def enliven(name: str, node: Node, other: Node) -> None:
            found[name] = await node.enliven(Sturdyref(other.location, b"h"))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:  # both dial at once
                tg.start_soon(enliven, "a", a, b)
                tg.start_soon(enliven, "b", b, a)
            assert len(a.sessions) == 1 and len(b.sessions) == 1
            assert a.sessions[0].session_id == b.sessions[0].session_id
            assert await E(found["a"]).echo(1) == 1
            assert await E(found["b"]).echo(2) == 2


async def test_closing_a_node_aborts_its_sessions() -> None:
    async with nodes(1, "tcp") as (b,):
        a = Node(tcp_testing_only())
        async with a:
            holder = await b.enliven(a.publish(Holder()))
            pending = E(holder).echo(1)
            await pending
        with pytest.raises(ConnectionLost, match="node shutting down"):
            await E(holder).echo(2)
        assert b.sessions == []


# -- third-party handoffs -----------------------------------------------------------------


@KINDS
async def test_handoff_between_three_nodes(kind: str) -> None:
    async with nodes(3, kind) as (gifter, receiver, exporter):
        counter = Counter()
        on_exporter = await gifter.enliven(exporter.publish(counter))
        holder = Holder()
        on_receiver = await gifter.enliven(receiver.publish(holder))
        assert await E(on_receiver).keep(on_exporter) == 1
        kept = holder.kept[0]
        assert isinstance(kept, Promise)  # the handoff is collected in the background
        got = await kept
        assert type(got) is RemoteRef
        receiver_to_exporter = receiver.session_of(got)
        assert receiver_to_exporter is not None
        assert receiver_to_exporter.peer_location == exporter.location  # direct, no proxy
        assert await E(on_receiver).call_kept("incr") == 1
        assert counter.n == 1
        assert len(exporter.sessions) == 2
        assert len(exporter.gifts) == 0  # withdrawn
        # Handing it over again uses a new gift and a new handoff count.
        assert await E(on_receiver).keep(on_exporter) == 2
        assert await holder.kept[1] is got
        assert receiver_to_exporter.next_handoff_count() == 2  # 0 and 1 were used


async def test_handoff_back_to_the_exporter_is_no_handoff() -> None:
    async with nodes(2, "memory") as (a, b):
        counter = Counter()
        on_b = await a.enliven(b.publish(Holder()))
        counter_ref = await E(on_b).make_counter()
        assert await E(on_b).echo(counter_ref) is counter_ref
        assert counter.n == 0


async def test_forged_give_breaks_the_promise_and_keeps_the_sessions() -> None:
    async with nodes(3, "memory") as (gifter, receiver, exporter):
        on_exporter = await gifter.enliven(exporter.publish(Counter()))
        holder = Holder()
        on_receiver = await gifter.enliven(receiver.publish(holder))
        to_exporter = gifter.session_of(on_exporter)
        to_receiver = gifter.session_of(on_receiver)
        assert to_exporter is not None and to_receiver is not None
        assert to_receiver.peer_key is not None and to_exporter.peer_location is not None
        give = HandoffGive(
            to_receiver.peer_key, to_exporter.peer_location, to_exporter.session_id,
            to_exporter.my_public_id, b"never deposited",
        )
        forged = SignedEnvelope.sign(give.to_record(), to_receiver.key_pair)  # the wrong key
        await E(on_receiver).keep(forged)
        with pytest.raises(RemoteError, match="HandoffError: the give's signature"):
            await holder.kept[0]
        assert len(gifter.sessions) == 2 and len(receiver.sessions) == 2
        assert await E(on_exporter).incr() == 1


async def test_give_for_another_receiver_is_refused_by_the_receiver() -> None:
    async with nodes(3, "memory") as (gifter, receiver, exporter):
        on_exporter = await gifter.enliven(exporter.publish(Counter()))
        holder = Holder()
        on_receiver = await gifter.enliven(receiver.publish(holder))
        to_exporter = gifter.session_of(on_exporter)
        assert to_exporter is not None and to_exporter.peer_location is not None
        give = HandoffGive(
            to_exporter.key_pair.public, to_exporter.peer_location, to_exporter.session_id,
            to_exporter.my_public_id, b"gift",
        )
        envelope = SignedEnvelope.sign(give.to_record(), to_exporter.key_pair)
        await E(on_receiver).keep(envelope)
        with pytest.raises(HandoffError, match="another receiver"):
            await holder.kept[0]
        assert len(exporter.sessions) == 1  # the receiver never dialed the exporter


async def test_reused_handoff_count_breaks_the_withdrawal() -> None:
    async with nodes(3, "memory") as (gifter, receiver, exporter):
        on_exporter = await gifter.enliven(exporter.publish(Counter()))
        holder = Holder()
        on_receiver = await gifter.enliven(receiver.publish(holder))
        await E(on_receiver).keep(on_exporter)
        got = await holder.kept[0]
        receiver_to_exporter = receiver.session_of(got)
        assert receiver_to_exporter is not None
        # Replay a withdrawal with count 0 (already used) for a freshly deposited gift.
        to_exporter = gifter.session_of(on_exporter)
        to_receiver = gifter.session_of(on_receiver)
        assert to_exporter is not None and to_receiver is not None
        E.send_only(to_exporter.bootstrap())["deposit-gift"](b"again", on_exporter)
        assert to_receiver.peer_key is not None and to_exporter.peer_location is not None
        give = HandoffGive(
            to_receiver.peer_key, to_exporter.peer_location, to_exporter.session_id,
            to_exporter.my_public_id, b"again",
        )
        signed_give = SignedEnvelope.sign(give.to_record(), to_exporter.key_pair)
        receiver_to_gifter = next(
            s for s in receiver.sessions if s.peer_location == gifter.location
        )
        receiver_key = receiver_to_gifter.key_pair
        receive = HandoffReceive(
            receiver_to_exporter.session_id, receiver_to_exporter.my_public_id, 0, signed_give
        )
        replay = SignedEnvelope.sign(receive.to_record(), receiver_key)
        with pytest.raises(RemoteError, match="handoff count 0 was already used"):
            await E(receiver_to_exporter.bootstrap())["withdraw-gift"](replay)
        fresh = HandoffReceive(
            receiver_to_exporter.session_id, receiver_to_exporter.my_public_id,
            receiver_to_exporter.next_handoff_count(), signed_give,
        )
        withdrawn = await E(receiver_to_exporter.bootstrap())["withdraw-gift"](
            SignedEnvelope.sign(fresh.to_record(), receiver_key)
        )
        assert withdrawn is got
        assert receiver_to_gifter.alive and receiver_to_exporter.alive


# -- the gift table -----------------------------------------------------------------------


async def test_gift_table_either_order_and_cleanup() -> None:
    table = GiftTable()
    table.deposit(b"s1", b"g", "first")
    assert await table.withdraw(b"s1", b"g") == "first"
    waiting = table.withdraw(b"s1", b"h")
    assert not waiting.done()
    table.deposit(b"s1", b"h", "second")
    assert await waiting == "second"
    table.deposit(b"s1", b"g", "again")  # the same gift id may be deposited again
    with pytest.raises(HandoffError, match="already waiting"):
        table.deposit(b"s1", b"g", "twice")
    table.deposit(b"s1", 1, "int")  # 1, True and b"\x01" are different gift ids
    table.deposit(b"s1", True, "bool")
    assert await table.withdraw(b"s1", True) == "bool"
    other = table.withdraw(b"s2", b"g")  # another gifter session: not the same gift
    assert not other.done()
    table.drop_session(b"s2", lambda: HandoffError("gone"))
    with pytest.raises(HandoffError, match="gone"):
        await other
    table.drop_session(b"s1", lambda: HandoffError("gone"))
    assert len(table) == 0
    with pytest.raises(HandoffError, match="plain value"):
        table.deposit(b"s1", [1], "list")


async def test_promise_passed_through_two_sessions_resolves() -> None:
    async with nodes(3, "memory") as (a, b, c):
        promise, resolver = make_promise()
        holder = Holder()
        on_b = await a.enliven(b.publish(holder))
        await E(on_b).keep(promise)
        resolver.resolve(await a.enliven(c.publish(Counter())))
        kept = holder.kept[0]
        assert type(await kept) is RemoteRef
        assert await E(kept).incr() == 1


@KINDS
async def test_tables_return_to_their_starting_size(kind: str) -> None:
    """Thousands of calls passing references both ways leave nothing behind."""
    import gc

    async with nodes(2, kind) as (a, b):
        holder = Holder()
        on_a = await b.enliven(a.publish(holder))
        session_b = b.session_of(on_a)
        session_a = a.sessions[0]
        assert session_b is not None
        await E(on_a).echo(None)
        # Let the bookkeeping of these first calls settle (gc messages are batched).
        while True:
            before = (session_a.engine.stats(), session_b.engine.stats())
            await anyio.sleep(0.05)
            if (session_a.engine.stats(), session_b.engine.stats()) == before:
                break
        start_a, start_b = before
        for _ in range(20):
            counters = [Counter() for _ in range(50)]
            back = await E(on_a).echo(counters)  # out and back: the same objects
            assert all(x is y for x, y in zip(back, counters, strict=True))
            made = [E(on_a).make_counter() for _ in range(50)]  # new remote objects
            assert [await E(c).incr() for c in made] == [1] * 50
            del counters, back, made
        gc.collect()
        # Drops travel in batches, a round trip each: give a loaded machine time.
        with anyio.move_on_after(30):
            while session_a.engine.stats() != start_a or session_b.engine.stats() != start_b:
                await anyio.sleep(0.01)
                gc.collect()
        assert session_a.engine.stats() == start_a
        assert session_b.engine.stats() == start_b
        assert len(a.gifts) == 0 and len(b.gifts) == 0


# -- encodings: CBOR beside Syrup ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "tcp"])
@pytest.mark.parametrize("encodings", ["sc", "cs"])
async def test_a_syrup_node_and_a_cbor_node_talk(kind: str, encodings: str) -> None:
    async with nodes(2, kind, encodings) as (a, b):
        holder = await b.enliven(a.publish(Holder()))
        assert await E(holder).echo({"x": [1, b"2", None]}) == {"x": [1, b"2", None]}
        (dialer,) = b.sessions
        (answerer,) = a.sessions
        mine = "cbor" if encodings[1] == "c" else "syrup"
        assert dialer.wire.out_encoding == mine and answerer.wire.in_encoding == mine
        # On a stream the answerer mirrors the dialer, as with framing; on a
        # message channel each writes its own and reads the other's.
        theirs = mine if kind == "tcp" else ("cbor" if encodings[0] == "c" else "syrup")
        assert answerer.wire.out_encoding == theirs and dialer.wire.in_encoding == theirs


@pytest.mark.parametrize("encodings", ["ccs", "scc", "csc", "ssc"])
async def test_handoff_across_sessions_of_different_encodings(encodings: str) -> None:
    """Certificates are signed in their session's encoding and verify in either."""
    async with nodes(3, "memory", encodings) as (gifter, receiver, exporter):
        counter = Counter()
        on_exporter = await gifter.enliven(exporter.publish(counter))
        holder = Holder()
        on_receiver = await gifter.enliven(receiver.publish(holder))
        assert await E(on_receiver).keep(on_exporter) == 1
        assert type(await holder.kept[0]) is RemoteRef
        assert await E(on_receiver).call_kept("incr") == 1
        assert counter.n == 1 and len(exporter.gifts) == 0


class _Negotiating:
    """A memory netlayer whose channels say they negotiated ``encoding`` (as np does)."""

    def __init__(self, inner: Any, encoding: str) -> None:
        self.inner = inner
        self.encoding = encoding
        self.transport = inner.transport
        self.framing = inner.framing

    @property
    def location(self) -> PeerLocation:
        return self.inner.location  # type: ignore[no-any-return]

    async def serve(self, handler: Any, *, task_status: Any) -> None:
        async def negotiated(channel: Any) -> None:
            channel.encoding = self.encoding
            await handler(channel)

        await self.inner.serve(negotiated, task_status=task_status)

    @asynccontextmanager
    async def connect(self, location: PeerLocation) -> AsyncIterator[Any]:
        async with self.inner.connect(location) as channel:
            channel.encoding = self.encoding
            yield channel


async def test_a_channel_s_negotiated_encoding_overrides_the_profile() -> None:
    network = MemoryNetwork()
    async with (
        Node(_Negotiating(network.netlayer(), "cbor")) as a,
        Node(_Negotiating(network.netlayer(), "cbor")) as b,
    ):
        holder = await b.enliven(a.publish(Holder()))
        assert await E(holder).echo([1, "x"]) == [1, "x"]
        for session in (*a.sessions, *b.sessions):
            assert session.profile.encoding == "syrup"
            assert session.wire.out_encoding == session.wire.in_encoding == "cbor"


@pytest.mark.parametrize("netlayer", ["np", "websocket"])
async def test_np_and_websocket_sessions_in_cbor(netlayer: str) -> None:
    """Over np the hello's signature is bound to the Noise handshake and covers CBOR bytes."""
    from netlayers.np import NpNetlayer
    from netlayers.websocket import WebSocketNetlayer

    make = NpNetlayer if netlayer == "np" else WebSocketNetlayer
    async with (
        Node(make(), profile=CBOR_PROFILE) as server,
        Node(make(), profile=CBOR_PROFILE) as client,
    ):
        holder = await client.enliven(server.publish(Holder()))
        assert await E(E(holder).make_counter()).incr() == 1
        big = bytes(range(256)) * 1200  # over one Noise message: np chunks it
        assert await E(holder).echo(big) == big
        for session in (*client.sessions, *server.sessions):
            assert (session.binding is not None) == (netlayer == "np")
            assert session.wire.out_encoding == session.wire.in_encoding == "cbor"
