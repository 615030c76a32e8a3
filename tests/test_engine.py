"""The session state machine, driven without an event loop or bytes.

Most tests wire two sessions through :class:`loopback.Loopback`; a few feed
one session hand-built messages and read what it sends back.
"""

from __future__ import annotations

import gc
from typing import Any, cast

import pytest
from _far_util import Counter
from loopback import Loopback

from captp import ConnectionLost, ProtocolError, RemoteError, Symbol, Tagged
from captp._eventual import E
from captp._far import far
from captp._promise import Promise, make_promise
from captp._refs import RemoteRef
from captp._vat import ManualVat
from captp.engine import Engine
from captp.errors import BrokenPromise
from captp.messages import Abort, Deliver, Desc, GcAnswers, GcExports, Get, Listen


@far
class Greeter:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.kept: list[Any] = []

    def hello(self, who: str) -> str:
        self.calls.append(who)
        return f"hello {who}"

    def make_counter(self, start: int = 0) -> Counter:
        return Counter(start)

    def fail(self, message: str) -> None:
        raise TypeError(message)

    def echo(self, *args: Any) -> list[Any]:
        return list(args)

    def keep(self, x: Any) -> bool:
        self.kept.append(x)
        return True

    def get_record(self) -> dict[str, Any]:
        return {"foo": "bar", "items": [10, 20]}

    def call_back(self, fn: Any, arg: Any) -> Any:
        return E(fn)(arg)

    def is_same(self, a: Any, b: Any) -> bool:
        return a is b


def run_with(lb: Loopback, fn: Any) -> Any:
    with lb.vat:
        result = fn()
    lb.run()
    return result


def test_call_returns_result() -> None:
    greeter = Greeter()
    lb = Loopback(bootstrap_b=greeter)
    p = run_with(lb, lambda: E(lb.a.bootstrap()).hello("bob"))
    assert p.result() == "hello bob"
    assert greeter.calls == ["bob"]


def test_eventual_send_never_runs_callee_in_callers_turn() -> None:
    greeter = Greeter()
    vat = ManualVat()
    with vat:
        p = E(greeter).hello("now?")
        assert greeter.calls == []  # not yet: it runs in a later turn
        assert not p.done()
    vat.run()
    assert greeter.calls == ["now?"]
    assert p.result() == "hello now?"


def test_request_carries_answer_position_and_resolver() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    run_with(lb, lambda: E(lb.a.bootstrap()).hello("x"))
    first = lb.sent("a")[0]
    assert isinstance(first, Deliver)
    assert first.target == Desc("export", 0)
    assert first.method == "hello" and first.args == ("x",)
    assert first.answer == 0
    assert first.resolver == Desc("import-object", 1, first=True)
    reply = lb.sent("b")[0]
    assert reply == Deliver(Desc("export", 1), "fulfill", ("hello x",))


def test_pipelining_sends_before_the_answer_arrives() -> None:
    lb = Loopback(bootstrap_b=Greeter())

    def go() -> tuple[Promise, Promise]:
        counter = E(lb.a.bootstrap()).make_counter(10)
        return E(counter).incr(), E(counter).incr()

    with lb.vat:
        p1, p2 = go()
    # Both pipelined sends left before anything came back.
    sent = list(lb.wire)
    assert all(isinstance(m, Deliver) for _, m in sent)
    targets = [m.target for _, m in sent if isinstance(m, Deliver)]
    assert targets == [Desc("export", 0), Desc("answer", 0), Desc("answer", 0)]
    lb.run()
    assert (p1.result(), p2.result()) == (11, 12)


def test_pipelined_messages_break_with_the_same_reason() -> None:
    lb = Loopback(bootstrap_b=Greeter())

    def go() -> list[Promise]:
        bad = E(lb.a.bootstrap()).fail("no counter for you")
        return [bad, E(bad).incr(), E(E(bad).incr()).incr()]

    promises = run_with(lb, go)
    reasons = [p.reason() for p in promises]
    assert all(isinstance(r, RemoteError) for r in reasons)
    assert {str(r) for r in reasons} == {"TypeError: no counter for you"}


def test_remote_exception_carries_type_name_and_message_only() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    p = run_with(lb, lambda: E(lb.a.bootstrap()).fail("boom"))
    with pytest.raises(RemoteError) as info:
        p.result()
    assert str(info.value) == "TypeError: boom"
    assert "Traceback" not in str(info.value)


def test_missing_method_breaks_with_type_error() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    p = run_with(lb, lambda: E(lb.a.bootstrap()).no_such_method())
    assert "has no method 'no_such_method'" in str(p.reason())
    assert str(p.reason()).startswith("TypeError: ")


