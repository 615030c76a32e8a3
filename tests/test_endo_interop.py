"""Interop with the published JavaScript reference: real Node processes over real TCP.

Both directions: a Python client against ``interop/js/server.mjs``, and
``interop/js/client.mjs`` driving a Python server (in this process, or
``python -m interop.endo_peer``).  Node runs under full ``@endo/init``
lockdown with ``gcImports: true`` and ``--expose-gc``.
"""

from __future__ import annotations

import gc
import json
import math
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from endo_node import (
    JS_DIR,
    NODE,
    client_command,
    failed_steps,
    node_server,
    parse_client_output,
    python_peer,
    requires_node,
)

from captp import (
    ConnectionLost,
    E,
    EncodeError,
    Promise,
    RemoteError,
    RemoteRef,
    Symbol,
    Tagged,
    current_vat,
    far,
    make_promise,
    null,
    same_value,
)
from captp.endo import EndoConnection, QuestionTimeout
from captp.endo._json import js_number
from interop.endo_peer import Counter, PeerBootstrap
from netlayers.endo_tcp import connect_tcp, serve_tcp

pytestmark = [requires_node, pytest.mark.interop]


# == helpers ===========================================================================


class Trace:
    """Every CTP message a connection sent and received, as JSON text."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, str]] = []

    def __call__(self, direction: str, text: str) -> None:
        self.frames.append((direction, text))

    def messages(self, direction: str, kind: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(t) for d, t in self.frames if d == direction]
        return [m for m in found if kind is None or m["type"] == kind]

    def texts(self, direction: str, kind: str) -> list[str]:
        return [t for d, t in self.frames if d == direction and json.loads(t)["type"] == kind]


async def eventually(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait until ``check()`` holds (polling); fail with ``what`` otherwise."""
    with anyio.move_on_after(seconds):
        while not check():
            await anyio.sleep(0.02)
    assert check(), f"timed out waiting for {what}"


@pytest.fixture(scope="module")
def js_port() -> Iterator[int]:
    with node_server("--gc-imports") as server:
        yield server.port


@asynccontextmanager
async def connected(
    port: int, trace: Trace | None = None, **kwargs: Any
) -> AsyncIterator[tuple[EndoConnection, RemoteRef]]:
    async with connect_tcp("127.0.0.1", port, trace=trace, **kwargs) as conn:
        yield conn, await conn.bootstrap()


@far
class Greeter:
    def hello(self, who: str) -> str:
        return f"hello {who}"


# == Python calls JS ===================================================================


@pytest.mark.anyio
async def test_bootstrap_then_call(js_port: int) -> None:
    trace = Trace()
    async with connected(js_port, trace) as (conn, boot):
        assert type(boot) is RemoteRef and boot.iface == "Alleged: Bootstrap"
        assert await E(boot).ping() == "pong"
        assert await conn.bootstrap() is boot  # asked once, kept
    sent = [m["type"] for m in trace.messages("send")]
    assert sent[:2] == ["CTP_BOOTSTRAP", "CTP_CALL"]
    assert trace.messages("send", "CTP_CALL")[0]["target"] == "o-1"  # not q-1


@pytest.mark.anyio
async def test_pipelining_on_the_bootstrap_question_is_refused(js_port: int) -> None:
    async with connected(js_port) as (conn, _):
        early = E(conn.engine.bootstrap()).ping()  # would target the pending q-N
        with pytest.raises(EncodeError, match="pipeline on the pending Endo bootstrap"):
            await early


