"""The Endo wire and connections without Node: framing, guards, drops, disconnects, timeouts.

Unit tests feed a session hand-written ``CTP_*`` JSON; connection tests run
two Python peers over an in-memory pipe (one message per frame) or TCP
(netstrings).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from _freed_util import Freed

from captp import (
    ConnectionLost,
    DecodeError,
    E,
    EncodeError,
    ProtocolError,
    RemoteError,
    RemoteRef,
    far,
    make_promise,
)
from captp._vat import ManualVat
from captp.endo import (
    EndoConnection,
    EndoPositions,
    EndoWire,
    QuestionTimeout,
    open_connection,
    reverse_slot,
)
from captp.endo.framing import NetstringDecoder, netstring
from captp.engine import ENDO_POLICY, Engine
from captp.messages import Abort, GcAnswers, GcExports, Get, Message
from interop.endo_peer import Counter, PeerBootstrap
from netlayers.endo_tcp import connect_tcp, serve_tcp
from netlayers.memory import memory_pipe

# == the wire on its own ===============================================================


class Peer:
    """A session and its wire, fed JSON by hand; what it sends is collected as JSON."""

    def __init__(self, bootstrap: Any = None, framing: Any = "netstring") -> None:
        self.vat = ManualVat()
        self.raw: list[bytes] = []
        self.engine = Engine(
            self._encode, self.vat, bootstrap=bootstrap, policy=ENDO_POLICY,
            positions=EndoPositions(), name="py", on_output=self._collect,
        )
        self.wire = EndoWire(self.engine, framing=framing)

    def _encode(self, message: Message) -> bytes | list[bytes]:
        return self.wire.encode(message)

    def _collect(self) -> None:
        self.raw.extend(self.engine.data_to_send())

    def feed(self, *messages: dict[str, Any]) -> None:
        data = b"".join(netstring(json.dumps(m).encode()) for m in messages)
        with self.vat:
            for message in self.wire.feed(data):
                self.engine.receive(message)
        self.vat.run()

    def sent(self) -> list[dict[str, Any]]:
        decoder = NetstringDecoder()
        texts = [t for chunk in self.raw for t in decoder.feed(chunk)]
        return [json.loads(t) for t in texts]


def call(question: str, target: str, body: str, slots: list[str] | None = None) -> dict[str, Any]:
    return {"type": "CTP_CALL", "epoch": 0, "questionID": question, "target": target,
            "method": {"body": body, "slots": slots or []}}


def test_positions_count_like_captp() -> None:
    positions = EndoPositions()
    assert [positions.next_export(False), positions.next_export(True),
            positions.next_export(False), positions.next_question(),
            positions.next_question()] == ["o+1", "p+1", "o+2", "q-1", "q-2"]
    assert reverse_slot("o+3") == "o-3" and reverse_slot("p-12") == "p+12"


def test_netstring_decoder_handles_any_split() -> None:
    frames = [b'{"a":1}', "{\"\u00e9\":\"\u2028\"}".encode(), b"{}"]
    data = b"".join(netstring(f) for f in frames)
    decoder = NetstringDecoder()
    got = [t for i in range(len(data)) for t in decoder.feed(data[i : i + 1])]
    assert got == [f.decode() for f in frames] and decoder.buffered == 0
    assert NetstringDecoder().feed(data) == got


def test_netstring_decoder_reads_large_frames_whole_or_split() -> None:
    frames = [("\u00e9" * 5000).encode(), b"x" * 4096, b"y" * 4097, b"{}"]
    data = b"".join(netstring(f) for f in frames)
    assert NetstringDecoder().feed(data) == [f.decode() for f in frames]
    decoder = NetstringDecoder()
    got = [t for i in range(0, len(data), 1000) for t in decoder.feed(data[i : i + 1000])]
    assert got == [f.decode() for f in frames] and decoder.buffered == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"x:{}", "decimal digits"), (b"2:{}x", "terminated"), (b"12345678901", "length expected"),
     (b"99:", "exceeds the limit"), (b"2:\xff\xfe,", "UTF-8")],
)
def test_netstring_errors(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        NetstringDecoder(max_frame_size=50).feed(data)


def test_pipelined_call_in_the_same_read_finds_its_answer() -> None:
    peer = Peer(PeerBootstrap())
    peer.feed(
        {"type": "CTP_BOOTSTRAP", "epoch": 0, "questionID": "q-1"},
    )
    # makeCounter and a call on its answer arrive in one read.
    peer.feed(call("q-2", "o-1", '["makeCounter",[10]]'), call("q-3", "q-2", '["incr",[]]'))
    returns = {m["answerID"]: m for m in peer.sent() if m["type"] == "CTP_RETURN"}
    assert returns["q-3"]["result"] == {"body": "11", "slots": []}
    assert returns["q-2"]["result"]["slots"] == ["o+2"]


def test_calls_to_unknown_exports_are_answered_with_a_reference_error() -> None:
    peer = Peer(PeerBootstrap())
    peer.feed({"type": "CTP_BOOTSTRAP", "epoch": 0, "questionID": "q-1"})
    peer.feed(
        call("q-2", "o-99", '["ping",[]]'),
        call("q-3", "o-1", '["echo",[{"@qclass":"slot","index":0}]]', ["o-42"]),
        call("q-4", "o-1", '["echo",[{"@qclass":"slot","index":0}]]', ["q-5"]),
        call("q-5", "q-77", '["incr",[]]'),
    )
    returns = [m for m in peer.sent() if m["type"] == "CTP_RETURN"][1:]
    assert [m["answerID"] for m in returns] == ["q-2", "q-3", "q-4", "q-5"]
    for m in returns:
        body = json.loads(m["exception"]["body"])
        assert body["name"] == "ReferenceError", body
    assert "no export o+99" in json.loads(returns[0]["exception"]["body"])["message"]
    assert peer.engine.dead is None  # JS would have dropped these silently; we answer


def test_drops() -> None:
    peer = Peer(PeerBootstrap())
    peer.feed({"type": "CTP_BOOTSTRAP", "epoch": 0, "questionID": "q-1"})
    peer.feed(call("q-2", "o-1", '["makeCounter",[]]'))
    assert peer.engine.stats() == {"exports": 2, "imports": 0, "questions": 0, "answers": 2}
    # The peer drops its question q-2 (JS does, with gcImports): the answer goes.
    peer.feed({"type": "CTP_DROP", "slotID": "q-2", "decRefs": 1, "epoch": 0})
    assert peer.engine.stats()["answers"] == 1
    # decRefs 0 changes nothing; an inflated count frees the export.
    peer.feed({"type": "CTP_DROP", "slotID": "o-2", "decRefs": 0, "epoch": 0})
    assert peer.engine.stats()["exports"] == 2
    peer.feed({"type": "CTP_DROP", "slotID": "o-2", "decRefs": 21, "epoch": 0})
    assert peer.engine.stats()["exports"] == 1
    for bad in ({"slotID": "o+1", "decRefs": 1}, {"slotID": "o-1", "decRefs": -1}, {"slotID": 5}):
        with pytest.raises(ProtocolError):
            peer.feed({"type": "CTP_DROP", "epoch": 0, **bad})


def test_sent_drops_carry_the_importers_name_and_true_count() -> None:
    peer = Peer()
    texts = peer.wire.to_json(GcExports(("o-3", "p-1"), (2, 1)))
    assert texts == [
        '{"type":"CTP_DROP","slotID":"o-3","decRefs":2,"epoch":0}',
        '{"type":"CTP_DROP","slotID":"p-1","decRefs":1,"epoch":0}',
    ]
    assert peer.wire.encode(GcAnswers(("q-1",))) == b""  # JS never frees answers
    message_peer = Peer(framing="message")
    frames = message_peer.wire.encode(GcExports(("o-3", "p-1"), (2, 1)))
    assert frames == [texts[0].encode(), texts[1].encode()]  # one send each


def test_disconnect_is_echoed_and_ends_the_session() -> None:
    for reason, text in [
        ({}, "peer disconnected (reason: {})"),
        ({"message": "bye"}, "bye"),
        ("just text", "just text"),
        (None, "peer disconnected"),
    ]:
        peer = Peer()
        message = {"type": "CTP_DISCONNECT", "epoch": 0}
        if reason is not None:
            message["reason"] = reason
        peer.feed(message)
        assert peer.sent() == [message]  # the echo
        assert peer.engine.dead is not None
        assert peer.engine.dead.reason == f"peer aborted: {text}"
    peer = Peer()
    assert peer.wire.to_json(Abort("going away")) == [
        '{"type":"CTP_DISCONNECT","epoch":0,"reason":{"message":"going away"}}'
    ]


def test_unknown_types_are_ignored_and_malformed_messages_rejected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = Peer(PeerBootstrap())
    with caplog.at_level(logging.WARNING, logger="captp.endo"):
        peer.feed({"type": "CTP_BOGUS", "epoch": 0})
        peer.feed({"type": ["CTP_CALL"], "epoch": 0})  # not even a string: still unknown
        peer.feed({"type": "CTP_TRAP_ITERATE", "epoch": 0, "questionID": "q-1",
                   "serialized": {"body": "[]", "slots": []}})
    assert "CTP_BOGUS" in caplog.text and "CTP_TRAP_ITERATE" in caplog.text
    assert "['CTP_CALL']" in caplog.text
    assert peer.engine.dead is None
    for bad in [
        b"7:[1,2,3],",
        b'7:{"a":1},',  # no type: ignored, but...
        b"3:{x},",
        netstring(json.dumps(call("q-1", "o-1", '["ping"]', [])).encode()).replace(
            b'"method"', b'"methud"'),
        netstring(json.dumps({"type": "CTP_RETURN", "epoch": 0, "answerID": 3}).encode()),
    ]:
        if bad == b'7:{"a":1},':
            assert list(Peer().wire.feed(bad)) == []
            continue
        with pytest.raises(ProtocolError):
            list(Peer().wire.feed(bad))


def test_trap_calls_are_answered_with_an_error() -> None:
    peer = Peer(PeerBootstrap())
    peer.feed({"type": "CTP_BOOTSTRAP", "epoch": 0, "questionID": "q-1"})
    peer.feed({**call("q-2", "o-1", '["ping",[]]'), "trap": True})
    (answer,) = [m for m in peer.sent() if m.get("answerID") == "q-2"]
    assert "Trap()" in json.loads(answer["exception"]["body"])["message"]


def test_gets_and_untag() -> None:
    peer = Peer()
    target = peer.engine.import_object("o-1")
    assert peer.wire.to_json(Get(target, "index", 2, "q-1"))[0].endswith(
        '"method":{"body":"[\\"2\\"]","slots":[]}}')
    with pytest.raises(EncodeError, match="untag"):
        peer.wire.encode(Get(target, "untag", "copySet", "q-2"))


def test_our_own_question_is_never_written_in_slots() -> None:
    peer = Peer()
    boot = peer.engine.import_object("o-1")
    with peer.vat:
        counter = E(boot).makeCounter()
        E(boot).echo(counter)
    echo = peer.sent()[-1]
    assert echo["method"]["slots"] == ["p+1"]  # a fresh promise, never q-1
    peer.feed({"type": "CTP_RETURN", "epoch": 0, "answerID": "q-1",
               "result": {"body": '{"@qclass":"slot","iface":"Alleged: Counter","index":0}',
                          "slots": ["o+2"]}})
    resolve = peer.sent()[-1]
    assert resolve == {"type": "CTP_RESOLVE", "promiseID": "p-1", "res": {
        "body": '{"@qclass":"slot","iface":"Alleged: Counter","index":0}', "slots": ["o-2"]}}


def test_the_bootstrap_question_is_not_pipelined_on() -> None:
    peer = Peer()
    with peer.vat:
        boot = peer.engine.bootstrap()
        early = E(boot).ping()
    assert isinstance(early.reason(), EncodeError)
    assert [m["type"] for m in peer.sent()] == ["CTP_BOOTSTRAP"]


# == two Python peers ==================================================================


@far
class Service(PeerBootstrap):
    def __init__(self) -> None:
        super().__init__()
        self.kept: list[Any] = []

    def keep(self, value: Any) -> bool:
        self.kept.append(value)
        return True


@asynccontextmanager
async def pipe_pair(
    bootstrap: Any, **client: Any
) -> AsyncIterator[tuple[EndoConnection, EndoConnection]]:
    left, right = memory_pipe()
    async with (
        open_connection(left, bootstrap=bootstrap, framing="message", name="server") as s,
        open_connection(right, framing="message", name="client", **client) as c,
    ):
        yield s, c


@pytest.mark.anyio
async def test_python_to_python_over_a_message_pipe() -> None:
    service = Service()
    async with pipe_pair(service) as (_, client):
        boot = await client.bootstrap()
        assert await E(boot).ping() == "pong"
        counter = E(boot).makeCounter(1.0)
        assert (await E(counter).incr(), await E(counter).incr()) == (2.0, 3.0)
        assert await E(boot).callMe(far(lambda x: x + 1), 1.0) == 2.0
        promise, resolver = make_promise()
        result = E(boot).awaitArg(promise)
        resolver.resolve("later")
        assert await result == ["got", "later"]
        with pytest.raises(RemoteError, match=r"^TypeError: boom$"):
            await E(boot).fail("boom")
        mine = Counter()
        assert await E(boot).keep(mine) is True
        assert type(service.kept[0]) is RemoteRef
        assert (await E(boot).echo(mine))[0] is mine


@pytest.mark.anyio
async def test_question_timeout_against_a_silent_peer() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def swallow(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await stream.receive()  # read everything, answer nothing

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, swallow)
        async with connect_tcp("127.0.0.1", port, question_timeout=0.2) as conn:
            with pytest.raises(QuestionTimeout, match=r"no answer to question q-1 within 0\.2 s"):
                await conn.bootstrap()
            assert conn.stats()["questions"] == 0
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_server_gives_each_connection_its_bootstrap_and_name() -> None:
    made: list[EndoConnection] = []

    def make(conn: EndoConnection) -> Service:
        made.append(conn)
        return Service()

    async with serve_tcp(make) as server:
        async with connect_tcp("127.0.0.1", server.port) as a, \
                connect_tcp("127.0.0.1", server.port) as b:
            boot_a, boot_b = await a.bootstrap(), await b.bootstrap()
            await E(boot_a).keep(1.0)
            assert await E(boot_b).ping() == "pong"
            assert [c.name for c in made] == ["python-conn1", "python-conn2"]
            assert len(server.connections) == 2
        await anyio.sleep(0.05)
        assert not server.connections


@pytest.mark.anyio
async def test_closing_the_server_breaks_client_promises() -> None:
    async with serve_tcp(Service()) as server, connect_tcp("127.0.0.1", server.port) as conn:
        boot = await conn.bootstrap()
        pending = E(boot).never()
        await anyio.sleep(0.02)
        server.abort_all("server closed")
        with pytest.raises(ConnectionLost, match="peer aborted: server closed"):
            await pending
        await conn.wait_closed()
        assert conn.closed and conn.lost_reason is not None


@pytest.mark.anyio
async def test_a_protocol_error_ends_only_its_own_session() -> None:
    async with serve_tcp(Service()) as server, connect_tcp("127.0.0.1", server.port) as good:
        boot = await good.bootstrap()
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            await stream.send(b"5:nope!,")
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while True:  # the server reports why, then closes
                    data = await stream.receive()
                    assert b"protocol error" in data
        assert await E(boot).ping() == "pong"


def test_bad_question_timeout_is_rejected() -> None:
    left, _ = memory_pipe()
    with pytest.raises(ValueError, match="question_timeout"):
        EndoConnection(left, ManualVat(), question_timeout=0)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_closed_endo_connection_is_freed_without_the_cycle_collector() -> None:
    """The wire's dispatch tables, the marshal's hooks and its recursive encoders and
    decoders let go when a session ends, and the question timeout is a timer, not a
    task left to cancel: reference counting frees both ends at once.  (Before, each
    connection left ~250 objects, the engine among them, to the next full collection.)"""
    import gc

    import sniffio

    from captp._vat import open_vat

    gc.collect()
    gc.disable()
    try:
        async with open_vat() as vat, serve_tcp(PeerBootstrap(), port=0) as server:
            for _ in range(2):
                # (A compiled engine takes no weak reference: spec-notes/0040.  Checked
                # before the next connection: a new engine may take a freed one's id.)
                freed = Freed()

                def watch(conn: EndoConnection, freed: Freed = freed) -> None:
                    freed.watch(conn, conn._connection, conn.engine, conn.wire, conn.wire.marshal)

                async with connect_tcp("127.0.0.1", server.port, vat=vat) as conn:
                    boot = await conn.bootstrap()
                    counter = await E(boot).makeCounter(1)  # references both ways
                    assert await E(boot).callMethod(counter, "incr") == 2.0
                    assert await E(boot).getRecord() is not None
                    if sniffio.current_async_library() != "trio":
                        # (Under trio, anyio's socket stream keeps the Cancelled that
                        # stops the aborting side's read in a cycle with its own frame.)
                        watch(conn)
                    (served,) = server.connections
                    watch(served)
                    del boot, counter, served
                del conn
                with anyio.fail_after(10):
                    while not freed.all_freed():
                        await anyio.sleep(0.02)
    finally:
        gc.enable()
