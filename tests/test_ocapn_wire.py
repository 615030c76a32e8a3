"""The OCapN message codec: engine messages <-> op:/desc: records, byte for byte."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from captp import (
    E,
    ProtocolError,
    Record,
    RemoteError,
    RemoteRef,
    Symbol,
    Tagged,
    far,
    null,
)
from captp._promise import Promise, Resolver
from captp._vat import ManualVat
from captp.engine import Engine
from captp.limits import LimitExceeded
from captp.messages import Abort, Deliver, GcAnswers, GcExports, Get, Listen
from ocapn import syrup
from ocapn.wire import ENDO_PROFILE, SPEC_PROFILE, OCapNWire, WireProfile

SUITE = WireProfile(name="suite-main", deliver_only=True, gc_plural=False, listen_fields=3)


@far
class Echo:
    def __call__(self, *args: Any) -> list[Any]:
        return list(args)

    def echo(self, *args: Any) -> list[Any]:
        return list(args)

    def me(self) -> Echo:
        return self


def make(profile: WireProfile = SPEC_PROFILE, bootstrap: Any = None) -> tuple[OCapNWire, list[Any]]:
    out: list[Any] = []
    vat = ManualVat()
    session = Engine(out.append, vat, bootstrap=bootstrap if bootstrap is not None else Echo())
    return OCapNWire(session, profile), out


def test_deliver_bytes() -> None:
    wire, _ = make()
    ref = wire.engine.import_object(5)
    resolver = Resolver(Promise())
    data = wire.encode(Deliver(ref, "say-hi", ("hi", 1, b"\x00"), 3, resolver))
    assert data == (
        b"<10'op:deliver<11'desc:export5+>[6'say-hi2\"hi1+1:\x00]3+<18'desc:import-object1+>>"
    )


def test_deliver_without_answer_spec_and_suite_forms() -> None:
    wire, _ = make()
    ref = wire.engine.import_object(2)
    assert wire.encode(Deliver(ref, None, ("x",))) == (
        b"<10'op:deliver<11'desc:export2+>[1\"x]ff>"
    )
    suite, _ = make(SUITE)
    ref = suite.engine.import_object(2)
    assert suite.encode(Deliver(ref, "fulfill", (Symbol("ok"),))) == (
        b"<15'op:deliver-only<11'desc:export2+>[7'fulfill2'ok]>"
    )


def test_gc_and_abort_forms_per_profile() -> None:
    spec, _ = make()
    suite, _ = make(SUITE)
    assert spec.encode(GcExports((1, 2), (3, 1))) == b"<13'op:gc-exports[1+2+][3+1+]>"
    assert suite.encode(GcExports((1,), (3,))) == b"<12'op:gc-export[1+][3+]>"
    assert spec.encode(GcAnswers((0,))) == b"<13'op:gc-answers[0+]>"
    assert suite.encode(GcAnswers((0,))) == b"<12'op:gc-answer[0+]>"
    assert spec.encode(Abort("bye")) == b"<8'op:abort3\"bye>"


def test_listen_three_fields_by_default_two_on_request() -> None:
    wire, _ = make()
    promise = wire.engine.import_promise(4)
    data = wire.encode(Listen(promise, Resolver(Promise())))
    assert data == b"<9'op:listen<11'desc:export4+><18'desc:import-object1+>f>"
    two, _ = make(WireProfile(listen_fields=2))
    promise = two.engine.import_promise(4)
    assert two.encode(Listen(promise, Resolver(Promise()))).endswith(b"1+>>")


def test_passable_forms() -> None:
    wire, _ = make()
    ref = wire.engine.import_object(1)
    data = wire.encode(
        Deliver(ref, None, (None, null, Tagged("copySet", [1]), TypeError("boom")))
    )
    assert data == (
        b"<10'op:deliver<11'desc:export1+>[<4'void><4'null><11'desc:tagged7'copySet[1+]>"
        b"<10'desc:error15\"TypeError: boom>]ff>"
    )


def test_decoding_every_variant() -> None:
    wire, _ = make(bootstrap=Echo())
    boot = wire.engine.lookup_export(0)
    [d] = wire.feed(b"<10'op:deliver<11'desc:export0+>[4'echo1+]1+<18'desc:import-object7+>>")
    assert d.target is boot and d.method == "echo" and d.args == (1,) and d.answer == 1
    assert type(d.resolver) is RemoteRef and d.resolver.position == 7
    with wire.engine._vat:  # type: ignore[attr-defined]
        wire.engine.receive(d)  # creates answer 1, which the next messages name
    [only] = wire.feed(b"<15'op:deliver-only<11'desc:export0+>[1+2+]>")
    assert only == Deliver(boot, None, (1, 2))
    [listen2] = wire.feed(b"<9'op:listen<11'desc:answer1+><18'desc:import-object8+>>")
    assert isinstance(listen2, Listen) and listen2.wants_partial is False
    [listen3] = wire.feed(b"<9'op:listen<11'desc:answer1+><18'desc:import-object8+>t>")
    assert listen3.wants_partial is True
    assert list(wire.feed(b"<13'op:gc-exports[1+][2+]>")) == [GcExports((1,), (2,))]
    assert list(wire.feed(b"<12'op:gc-export[1+][2+]>")) == [GcExports((1,), (2,))]
    assert list(wire.feed(b"<12'op:gc-export1+2+>")) == [GcExports((1,), (2,))]
    assert list(wire.feed(b"<12'op:gc-answer[3+]>")) == [GcAnswers((3,))]
    assert list(wire.feed(b"<12'op:gc-answer3+>")) == [GcAnswers((3,))]
    [get] = wire.feed(b"<6'op:get<11'desc:answer1+>3\"foo2+>")
    assert get == Get(wire.engine.lookup_answer(1), "get", "foo", 2)
    [index] = wire.feed(b"<8'op:index<11'desc:answer1+>0+3+>")
    assert index == Get(wire.engine.lookup_answer(1), "index", 0, 3)


def test_passables_decoded() -> None:
    wire, _ = make()
    [d] = wire.feed(
        b"<15'op:deliver-only<11'desc:export0+>[<4'void><4'null><11'desc:tagged1't1+>"
        b"<8'desc:tag1\"u2+><10'desc:error4\"oops><5'other1+>]>"
    )
    void, nul, tagged, tag, err, other = d.args
    assert void is None and nul is null
    assert tagged == Tagged("t", 1) and tag == Tagged("u", 2)
    assert isinstance(err, RemoteError) and str(err) == "oops"
    assert other.label == Symbol("other") and other.fields == (1,)


def test_pipelined_messages_in_one_stream_read() -> None:
    """A message may name the answer the previous message in the same read creates."""
    wire, out = make()
    wire._framing = "none"  # as on an unframed TCP stream
    wire._detected = True
    chunk = (
        b"<10'op:deliver<11'desc:export0+>[2'me]0+f>"
        b"<10'op:deliver<11'desc:answer0+>[4'echo2\"hi]1+<18'desc:import-object9+>>"
    )
    handled = []
    with wire.engine._vat:  # type: ignore[attr-defined]
        for msg in wire.feed(chunk):
            wire.engine.receive(msg)  # creates answer 0 before the next is decoded
            handled.append(msg)
        wire.engine._vat.run()  # type: ignore[attr-defined]
    assert len(handled) == 2
    assert [m.method for m in out] == ["fulfill"]
    assert out[0].args == (["hi"],)


def test_len_framing_detected_and_written() -> None:
    framed = WireProfile(stream_framing="len")
    wire = OCapNWire(make()[0].engine, framed, framing="none")
    assert wire.encode(Abort("x")) == b"15:<8'op:abort1\"x>"
    msgs = list(wire.feed(b"15:<8'op:abort1\"x>15:<8'op:abort1\"y>"))
    assert msgs == [Abort("x"), Abort("y")]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"<10'op:deliver<11'desc:export99+>[]ff>", "no export at position 99"),
        (b"<10'op:deliver<11'desc:export0+>[]f>", "takes 4 fields"),
        (b"<10'op:deliver<11'desc:export0+>5+ff>", "args must be a list"),
        (b"<10'op:deliver1+[]ff>", "target must be"),
        (b"<10'op:deliver<11'desc:export0+>[]1-f>", "position"),
        (b"<10'op:deliver<11'desc:export0+>[]f5+>", "resolve-me-desc"),
        (b"<7'op:nope>", "unknown operation <op:nope>"),
        (b"[1+]", "expected an op: record"),
        (b"<13'op:gc-exports[1+][0+]>", "positive integer"),
        (b"<13'op:gc-exports[1+2+][1+]>", "differ in length"),
        (b"<18'desc:import-object1+>", "expected an op: record"),
        (b"<10'op:deliver<18'desc:import-object1+>[]ff>", "target must be"),
        (b"<10'op:deliver<11'desc:export0+>[<18'desc:import-object1->]ff>", "position"),
    ],
)
def test_malformed_messages_are_protocol_errors(data: bytes, complaint: str) -> None:
    wire, _ = make()
    with pytest.raises(ProtocolError, match=complaint):
        list(wire.feed(data))


def test_a_decoding_limit_is_named_and_caused_by_the_decoders_error() -> None:
    engine = make()[0].engine
    wire = OCapNWire(engine, SPEC_PROFILE, limits=syrup.Limits(max_size=16))
    with pytest.raises(LimitExceeded) as info:
        list(wire.feed(b"<10'op:deliver<11'desc:export0+>[4'ping]ff>"))
    assert info.value.limit == "max_message_bytes"
    assert type(info.value.__cause__) is syrup.SyrupDecodeError  # (in the compiled build too)


def test_bad_syrup_is_a_decode_error_with_offset() -> None:
    wire, _ = make()
    with pytest.raises(syrup.SyrupDecodeError) as info:
        list(wire.feed(b"<10'op:deliver<11'desc:export00+>[]ff>"))
    assert info.value.offset is not None


def test_round_trip_through_two_wires() -> None:
    vat = ManualVat()
    a_out: list[bytes] = []
    b_out: list[bytes] = []
    a = Engine(lambda m: a_out.append(wa.encode(m)), vat, name="a")
    b = Engine(lambda m: b_out.append(wb.encode(m)), vat, bootstrap=Echo(), name="b")
    wa, wb = OCapNWire(a), OCapNWire(b)
    with vat:
        p = E(a.bootstrap()).echo(Symbol("s"), 2**100, -0.0, {"k": [b"v"]})
    for data in a_out:
        for m in wb.feed(data):
            b.receive(m)
    vat.run()
    for data in b_out:
        for m in wa.feed(data):
            a.receive(m)
    assert p.result() == [Symbol("s"), 2**100, -0.0, {"k": [b"v"]}]


def test_struct_key_order_per_profile_and_either_order_read() -> None:
    struct = {"c": 3, "bb": 2, "a": 1}
    spec, _ = make()
    endo, _ = make(ENDO_PROFILE)
    spec_ref = spec.engine.import_object(1)
    endo_ref = endo.engine.import_object(1)
    syrup_order = b'{1"a1+1"c3+2"bb2+}'
    js_order = b'{1"a1+2"bb2+1"c3+}'
    assert syrup_order in spec.encode(Deliver(spec_ref, None, (struct,)))
    assert js_order in endo.encode(Deliver(endo_ref, None, (struct,)))
    # Whatever the profile, a struct in either order is read.
    for wire in (spec, endo):
        boot = wire.engine.lookup_export(0)
        for order in (syrup_order, js_order):
            [msg] = wire.feed(b"<10'op:deliver<11'desc:export0+>[" + order + b"]ff>")
            assert msg == Deliver(boot, None, (struct,))


def test_endo_profile_writes_negative_zero_as_zero() -> None:
    spec, _ = make()
    endo, _ = make(ENDO_PROFILE)
    minus = b"D\x80" + bytes(7)
    plus = b"D" + bytes(8)
    spec_data = spec.encode(Deliver(spec.engine.import_object(1), None, (-0.0, 0.0)))
    endo_data = endo.encode(Deliver(endo.engine.import_object(1), None, (-0.0, 0.0)))
    assert minus + plus in spec_data
    assert plus + plus in endo_data


def test_each_record_is_declared_once_with_its_fields() -> None:
    from ocapn import wire as wire_module

    assert repr(wire_module.DELIVER) == "<op:deliver to-desc args answer-pos resolve-me-desc>"
    assert wire_module.LISTEN.fields == ("to-desc", "listen-desc", "wants-partial")
    assert wire_module.VOID.make() == Record(Symbol("void"), ())
    wire, _ = make()
    # A complaint names the record and the field the peer got wrong.
    with pytest.raises(ProtocolError, match="op:get field-name must be a string"):
        list(wire.feed(b"<6'op:get<11'desc:export0+>5+2+>"))
    with pytest.raises(ProtocolError, match=r"<op:listen> takes 2 or 3 fields, got 1"):
        list(wire.feed(b"<9'op:listen<11'desc:export0+>>"))


def stream_wire() -> tuple[OCapNWire, list[Any]]:
    """A wire on an unframed stream, its first read done (the stream decoder made)."""
    out: list[Any] = []
    vat = ManualVat()
    engine = Engine(out.append, vat, bootstrap=Echo())
    wire = OCapNWire(engine, framing="none")
    assert list(wire.feed(b"<13'op:gc-answers[]>")) == [GcAnswers(())]
    return wire, out


def handle(wire: OCapNWire, reads: list[bytes]) -> list[Any]:
    """Feed ``reads`` in turn, receiving each message as the driver does."""
    handled = []
    vat: ManualVat = wire.engine._vat  # type: ignore[assignment]
    with vat:
        for data in reads:
            for message in wire.feed(data):
                wire.engine.receive(message)
                handled.append(message)
            wire.engine.run_local_calls()
        vat.run()
    return handled


CALL = b"<10'op:deliver<11'desc:export0+>[4'echo1+]%d+<18'desc:import-object%d+>>"


@pytest.mark.parametrize("cut", [None, 1, 20, -1, -3], ids=lambda c: f"cut={c}")
def test_a_stream_read_is_decoded_alike_whole_or_in_parts(cut: int | None) -> None:
    # A read that is one whole message is decoded at once; a part of one (even
    # a part that ends with a record's '>') goes to the stream decoder.  Either
    # way the resolver the call names arrives once: its drop gives back 1.
    wire, out = stream_wire()
    call = CALL % (1, 9)
    reads = [call] if cut is None else [call[:cut], call[cut:]]
    [message] = handle(wire, reads)
    assert message.method == "echo" and message.args == (1,)
    assert [m.method for m in out] == ["fulfill"]
    del message
    out.clear()  # they hold the resolver
    gc.collect()
    handle(wire, [])  # the turns that follow: the gc flush
    assert [(m.positions, m.deltas) for m in out if type(m) is GcExports] == [((9,), (1,))]


def test_several_messages_in_one_read_and_one_per_read_give_the_same_messages() -> None:
    calls = [CALL % (i, 10 + i) for i in range(1, 5)]
    together, _ = stream_wire()
    apart, _ = stream_wire()
    one = handle(together, [b"".join(calls)])
    each = handle(apart, calls)
    assert [(m.method, m.args, m.answer) for m in one] == [
        (m.method, m.args, m.answer) for m in each
    ] == [("echo", (1,), i) for i in range(1, 5)]


def test_a_fault_after_reads_decoded_at_once_has_its_offset_in_the_whole_stream() -> None:
    calls = [CALL % (i, 10 + i) for i in range(1, 3)]
    bad = b"<10'op:deliver<11'desc:export00+>[]ff>"
    together, _ = stream_wire()
    apart, _ = stream_wire()
    with pytest.raises(syrup.SyrupDecodeError) as whole:
        handle(together, [b"".join([*calls, bad])])
    with pytest.raises(syrup.SyrupDecodeError) as parts:
        handle(apart, [*calls, bad])
    assert parts.value.offset == whole.value.offset > sum(map(len, calls))
    assert str(parts.value) == str(whole.value)