ROUND_TRIP: list[tuple[str, Any, Any]] = [
    ("undefined", None, None),
    ("null", null, null),
    ("true", True, True),
    ("false", False, False),
    ("number", 42.0, 42.0),
    ("negative float", -1.5, -1.5),
    ("negative zero", -0.0, 0.0),  # marshal sends -0 as 0
    ("NaN", math.nan, math.nan),
    ("Infinity", math.inf, math.inf),
    ("-Infinity", -math.inf, -math.inf),
    ("2**53", 2.0**53, 2.0**53),
    ("denormal", 5e-324, 5e-324),
    ("huge", -1.5e300, -1.5e300),
    ("1e-7", 1e-7, 1e-7),
    ("1e21", 1e21, 1e21),
    ("0.1", 0.1, 0.1),
    ("bigint", 12345678901234567890, 12345678901234567890),
    ("negative bigint", -7, -7),
    ("zero bigint", 0, 0),
    ("huge bigint", -(2**200), -(2**200)),
    ("unicode", "h\u00e9llo \u2713 \U0001f600", "h\u00e9llo \u2713 \U0001f600"),
    ("empty string", "", ""),
    ("smallcaps-special string", "#hash $dollar &amp !bang", "#hash $dollar &amp !bang"),
    ("control characters", '\x00\x1f"\\/\u2028\u2029\x7f\t\n', '\x00\x1f"\\/\u2028\u2029\x7f\t\n'),
    ("lone surrogate", "\ud800", "\ud800"),
    ("lone low surrogate", "x\udc00y", "x\udc00y"),
    ("symbol", Symbol("foo"), Symbol("foo")),
    ("well-known symbol", Symbol("@@asyncIterator"), Symbol("@@asyncIterator")),
    ("registered @@ symbol", Symbol("@@@@x"), Symbol("@@@@x")),
    ("list", [1.0, "a", null, [True]], [1.0, "a", null, [True]]),
    ("tuple", (1.0, "b"), [1.0, "b"]),
    ("empty list", [], []),
    ("record", {"z": 1.0, "a": "x", "m": [True, null]}, {"a": "x", "m": [True, null], "z": 1.0}),
    ("empty record", {}, {}),
    ("hilbert record", {"@qclass": "x", "y": 1.0}, {"@qclass": "x", "y": 1.0}),
    ("hilbert only", {"@qclass": "only"}, {"@qclass": "only"}),
    ("hilbert nested", {"@qclass": {"@qclass": "deep"}, "r": 1.0},
     {"@qclass": {"@qclass": "deep"}, "r": 1.0}),
    ("astral keys", {"\U0001f600": 1.0, "\uffff": 2.0}, {"\U0001f600": 1.0, "\uffff": 2.0}),
    ("special keys", {"#k": 1.0, "!k": 2.0, "": 3.0}, {"#k": 1.0, "!k": 2.0, "": 3.0}),
    ("tagged", Tagged("copySet", ["a", "b"]), Tagged("copySet", ["a", "b"])),
    ("tagged with odd tag", Tagged("#weird", null), Tagged("#weird", null)),
    ("TypeError", TypeError("bad type"), RemoteError("bad type", "TypeError")),
    ("Exception", Exception("plain"), RemoteError("plain", "Error")),
    ("ValueError", ValueError("v"), RemoteError("ValueError: v", "Error")),
    ("remote error", RemoteError("r", "RangeError"), RemoteError("r", "RangeError")),
    ("nested", {"list": [{"deep": [1, None, null, {"e": TypeError("inner")}]}]},
     {"list": [{"deep": [1, None, null, {"e": RemoteError("inner", "TypeError")}]}]}),
]


@pytest.mark.anyio
async def test_every_passable_round_trips_through_js(js_port: int) -> None:
    async with connected(js_port) as (_, boot):
        for name, sent, expected in ROUND_TRIP:
            got = await E(boot).echo(sent)
            assert same_value(got, [expected]), f"{name}: sent {sent!r}, got back {got!r}"
        got = await E(boot).echo(*[sent for _, sent, _ in ROUND_TRIP])
        assert same_value(got, [expected for _, _, expected in ROUND_TRIP])


@pytest.mark.anyio
async def test_js_values_decode_to_python(js_port: int) -> None:
    async with connected(js_port) as (_, boot):
        types = await E(boot).types()
    expected = {
        "@qclass": "hilbert", "arr": [1.0, 1.5, "two", null, True],
        "big": 12345678901234567890, "negBig": -7, "inf": math.inf, "ninf": -math.inf,
        "nan": math.nan, "negZero": 0.0, "undef": None, "sym": Symbol("foo"),
        "wellKnown": Symbol("@@asyncIterator"), "tagged": Tagged("copySet", ["a", "b"]),
        "err": RemoteError("nested error", "RangeError"),
        "special": "#hash $dollar &amp !bang", "lone": "\ud800",
        "astral": {"\U0001f600": 1.0, "\uffff": 2.0},
    }
    assert same_value(types, expected), types
    assert str(types["err"]) == "RangeError: nested error"


@pytest.mark.anyio
async def test_pipelined_calls(js_port: int) -> None:
    trace = Trace()
    async with connected(js_port, trace) as (_, boot):
        counter = E(boot).makeCounter(10.0)
        first, second = E(counter).incr(), E(counter).incr()
        assert (await first, await second) == (11.0, 12.0)
        assert await E.get(E(boot).getRecord()).foo == "bar"
        assert await E(E(boot).makeAdder())(1.0, 2.0) == 3.0
    calls = trace.messages("send", "CTP_CALL")
    make = next(c for c in calls if '"makeCounter"' in c["method"]["body"])
    pipelined = [c for c in calls if c["target"] == make["questionID"]]
    assert len(pipelined) == 2
    # Both went out before the answer to makeCounter came back.
    order = [(d, json.loads(t)) for d, t in trace.frames]
    answer_at = next(i for i, (d, m) in enumerate(order)
                     if d == "recv" and m.get("answerID") == make["questionID"])
    sent_at = [i for i, (d, m) in enumerate(order) if d == "send" and m in pipelined]
    assert max(sent_at) < answer_at