def test_send_only_asks_for_nothing() -> None:
    greeter = Greeter()
    lb = Loopback(bootstrap_b=greeter)
    result = run_with(lb, lambda: E.send_only(lb.a.bootstrap()).hello("quiet"))
    assert result is None
    assert greeter.calls == ["quiet"]
    (msg,) = lb.sent("a")
    assert isinstance(msg, Deliver) and msg.answer is None and msg.resolver is None
    assert lb.sent("b") == []  # no reply of any kind


def test_same_object_same_position_same_proxy() -> None:
    greeter = Greeter()
    lb = Loopback(bootstrap_b=greeter)
    mine = Counter()

    def go() -> list[Promise]:
        boot = lb.a.bootstrap()
        return [E(boot).keep(mine), E(boot).keep(mine), E(boot).is_same(mine, mine)]

    promises = run_with(lb, go)
    assert [p.result() for p in promises] == [True, True, True]
    first, second = greeter.kept
    assert first is second and type(first) is RemoteRef
    positions = {
        m.args[0].position for m in lb.sent("a")
        if isinstance(m, Deliver) and m.method == "keep"
    }
    assert len(positions) == 1


def test_identity_survives_a_round_trip() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    mine = Counter()
    p = run_with(lb, lambda: E(lb.a.bootstrap()).echo(mine))
    assert p.result()[0] is mine  # our object came back as itself


def test_callback_into_an_object_the_peer_was_handed() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    seen = []

    @far
    def shout(word: str) -> str:
        seen.append(word)
        return word.upper()

    p = run_with(lb, lambda: E(lb.a.bootstrap()).call_back(shout, "hey"))
    assert p.result() == "HEY"
    assert seen == ["hey"]


def test_promise_passed_as_argument_and_resolved_later() -> None:
    greeter = Greeter()
    lb = Loopback(bootstrap_b=greeter)
    promise, resolver = make_promise()
    p = run_with(lb, lambda: E(lb.a.bootstrap()).keep(promise))
    assert p.result() is True
    (remote_promise,) = greeter.kept
    assert isinstance(remote_promise, Promise) and not remote_promise.done()
    with lb.vat:
        resolver.resolve({"late": Symbol("value")})
    lb.run()
    assert remote_promise.result() == {"late": Symbol("value")}


def test_promise_resolved_to_another_promise_settles_once() -> None:
    vat = ManualVat()
    outer, outer_r = make_promise()
    inner, inner_r = make_promise()
    seen: list[Any] = []
    with vat:
        outer.when_settled(lambda p: seen.append(p.outcome()[1]))
        outer_r.resolve(inner)
        assert not outer.done()
        inner_r.resolve(42)
        inner_r.resolve(43)  # ignored
        outer_r.break_("too late")  # ignored
    assert outer.result() == 42 and seen == [42]


def test_promise_cannot_resolve_to_itself() -> None:
    p, r = make_promise()
    r.resolve(p)
    assert isinstance(p.reason(), TypeError)


def test_sends_to_a_local_promise_queue_until_it_resolves() -> None:
    vat = ManualVat()
    counter = Counter()
    p, r = make_promise()
    with vat:
        a = E(p).incr()
        b = E(p).incr()
        vat.run()
        assert counter.n == 0
        r.resolve(counter)
    vat.run()
    assert (a.result(), b.result()) == (1, 2)


def test_broken_promise_with_data_reason_raises_broken_promise() -> None:
    p, r = make_promise()
    r.break_(Symbol("oh-no"))
    with pytest.raises(BrokenPromise) as info:
        p.result()
    assert info.value.reason == Symbol("oh-no")


def test_get_field_and_index_pipelined() -> None:
    lb = Loopback(bootstrap_b=Greeter())

    def go() -> tuple[Promise, Promise, Promise]:
        record = E(lb.a.bootstrap()).get_record()
        return E.get(record).foo, E.get(E.get(record).items)[1], E.get(record).missing

    foo, item, missing = run_with(lb, go)
    assert foo.result() == "bar"
    assert item.result() == 20
    assert isinstance(missing.reason(), RemoteError)
    gets = [m for m in lb.sent("a") if isinstance(m, Get)]
    assert [g.kind for g in gets] == ["get", "get", "index", "get"]


def test_untag() -> None:
    vat = ManualVat()
    with vat:
        assert E.untag(Tagged("copySet", [1, 2]), "copySet").result() == [1, 2]
        assert isinstance(E.untag(Tagged("other", 1), "copySet").reason(), ValueError)


