"""Messages change the tables whole or not at all, in both directions.

Outgoing: a message that cannot be encoded leaves the export table as it was
(nothing pinned) and breaks only its own promise, with a named error.
Incoming: the imports a message carries enter the table only once the whole
message has decoded; a malformed one leaves the table as it was.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from _far_util import Counter

from captp import (
    CapTPError,
    E,
    EncodeError,
    PassStyleError,
    Promise,
    Record,
    Symbol,
    far,
    make_promise,
)
from captp._vat import ManualVat
from captp.endo import EndoPositions, open_connection
from captp.engine import ENDO_POLICY, Engine
from captp.errors import ProtocolError
from captp.messages import Deliver, GcExports, Message, Return
from netlayers import connect_pair
from netlayers.memory import memory_pipe
from ocapn import syrup
from ocapn.certificates import SignedEnvelope
from ocapn.crypto import KeyPair
from ocapn.wire import OCapNWire

pytestmark = pytest.mark.anyio


@far
class Thing:
    pass


@far
class Taker:
    def __init__(self) -> None:
        self.took: list[Any] = []

    def take(self, *args: Any) -> int:
        self.took.append(args)
        return len(self.took)


@far
class Dropper:
    def take(self, *args: Any) -> None:
        return None


def _collected(refs: list[weakref.ref[Any]]) -> bool:
    gc.collect()
    return all(r() is None for r in refs)


def test_passstyleerror_is_a_named_encode_error() -> None:
    assert issubclass(PassStyleError, EncodeError)
    assert issubclass(PassStyleError, CapTPError)


async def test_unencodable_send_pins_nothing_over_ocapn() -> None:
    taker = Taker()
    async with connect_pair(bootstrap_b=taker) as (a, _b):
        ref = await a.bootstrap()
        assert await E(ref).take(Thing()) == 1  # a good send exports its Thing
        gc.collect()
        before = a.engine.stats()
        things: list[weakref.ref[Any]] = []
        for _ in range(50):
            thing = Thing()
            things.append(weakref.ref(thing))
            promise = E(ref).take(thing, object())
            with pytest.raises(PassStyleError, match="object"):
                await promise
            del thing, promise
        assert a.engine.stats() == before  # no export, no question left behind
        assert _collected(things)
        # The session is unharmed: the next good call goes through.
        assert await E(ref).take(Counter()) == 2
        assert len(taker.took) == 2


async def test_unencodable_send_only_pins_nothing() -> None:
    async with connect_pair(bootstrap_b=Taker()) as (a, _b):
        ref = await a.bootstrap()
        before = a.engine.stats()
        thing = Thing()
        watch = weakref.ref(thing)
        E.send_only(ref).take(thing, object())
        del thing
        assert a.engine.stats() == before
        assert _collected([watch])


async def test_unencodable_send_pins_nothing_over_endo() -> None:
    left, right = memory_pipe()
    async with (
        open_connection(left, framing="message", name="a") as a,
        open_connection(right, framing="message", bootstrap=Taker(), name="b"),
    ):
        ref = await a.bootstrap()
        before = a.stats()
        things: list[weakref.ref[Any]] = []
        for _ in range(10):
            thing = Thing()
            things.append(weakref.ref(thing))
            with pytest.raises(PassStyleError):
                await E(ref).take(thing, object())
            del thing
        assert a.stats() == before
        assert _collected(things)


def test_a_failed_encode_undoes_its_handoff_and_exports() -> None:
    deposits: list[Any] = []
    other = Engine(lambda m: None, ManualVat(), name="other")
    foreign = other.import_object(3)

    def encode(message: Message) -> None:
        assert isinstance(message, Deliver)
        for arg in message.args:
            session.describe(arg)  # the last argument is not a reference: it raises

    session = Engine(encode, ManualVat(), handoff=lambda ref: ("give", lambda: deposits.append(1)))
    target = session.import_object(1)
    thing = Thing()
    watch = weakref.ref(thing)
    promise = session.send_deliver(target, "take", (foreign, thing, 42))
    assert promise is not None and isinstance(promise.reason(), PassStyleError)
    assert deposits == []
    assert session.stats()["exports"] == 0 and session.stats()["questions"] == 0
    del thing, promise
    assert _collected([watch])
    # A message that encodes makes its deposit once, after encoding.
    session.send_deliver(target, "take", (foreign,), want_result=False)
    assert deposits == [1]


def _wire() -> tuple[Engine, OCapNWire]:
    session = Engine(lambda m: None, ManualVat(), bootstrap=Taker())
    return session, OCapNWire(session)


def _desc(label: str, position: int) -> Record:
    return Record(Symbol(label), (position,))


def _deliver(answer: Any, *args: Any) -> bytes:
    """``op:deliver`` of ``take(*args)`` to the receiver's bootstrap object."""
    fields = (_desc("desc:export", 0), [Symbol("take"), *args], answer, False)
    return syrup.encode(Record(Symbol("op:deliver"), fields))