@pytest.mark.anyio
async def test_remotables_and_callbacks(js_port: int) -> None:
    async with connected(js_port) as (_, boot):
        calls: list[float] = []

        @far
        def double(x: float) -> float:
            calls.append(x)
            return x * 2

        assert await E(boot).callMe(double, 21.0) == 42.0
        assert calls == [21.0]
        assert await E(boot).callMethod(Greeter(), "hello", "js") == "hello js"
        mine = Counter()
        assert (await E(boot).echo(mine))[0] is mine  # our object comes back as itself
        assert await E(boot).sameAs(mine, mine) is True
        theirs = await E(boot).makeCounter()
        assert (await E(boot).echo(theirs))[0] is theirs
        assert await E(theirs).incr() == 1.0


@pytest.mark.anyio
async def test_promises_passed_as_arguments_and_resolved_later(js_port: int) -> None:
    trace = Trace()
    async with connected(js_port, trace) as (_, boot):
        promise, resolver = make_promise()
        result = E(boot).awaitArg(promise)
        await anyio.sleep(0.05)
        assert not result.done()
        resolver.resolve({"late": [1, Symbol("s")]})
        assert same_value(await result, ["got", {"late": [1, Symbol("s")]}])

        promise, resolver = make_promise()
        result = E(boot).awaitArg(promise)
        await anyio.sleep(0.05)
        resolver.break_(ValueError("late"))
        with pytest.raises(RemoteError) as info:
            await result
        assert str(info.value) == "Error: ValueError: late"

        deferred = await E(boot).makeDeferred()
        assert isinstance(deferred["promise"], Promise)
        await E(deferred["resolver"]).resolve({"x": 1})
        assert await deferred["promise"] == {"x": 1}
        deferred = await E(boot).makeDeferred()
        await E(deferred["resolver"]).reject("nope")
        with pytest.raises(RemoteError, match="nope"):
            await deferred["promise"]

        # An unanswered question passed as an argument goes out as a fresh
        # promise (p+N) and is resolved later, never as q-N in slots.
        [counter] = await E(boot).echo(E(boot).makeCounter(5.0))
        assert await E(counter).incr() == 6.0
    for m in trace.messages("send", "CTP_CALL"):
        assert not any(s.startswith("q") for s in m["method"]["slots"]), m
    assert trace.messages("send", "CTP_RESOLVE")


@pytest.mark.anyio
async def test_exceptions_both_ways(js_port: int) -> None:
    async with connected(js_port) as (_, boot):
        with pytest.raises(RemoteError) as info:
            await E(boot).fail("boom", "TypeError")
        assert str(info.value) == "TypeError: boom"
        assert (info.value.remote_name, info.value.remote_message) == ("TypeError", "boom")
        with pytest.raises(RemoteError, match=r'^TypeError: target has no method "noSuchMethod"'):
            await E(boot).noSuchMethod()

        @far
        def explode() -> None:
            raise KeyError("missing")

        with pytest.raises(RemoteError) as info:
            await E(boot).callMe(explode)
        assert str(info.value) == "Error: KeyError: 'missing'"

        @far
        def mistyped() -> None:
            raise TypeError("typed")

        with pytest.raises(RemoteError) as info:
            await E(boot).callMe(mistyped)
        assert str(info.value) == "TypeError: typed"


@pytest.mark.anyio
async def test_js_drops_python_exports_which_are_freed(js_port: int) -> None:
    trace = Trace()
    async with connected(js_port, trace) as (conn, boot):
        objects = [Counter() for _ in range(10)]
        for obj in objects:
            await E(boot).hold(obj)
        for _ in range(3):  # JS asks us questions too: answers to free
            assert await E(boot).callMe(far(lambda: "called")) == "called"
        assert conn.stats()["exports"] >= 10
        assert await E(boot).release() is True
        await E(boot).gc()
        await eventually(lambda: conn.stats()["exports"] == 0, "JS to drop every export")
        await eventually(lambda: conn.stats()["answers"] == 0, "JS to drop its questions")
        drops = {m["slotID"] for m in trace.messages("recv", "CTP_DROP")}
        assert {f"o-{n}" for n in range(1, 11)} <= drops

        # A freed object sent again gets a fresh slot that works.
        assert await E(boot).callMethod(objects[0], "incr") == 1.0
    last = [m for m in trace.messages("send", "CTP_CALL") if '"callMethod"' in m["method"]["body"]]
    assert last[-1]["method"]["slots"] == ["o+14"]