def test_listen_reports_settlement_of_an_exported_promise() -> None:
    greeter = Greeter()
    lb = Loopback(bootstrap_b=greeter)
    promise, resolver = make_promise()
    run_with(lb, lambda: E(lb.a.bootstrap()).keep(promise))
    (remote_promise,) = greeter.kept
    listens = [m for m in lb.sent("b") if isinstance(m, Listen)]
    assert len(listens) == 1 and listens[0].target.kind == "export"
    with lb.vat:
        resolver.break_(Symbol("oh-no"))
    lb.run()
    assert remote_promise.reason() == Symbol("oh-no")  # forwarded verbatim


def test_answer_position_reuse_is_a_protocol_error() -> None:
    vat = ManualVat()
    out: list[Any] = []
    s = Engine(out.append, vat, bootstrap=Greeter(), name="s")
    resolver = s.import_object(7)
    boot = s.lookup_export(0)
    s.receive(Deliver(boot, "hello", ("a",), 3, resolver))
    with pytest.raises(ProtocolError, match="already in use"):
        s.receive(Deliver(boot, "hello", ("b",), 3, resolver))


def test_unknown_export_is_a_protocol_error() -> None:
    s = Engine(lambda m: None, ManualVat(), bootstrap=Greeter())
    with pytest.raises(ProtocolError, match="no export at position 99"):
        s.lookup_export(99)
    with pytest.raises(ProtocolError, match="no answer"):
        s.lookup_answer(5)


def test_fed_deliver_produces_fulfill_to_resolver() -> None:
    vat = ManualVat()
    out: list[Any] = []
    s = Engine(out.append, vat, bootstrap=Greeter(), name="s")
    resolver = s.import_object(4)
    with vat:
        s.receive(Deliver(s.lookup_export(0), "hello", ("fed",), 0, resolver))
    assert out == []  # the call runs in a later turn
    vat.run()
    assert out == [Deliver(resolver, "fulfill", ("hello fed",))]


def test_gc_exports_frees_after_all_sends_are_dropped() -> None:
    vat = ManualVat()
    s = Engine(lambda m: None, vat, bootstrap=Greeter())
    obj = Counter()
    d1 = s.describe(obj)
    d2 = s.describe(obj)
    assert d1 == Desc("import-object", 1, first=True) and d2 == Desc("import-object", 1)
    s.receive(GcExports((1,), (1,)))
    assert s.lookup_export(1) is obj  # one send is still outstanding
    s.receive(GcExports((1,), (1,)))
    with pytest.raises(ProtocolError):
        s.lookup_export(1)
    assert s.describe(obj) == Desc("import-object", 2, first=True)  # re-exported afresh


def test_gc_exports_with_inflated_delta_frees() -> None:
    s = Engine(lambda m: None, ManualVat())
    s.describe(Counter())
    s.receive(GcExports((1,), (21,)))
    assert s.stats()["exports"] == 0


def test_bad_gc_exports_are_protocol_errors() -> None:
    s = Engine(lambda m: None, ManualVat())
    with pytest.raises(ProtocolError):
        s.receive(GcExports((1, 2), (1,)))
    with pytest.raises(ProtocolError):
        s.receive(GcExports((1,), (0,)))


def test_dropping_an_import_sends_the_received_count() -> None:
    vat = ManualVat()
    out: list[Any] = []
    s = Engine(out.append, vat)
    ref = s.import_object(5)
    assert s.import_object(5) is ref
    assert s.import_object(5) is ref
    del ref
    gc.collect()
    vat.run()
    assert out == [GcExports((5,), (3,))]
    assert s.stats()["imports"] == 0


def test_reimport_after_drop_before_flush_keeps_the_entry() -> None:
    vat = ManualVat()
    out: list[Any] = []
    s = Engine(out.append, vat)
    s.import_object(5)  # arrives once, dropped at once
    gc.collect()
    again = s.import_object(5)  # arrives again before the gc message went out
    vat.run()
    assert out == [GcExports((5,), (1,))]
    assert s.import_object(5) is again and s.stats()["imports"] == 1


def test_settled_questions_release_their_answers() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    promises = run_with(lb, lambda: [E(lb.a.bootstrap()).hello(str(i)) for i in range(5)])
    assert [p.result() for p in promises] == [f"hello {i}" for i in range(5)]
    released = [m for m in lb.sent("a") if isinstance(m, GcAnswers)]
    assert sorted(cast(int, p) for m in released for p in m.positions) == [0, 1, 2, 3, 4]
    assert lb.b.stats()["answers"] == 0
    assert lb.a.stats()["questions"] == 0