def test_a_malformed_message_leaves_the_import_table_alone() -> None:
    session, wire = _wire()
    # Two imports, then an answer position that is not one.
    bad = _deliver("bad", _desc("desc:import-object", 5), _desc("desc:import-promise", 6))
    with pytest.raises(ProtocolError, match="answer"):
        list(wire.feed(bad))
    assert session.stats() == {"exports": 1, "imports": 0, "questions": 0, "answers": 0}


def test_imports_enter_the_table_when_the_message_is_received() -> None:
    session, wire = _wire()
    good = _deliver(False, _desc("desc:import-object", 5), _desc("desc:import-object", 5))
    with ManualVat():
        (message,) = list(wire.feed(good))
        assert session.stats()["imports"] == 0  # decoded, not yet received
        session.receive(message)
    assert session.stats()["imports"] == 1
    assert message.args[1] is message.args[0]


def test_a_partial_stream_message_counts_its_imports_once() -> None:
    sent: list[Any] = []
    vat = ManualVat()
    session = Engine(sent.append, vat, bootstrap=Dropper())
    wire = OCapNWire(session, framing="none")
    data = _deliver(False, _desc("desc:import-object", 5))
    with vat:
        assert list(wire.feed(data[:40])) == []  # the record arrives in two pieces
        for message in wire.feed(data[40:]):
            session.receive(message)
    del message
    vat.run()
    gc.collect()
    vat.run()
    assert [m for m in sent if isinstance(m, GcExports)] == [GcExports((5,), (1,))]


def test_a_stream_message_cut_anywhere_counts_each_import_once() -> None:
    # The stream decoder reports each record once, even when its message is
    # cut by the end of a read (a small TCP read does that): what the first
    # part staged must still enter the table when the rest arrives.
    first = _deliver(False, "before")
    cut = _deliver(False, _desc("desc:import-object", 5), _desc("desc:import-object", 6))
    data = first + cut
    for at in range(1, len(data)):
        sent: list[Any] = []
        vat = ManualVat()
        session = Engine(sent.append, vat, bootstrap=Dropper())
        wire = OCapNWire(session, framing="none")
        with vat:
            for chunk in (data[:at], data[at:]):
                for message in wire.feed(chunk):
                    session.receive(message)
            assert session.stats()["imports"] == 2, at
        del message
        vat.run()
        gc.collect()
        vat.run()
        drops = [m for m in sent if isinstance(m, GcExports)]
        assert len(drops) == 1, at
        assert dict(zip(drops[0].positions, drops[0].deltas, strict=True)) == {5: 1, 6: 1}, at


def test_a_give_becomes_a_promise_in_the_one_decoding_pass() -> None:
    started: list[SignedEnvelope] = []
    promises: list[Promise] = []

    def on_give(give: SignedEnvelope) -> tuple[Promise, Callable[[], None]]:
        promise = make_promise()[0]
        promises.append(promise)
        return promise, lambda: started.append(give)

    session = Engine(lambda m: None, ManualVat(), bootstrap=Dropper())
    wire = OCapNWire(session, on_give=on_give)
    give = SignedEnvelope.sign(Record(Symbol("desc:handoff-give"), (1, 2)), KeyPair())
    inner = Record(Symbol("desc:handoff-receive"), (b"s", b"r", 0, give.to_record()))
    receive = SignedEnvelope.sign(inner, KeyPair())
    data = _deliver(False, [give.to_record()], receive.to_record())
    with ManualVat():
        (message,) = wire.feed(data)
        # The top-level give is a promise; the one inside the receive stays signed.
        assert message.args[0] == [promises[0]]
        assert type(message.args[1]) is SignedEnvelope and message.args[1] == receive
        assert started == []  # nothing starts before the message is received
        session.receive(message)
    assert len(promises) == 2 and started == [give]


def test_a_settled_promise_is_reported_after_the_message_that_exports_it() -> None:
    sent: list[Any] = []

    def encode(message: Message) -> None:
        sent.append(message)
        if isinstance(message, Return):
            for value in message.value:
                engine.describe(value)

    engine = Engine(encode, ManualVat(), policy=ENDO_POLICY, positions=EndoPositions())
    settled = [make_promise()[0] for _ in range(2)]
    for promise in settled:
        promise.resolve_with(7)
    engine._emit(Return("q-1", True, settled))
    assert [type(m).__name__ for m in sent] == ["Return", "Resolve", "Resolve"]
    assert [m.position for m in sent[1:]] == ["p+1", "p+2"]
    assert engine.stats()["exports"] == 2