@pytest.mark.anyio
async def test_python_drops_js_imports_with_the_true_count(js_port: int) -> None:
    trace = Trace()
    async with connected(js_port, trace, question_timeout=0.5) as (_, boot):
        dropped_before = (await E(boot).stats())["gc"]["DROPPED"]
        refs = [await E(boot).getSingleton() for _ in range(3)]
        assert refs[0] is refs[1] is refs[2]
        assert await E(refs[0]).hi() == "hi from the singleton"
        slot = refs[0].position
        del refs
        gc.collect()
        await eventually(lambda: trace.texts("send", "CTP_DROP") != [], "our CTP_DROP")
        assert trace.texts("send", "CTP_DROP") == [
            f'{{"type":"CTP_DROP","slotID":"{slot}","decRefs":3,"epoch":0}}'
        ]
        stats = await E(boot).stats()
        assert stats["gc"]["DROPPED"] == dropped_before + 1  # JS freed its export

        # The JS trap (E2): JS sends the freed object again under its old
        # slot without registering it; a call to it is dropped silently.  The
        # question timeout turns the hang into a clear error.
        again = await E(boot).getSingleton()
        with pytest.raises(QuestionTimeout, match="no answer to question q-"):
            await E(again).hi()
        assert await E(boot).ping() == "pong"  # the session is fine


@pytest.mark.anyio
async def test_question_timeout_when_js_ignores_a_call(js_port: int) -> None:
    async with connected(js_port, question_timeout=0.3) as (conn, boot):
        bogus = conn.engine.import_object("o-99")  # JS never exported o+99
        with pytest.raises(QuestionTimeout) as info:
            await E(bogus).ping()
        assert isinstance(info.value, TimeoutError)
        assert conn.stats()["questions"] == 0
        assert await E(boot).ping() == "pong"


@pytest.mark.anyio
async def test_python_disconnect_breaks_pending_promises_on_both_sides(js_port: int) -> None:
    async with connected(js_port) as (conn, boot):
        pending = E(boot).never()
        hang_promise, _ = make_promise()
        assert await E(boot).holdCall(far(lambda: hang_promise)) is True
        conn.abort("py says bye")
        with pytest.raises(ConnectionLost, match="py says bye"):
            await pending
        with pytest.raises(ConnectionLost):
            await E(boot).ping()
    async with connected(js_port) as (_, boot):
        await anyio.sleep(0.05)
        events = await E(boot).events()
    held = [e for e in events if "holdCall" in e]
    assert held and held[-1]["holdCall"] == "rejected"
    assert held[-1]["reason"] == '{"message":"py says bye"}'


@pytest.mark.anyio
async def test_js_disconnect_breaks_pending_promises(js_port: int) -> None:
    trace = Trace()
    async with connected(js_port, trace) as (conn, boot):
        pending = E(boot).never()
        assert await E(boot).abortSoon("bye") is True
        with pytest.raises(ConnectionLost, match="peer aborted"):
            await pending
        with pytest.raises(ConnectionLost):
            await E(boot).ping()
        await conn.wait_closed()
    # JS aborts with Error("bye"): plain JSON.stringify makes that {}.  We echo
    # the disconnect back, as JS does.
    disconnect = '{"type":"CTP_DISCONNECT","epoch":0,"reason":{}}'
    assert trace.texts("recv", "CTP_DISCONNECT") == [disconnect]
    assert trace.texts("send", "CTP_DISCONNECT") == [disconnect]


@pytest.mark.anyio
async def test_peer_process_dying_breaks_pending_promises() -> None:
    with node_server() as server:
        async with connected(server.port) as (conn, boot):
            pending = E(boot).never()
            assert await E(boot).ping() == "pong"
            server.proc.kill()
            with pytest.raises(ConnectionLost, match="peer closed the connection"):
                await pending
            assert conn.closed