def test_tables_return_to_baseline_after_many_objects() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    baseline_a, baseline_b = lb.a.stats(), lb.b.stats()

    def go() -> list[Promise]:
        boot = lb.a.bootstrap()
        return [E(boot).echo(Counter(), [Counter()]) for _ in range(2000)]

    promises = run_with(lb, go)
    assert all(type(p.result()[0]) is Counter for p in promises)
    del promises
    gc.collect()
    lb.run()
    assert lb.a.stats() == {**baseline_a, "imports": 1}  # the bootstrap proxy we hold
    assert lb.b.stats() == baseline_b


def test_abort_breaks_everything_and_later_sends_fail_at_once() -> None:
    lb = Loopback(bootstrap_b=Greeter())
    with lb.vat:
        boot = lb.a.bootstrap()
        pending = E(boot).hello("never answered")
        lb.a.abort("shutting down")
    assert isinstance(lb.wire[-1][1], Abort)
    assert isinstance(pending.reason(), ConnectionLost)
    assert "shutting down" in str(pending.reason())
    later = E(boot).hello("after")
    assert isinstance(later.reason(), ConnectionLost)
    lb.run()
    assert lb.b.dead is not None and "peer aborted: shutting down" in lb.b.dead.reason


def test_connection_lost_breaks_imported_promises() -> None:
    greeter = Greeter()
    lb = Loopback(bootstrap_b=greeter)
    promise, _ = make_promise()
    run_with(lb, lambda: E(lb.a.bootstrap()).keep(promise))
    (remote,) = greeter.kept
    lb.b.connection_lost("cable cut")
    assert isinstance(remote.reason(), ConnectionLost) and "cable cut" in str(remote.reason())


def test_unpassable_argument_breaks_the_question_and_sends_nothing() -> None:
    lb = Loopback(bootstrap_b=Greeter())

    class NotFar:
        pass

    p = run_with(lb, lambda: E(lb.a.bootstrap()).echo(NotFar()))
    assert isinstance(p.reason(), TypeError)
    assert "not passable" in str(p.reason())
    assert lb.a.stats()["questions"] == 0


def test_unpassable_result_breaks_with_the_reason() -> None:
    @far
    class Leaky:
        def give(self) -> object:
            return object()

    lb = Loopback(bootstrap_b=Leaky())
    p = run_with(lb, lambda: E(lb.a.bootstrap()).give())
    assert "not passable" in str(p.reason())


def test_far_method_name_mapping() -> None:
    @far
    class Thing:
        def make_car(self) -> str:
            return "car"

        def break_(self, reason: str) -> str:
            return f"broke: {reason}"

        def _secret(self) -> str:
            return "leak"

    vat = ManualVat()
    t = Thing()
    with vat:
        a = E(t)["make-car"]()
        b = E(t).break_("x")
        c = E(t)["_secret"]()
        d = E(t)["mro"]()
    vat.run()
    assert a.result() == "car"
    assert b.result() == "broke: x"
    assert isinstance(c.reason(), TypeError) and isinstance(d.reason(), TypeError)


def test_sending_to_plain_data_breaks() -> None:
    assert isinstance(E(42).foo().reason(), TypeError)


def test_an_import_cannot_change_between_object_and_promise() -> None:
    s = Engine(lambda m: None, ManualVat())
    kept = s.import_promise(3)
    with pytest.raises(ProtocolError, match="import 3 was sent as a promise and is now sent as an"):
        s.import_object(3)
    ref = s.import_object(4)
    with pytest.raises(ProtocolError, match="import 4 was sent as an object and is now sent as a"):
        s.import_promise(4)
    assert kept is s.import_promise(3) and ref is s.import_object(4)


def _fed(bootstrap: Any) -> tuple[ManualVat, list[Any], Engine, Any]:
    """A session fed by hand: its vat, what it sends, itself, and a resolver the peer gave it."""
    vat = ManualVat()
    out: list[Any] = []
    s = Engine(out.append, vat, bootstrap=bootstrap, name="s")
    return vat, out, s, s.import_object(4)


def _promises() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Promise)


def test_a_call_answered_at_once_makes_no_promise() -> None:
    # The peer hears the result at once; the answer becomes a promise only
    # when the peer names it afterwards, and then it is the same one each time.
    vat, out, s, resolver = _fed(Greeter())
    gc.collect()
    before = _promises()
    with vat:
        s.receive(Deliver(s.lookup_export(0), "hello", ("fed",), 0, resolver))
    vat.run()
    assert out == [Deliver(resolver, "fulfill", ("hello fed",))]
    assert _promises() == before
    answer = s.lookup_answer(0)
    assert answer.done() and answer.result() == "hello fed"
    assert s.lookup_answer(0) is answer