@pytest.mark.anyio
async def test_number_formatting_matches_v8() -> None:
    """js_number agrees with Node's String(x) for awkward and random doubles."""
    import random

    rng = random.Random(4)
    values = [0.1, 1e21, 1e-7, 2.0**53, -1.5e300, 5e-324, 100.0, 1e16, 1.5e-5, 1e20,
              9.999999999999999e20, 1e-6, 123456789012345678000.0, 1.7976931348623157e308]
    values += [
        struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(3000)
    ]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-25, 25) for _ in range(3000)]
    values = [v for v in values if math.isfinite(v)]
    hexes = json.dumps([struct.pack("<d", v).hex() for v in values])
    script = (
        "const h=JSON.parse(require('fs').readFileSync(0,'utf8'));"
        "process.stdout.write(JSON.stringify(h.map(x=>String(Buffer.from(x,'hex').readDoubleLE(0)))))"
    )
    assert NODE is not None
    result = await anyio.run_process([NODE, "-e", script], input=hexes.encode())
    assert json.loads(result.stdout) == [js_number(v) for v in values]


# == JS calls Python ===================================================================


@far
class Singleton:
    def hi(self) -> str:
        return "hi from Python"


@far(name="Bootstrap")
class FullBootstrap(PeerBootstrap):
    """What client.mjs's "full" script needs beyond interop.endo_peer's bootstrap."""

    def __init__(self, conn: EndoConnection) -> None:
        super().__init__()
        self.conn = conn
        self.singleton = Singleton()
        self.held: list[Promise] = []

    def failWith(self, kind: str, message: str) -> None:
        raise {"ValueError": ValueError, "KeyError": KeyError}[kind](message)

    def exportCount(self) -> float:
        return float(self.conn.stats()["exports"])

    def answerCount(self) -> float:
        return float(self.conn.stats()["answers"])

    def getSingleton(self) -> Singleton:
        return self.singleton

    def singletonExported(self) -> bool:
        return id(self.singleton) in self.conn.engine._export_ids

    def holdCall(self, fn: Any) -> bool:
        self.held.append(E(fn)())
        return True

    def abortSoon(self, reason: str) -> bool:
        async def later() -> None:
            await anyio.sleep(0.02)
            self.conn.abort(reason)

        current_vat().spawn(later)
        return True


async def run_client(port: int, script: str, *extra: str) -> dict[str, dict[str, Any]]:
    with anyio.fail_after(90):
        result = await anyio.run_process(
            client_command(port, script, *extra), check=False, stderr=subprocess.STDOUT
        )
    results = parse_client_output(result.stdout)
    assert "done" in results, result.stdout.decode("utf-8", "replace")[-3000:]
    return results


BASIC_STEPS = {
    "bootstrap", "ping", "echo:all", "pipeline", "pipelineGet", "functionCall", "callback",
    "callbackMethod", "identityOfJsObject", "identityOfPythonObject", "promiseArgResolvedLater",
    "promiseArgRejectedLater", "promiseResultResolvedLater", "promiseResultRejectedLater",
    "unresolvedResultPassedBack", "exception", "noSuchMethod",
}


@pytest.mark.anyio
async def test_js_client_drives_python_server() -> None:
    trace = Trace()
    boots: list[FullBootstrap] = []

    def make_bootstrap(conn: EndoConnection) -> FullBootstrap:
        boots.append(FullBootstrap(conn))
        return boots[-1]

    async with serve_tcp(make_bootstrap, trace=trace) as server:
        results = await run_client(server.port, "full", "--gc-imports")
        await eventually(lambda: not server.connections, "the connection to close")
    assert not failed_steps(results), failed_steps(results)
    expected = BASIC_STEPS | {
        "pythonErrorName", "jsDropsPythonExports", "jsDropsQuestionsPythonFreesAnswers",
        "pythonReexportsAfterDrop", "disconnectBreaksPending",
    }
    assert expected <= set(results)
    assert len([s for s in results if s.startswith("echo:")]) >= 40
    # JS aborted while our call to its function was pending: it broke.
    (boot,) = boots
    assert len(boot.held) == 1
    with pytest.raises(ConnectionLost, match="peer aborted"):
        await boot.held[0]
    assert trace.messages("recv", "CTP_DROP")


@pytest.mark.anyio
async def test_python_server_disconnect_breaks_js_promises() -> None:
    async with serve_tcp(FullBootstrap) as server:
        results = await run_client(server.port, "pyabort")
    assert not failed_steps(results), failed_steps(results)
    assert "pythonDisconnectBreaksPending" in results


def test_endo_peer_serves_the_node_client() -> None:
    with python_peer() as (port, proc):
        assert port > 0 and proc.poll() is None
        assert NODE is not None
        result = subprocess.run(
            client_command(port, "basic"), capture_output=True, timeout=90, cwd=JS_DIR,
        )
        assert proc.poll() is None  # still serving after the client left
    results = parse_client_output(result.stdout)
    assert "done" in results, result.stdout.decode("utf-8", "replace")[-3000:]
    assert not failed_steps(results), failed_steps(results)
    assert set(results) >= BASIC_STEPS