def test_an_answer_named_before_its_call_runs_follows_the_call() -> None:
    # A message in the same read pipelines on the answer before the call has
    # run: it waits for the result, and the resolver still hears first.
    vat, out, s, resolver = _fed(Greeter())
    with vat:
        s.receive(Deliver(s.lookup_export(0), "make_counter", (5,), 0, resolver))
        s.receive(Deliver(s.lookup_answer(0), "incr", (), 1, resolver))
    vat.run()
    assert [m.method for m in out] == ["fulfill", "fulfill"]
    assert isinstance(out[0].args[0], Counter) and out[1].args == (6,)


def test_a_failed_call_breaks_its_answer_and_tells_the_resolver() -> None:
    vat, out, s, resolver = _fed(Greeter())
    with vat:
        s.receive(Deliver(s.lookup_export(0), "fail", ("no",), 0, resolver))
    vat.run()
    [told] = out
    assert told.method == "break" and isinstance(told.args[0], TypeError)
    answer = s.lookup_answer(0)
    assert answer.is_broken() and isinstance(answer.reason(), TypeError)


def test_a_call_that_returns_a_promise_answers_when_it_settles() -> None:
    promise, settle = make_promise()

    @far
    class Later:
        def value(self) -> Promise:
            return promise

    vat, out, s, resolver = _fed(Later())
    with vat:
        s.receive(Deliver(s.lookup_export(0), "value", (), 0, resolver))
    vat.run()
    assert out == [] and not s.lookup_answer(0).done()
    settle.resolve(42)
    vat.run()
    assert out == [Deliver(resolver, "fulfill", (42,))]
    assert s.lookup_answer(0).result() == 42


def test_a_driven_engine_runs_the_peers_calls_when_the_driver_says() -> None:
    vat = ManualVat()
    out: list[Any] = []
    greeter = Greeter()
    s = Engine(out.append, vat, bootstrap=greeter, driven=True)
    resolver = s.import_object(4)
    boot = s.lookup_export(0)
    with vat:
        s.receive(Deliver(boot, "hello", ("one",), 0, resolver))
        s.receive(Deliver(boot, "hello", ("two",), 1, resolver))
    vat.run()
    assert greeter.calls == [] and out == []  # no turn of their own: the driver runs them
    s.run_local_calls()
    assert greeter.calls == ["one", "two"]  # in the order they arrived
    assert out == [
        Deliver(resolver, "fulfill", ("hello one",)),
        Deliver(resolver, "fulfill", ("hello two",)),
    ]


def _asked() -> tuple[ManualVat, list[Any], Engine, Promise, Any]:
    """A session that has asked one question of an import: its promise, and the resolver
    the peer got (what the session sent, so the peer's messages can name it)."""
    vat, out, s, target = _fed(None)
    with vat:
        promise = s.send_deliver(target, "go", ())
    assert promise is not None and s.questions_waiting == 1
    (sent,) = out
    out.clear()
    return vat, out, s, promise, sent.resolver


def test_a_question_resolved_with_a_promise_is_released_and_follows_it() -> None:
    vat, out, s, promise, resolver = _asked()
    later, settle = make_promise()
    with vat:
        s.receive(Deliver(resolver, "resolve", (later,)))
    # The peer has answered: it may forget the answer now, not when `later` settles.
    assert s.questions_waiting == 0 and not promise.done()
    s.flush_gc()
    assert [m for m in out if type(m) is GcAnswers] == [GcAnswers((0,))]
    settle.resolve(5)
    assert promise.result() == 5
    with vat:
        s.receive(Deliver(resolver, "fulfill", (6,)))  # only the first settlement counts
    assert promise.result() == 5 and s.questions_waiting == 0


def test_a_peer_may_call_a_questions_resolver_as_any_far_object() -> None:
    # Not the quick path (it asks for an answer): the resolver's methods run in a turn.
    for method, args, outcome in [("fulfill", (7,), (True, 7)), ("break", ("no",), (False, "no"))]:
        vat, _out, s, promise, resolver = _asked()
        with vat:
            s.receive(Deliver(resolver, method, args, 3))
        assert not promise.done()
        vat.run()
        assert promise.outcome() == outcome and s.questions_waiting == 0
        assert s.lookup_answer(3).result() is None
