"""captp.confine under asyncio, uvloop and trio: harden, caretaker, membrane, attenuate,
interface guards, policy files, and compartments driven from each backend."""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from captp import E, PassStyleError, RemoteError, Symbol, check_passable, far, open_vat
from captp.confine import (
    LAYERS,
    Compartment,
    ConfinementError,
    FrozenDict,
    GuardError,
    GuestError,
    Invocation,
    LimitExceeded,
    Limits,
    Loop,
    M,
    Policy,
    PolicyError,
    Revoked,
    attenuate,
    caretaker,
    guard,
    guarded,
    harden,
    is_hardened,
    membrane,
    probe,
)
from captp.confine._policy import Start
from netlayers import connect_pair

pytestmark = pytest.mark.anyio

CONFINED = all(layer.ok for layer in probe().values())
needs_kernel = pytest.mark.skipif(
    not CONFINED,
    reason=f"kernel layers missing: {[n for n, x in probe().items() if not x.ok]}",
)


@far
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self, by: int = 1) -> int:
        self.n += by
        return self.n

    def reset(self) -> None:
        self.n = 0

    def make_child(self) -> Counter:
        return Counter()

    def poke(self, other: Any) -> Any:
        return E(other).incr()


# == harden =========================================================================


def test_harden_returns_a_deep_frozen_copy() -> None:
    data: dict[str, Any] = {"model": "mini", "stop": ["\n", "."], "opts": {"n": 1}}
    frozen = harden(data)
    assert frozen == {"model": "mini", "stop": ("\n", "."), "opts": {"n": 1}}
    assert type(frozen) is FrozenDict and type(frozen["stop"]) is tuple
    assert is_hardened(frozen) and not is_hardened(data)
    with pytest.raises(TypeError, match="cannot be changed"):
        frozen["model"] = "big"
    with pytest.raises(TypeError):
        frozen["opts"].update(n=2)
    data["stop"].append("!")  # the original stays the caller's
    assert frozen["stop"] == ("\n", ".")
    assert check_passable(frozen) == "struct"


def test_harden_passes_references_and_refuses_the_unpassable() -> None:
    counter = Counter()
    assert harden([counter])[0] is counter
    with pytest.raises(PassStyleError):
        harden({"f": object()})


def test_harden_is_not_a_boundary() -> None:
    frozen = harden({"k": 1})
    dict.__setitem__(frozen, "k", 2)  # documented: integrity against accidents only
    assert frozen["k"] == 2


async def test_hardened_data_travels_as_the_same_value() -> None:
    @far
    class Echo:
        def echo(self, value: Any) -> Any:
            return value

    async with connect_pair(bootstrap_b=Echo()) as (a, _b):
        echo = await a.bootstrap()
        assert await E(echo).echo(harden({"a": [1, {"b": b"x"}]})) == {"a": [1, {"b": b"x"}]}


# == caretaker, attenuate, membrane ====================================================


async def test_caretaker_forwards_until_revoked() -> None:
    counter = Counter()
    async with open_vat():
        proxy, revoke = caretaker(counter)
        assert await E(proxy).incr(2) == 2
        revoke()
        with pytest.raises(Revoked, match="revoked"):
            await E(proxy).incr()
    assert counter.n == 2


async def test_caretaker_across_a_session() -> None:
    counter = Counter()
    proxy, revoke = caretaker(counter)
    async with connect_pair(bootstrap_b=proxy) as (a, _b):
        remote = await a.bootstrap()
        assert await E(remote).incr(5) == 5
        with pytest.raises(RemoteError, match="TypeError: Counter has no method '_secret'"):
            await E(remote)["_secret"]()
        revoke()
        with pytest.raises(RemoteError, match=r"^Revoked: caretaker of Counter: capability"):
            await E(remote).incr()
    assert counter.n == 5


async def test_attenuate_exposes_only_the_named_methods() -> None:
    counter = Counter()
    async with connect_pair(bootstrap_b=attenuate(counter, ["incr"])) as (a, _b):
        remote = await a.bootstrap()
        assert await E(remote).incr() == 1
        with pytest.raises(RemoteError, match="does not expose method 'reset'"):
            await E(remote).reset()
        with pytest.raises(RemoteError, match="does not expose a call"):
            await E(remote)()
    assert counter.n == 1


async def test_membrane_sees_every_call_and_wraps_references() -> None:
    root = Counter()
    seen: list[Invocation] = []
    proxy, revoke = membrane(root, seen.append)
    async with connect_pair(bootstrap_b=proxy) as (a, _b):
        remote = await a.bootstrap()
        assert await E(remote).incr(3) == 3
        child = await E(remote).make_child()  # a reference out through the membrane
        assert await E(child).incr() == 1
        with pytest.raises(RemoteError, match="has no method 'nope'"):
            await E(remote).nope()
        assert [(i.seq, i.target, i.method, i.args, i.ok) for i in seen] == [
            (1, "Counter", "incr", (3,), True),
            (2, "Counter", "make_child", (), True),
            (3, "Counter", "incr", (), True),
            (4, "Counter", "nope", (), False),
        ]
        assert isinstance(seen[3].outcome, TypeError)
        revoke()  # ends the root and every reference handed out through it
        for target in (remote, child):
            with pytest.raises(RemoteError, match=r"^Revoked: "):
                await E(target).incr()
        assert [(i.method, i.ok, type(i.outcome).__name__) for i in seen[4:]] == [
            ("incr", False, "Revoked"), ("incr", False, "Revoked"),
        ]
    assert root.n == 3


async def test_membrane_wraps_references_coming_in() -> None:
    root = Counter()
    outside = Counter()
    seen: list[Invocation] = []
    proxy, revoke = membrane(root, seen.append)
    async with open_vat():
        assert await E(proxy).poke(outside) == 1  # root calls outside through the membrane
        assert [(i.method, i.args[:0]) for i in seen] == [("incr", ()), ("poke", ())]
        revoke()
        with pytest.raises(Revoked):
            await E(proxy).incr()


async def test_membrane_can_refuse_calls() -> None:
    seen: list[Invocation] = []
    proxy, _ = membrane(Counter(), seen.append, allow=lambda method, args: method != "reset")
    async with open_vat():
        assert await E(proxy).incr() == 1
        with pytest.raises(PermissionError, match=r"refused Counter\.reset"):
            await E(proxy).reset()
    assert [(i.method, i.ok) for i in seen] == [("incr", True), ("reset", False)]


async def test_revocation_lets_go_of_the_target() -> None:
    import weakref

    for wrap in (caretaker, lambda t: membrane(t, lambda i: None)):
        counter = Counter()
        ref = weakref.ref(counter)
        proxy, revoke = wrap(counter)
        del counter
        gc.collect()
        assert ref() is not None  # held while the capability lives
        revoke()
        gc.collect()
        assert ref() is None
        assert proxy is not None


# == interface guards ==================================================================

MessageShape = M.struct({"role": M.string(max_len=16), "content": M.string()})
ChatI = M.interface(
    "Chat",
    {
        "complete": M.call(M.list_of(MessageShape, max_len=8)).optional_(M.int(min=1, max=100)),
        "models": M.call(),
    },
)


class ChatBase:
    def admin_reset(self) -> str:  # inherited, not in the interface: refused too
        return "reset"


@guarded(ChatI)
@far
class GuardedChat(ChatBase):
    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[dict[str, str]], max_tokens: int = 10) -> str:
        self.calls += 1
        return f"{len(messages)} messages, {max_tokens} tokens"

    async def models(self) -> list[str]:
        return ["mini"]

    def debug_dump(self) -> str:  # not in the interface: peers cannot call it
        return "secrets"


async def test_guarded_class_checks_before_the_method_runs() -> None:
    chat = GuardedChat()
    async with connect_pair(bootstrap_b=chat) as (a, _b):
        remote = await a.bootstrap()
        ok = [{"role": "user", "content": "hi"}]
        assert await E(remote).complete(ok) == "1 messages, 10 tokens"
        assert await E(remote).complete(ok, 5) == "1 messages, 5 tokens"
        assert await E(remote).models() == ["mini"]
        cases = [
            ((ok, 500), r"Chat.complete: argument 1: expected an integer in \[1, 100\]"),
            (("hi",), "Chat.complete: argument 0: expected a list of"),
            (([{"role": "user"}],), r"argument 0\[0\]: struct lacks \['content'\]"),
            (([{"role": "user", "content": 1}],), r"argument 0\[0\]\.content: expected a string"),
            (([{"role": "u", "content": "x", "x": 1}],), "unexpected fields"),
            (([],) * 3, "takes 1 to 2 arguments, got 3"),
            ((ok * 9,), "more than 8 items"),
        ]
        for args, message in cases:
            with pytest.raises(RemoteError, match=f"^GuardError: .*{message}"):
                await E(remote).complete(*args)
        for unlisted in ("debug_dump", "admin_reset"):
            with pytest.raises(RemoteError, match=f"GuardError: Chat has no method '{unlisted}'"):
                await E(remote)[unlisted]()
    assert chat.calls == 2


async def test_guard_wraps_any_reference() -> None:
    counter = Counter()
    iface = M.interface("Incr", {"incr": M.call().optional_(M.int(min=0))})
    async with connect_pair(bootstrap_b=counter) as (a, _b):
        remote = await a.bootstrap()  # a reference from another session
        async with open_vat():
            guarded_ref = guard(remote, iface)
            assert await E(guarded_ref).incr(2) == 2
            with pytest.raises(GuardError, match="expected an integer"):
                await E(guarded_ref).incr(-1)
            with pytest.raises(GuardError, match="no method 'reset'"):
                await E(guarded_ref).reset()
    assert counter.n == 2


def test_patterns() -> None:
    assert M.or_(M.string(), M.null()).matches("x")
    assert not M.int().matches(True)
    assert not M.float().matches(float("nan"))
    assert M.opt(M.symbol()).matches(None) and M.opt(M.symbol()).matches(Symbol("a"))
    assert M.eq("x").matches("x") and not M.eq(1).matches(1.0)
    assert M.remotable().matches(Counter()) and not M.remotable().matches({})
    assert M.bytes(max_len=2).matches(b"ab") and not M.bytes(max_len=2).matches(b"abc")
    rest = M.call(M.string()).rest_(M.int())
    rest.check("f", ("a", 1, 2, 3))
    with pytest.raises(GuardError, match="argument 2"):
        rest.check("f", ("a", 1, "x"))


# == policies ==========================================================================


def test_policy_load_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "policy.toml"
    toml.write_text(
        """
[compartments.summarizer]
endowments = { chat = "chat-mini" }
modules = ["json"]
mode = "best_effort"
loop = "asyncio"

[compartments.summarizer.limits]
wall_s = 5.0
log_bytes = 4096

[compartments.searcher]
endowments = ["search"]
"""
    )
    policies = Policy.load(toml)
    s = policies["summarizer"]
    assert s.endowments == {"chat": "chat-mini"}
    assert s.modules == ("json",) and s.mode == "best_effort"
    assert s.limits == Limits(wall_s=5.0, log_bytes=4096)
    assert policies["searcher"].endowments == {"search": "search"}
    assert policies["searcher"].mode == "strict" and policies["searcher"].fs_read == ()
    assert s.loop == "asyncio" and policies["searcher"].loop == "auto"
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps({"compartments": {"x": {"limits": {"cpu_s": 2}}}}))
    assert Policy.load(as_json)["x"].limits.cpu_s == 2
    caps = {"chat-mini": "the chat", "other": "not given"}
    assert s.select(caps) == {"chat": "the chat"}
    with pytest.raises(PolicyError, match=r"no capability named \['search'\]"):
        policies["searcher"].select(caps)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"compartments": {"x": {"network": true}}}', r"x: unknown fields \['network'\]"),
        ('{"compartments": {"x": {"mode": "lax"}}}', "mode must be one of"),
        ('{"compartments": {"x": {"loop": "trio"}}}', "loop must be one of"),
        ('{"compartments": {"x": {"limits": {"wall_s": -1}}}}', "limits.wall_s must be a positive"),
        ('{"compartments": {"x": {"limits": {"disk": 1}}}}', r"unknown limits \['disk'\]"),
        ('{"compartments": {"x": {"fs_read": ["etc"]}}}', "must be absolute"),
        ('{"compartments": {"x": {"modules": ["os; rm"]}}}', "not a module name"),
        ('{"x": {}}', "expected a 'compartments' table"),
        ("{not json", "not valid JSON"),
    ],
)
def test_policy_files_are_checked(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)


# == compartments, from every backend ================================================


@needs_kernel
async def test_compartment_evaluates_and_reports() -> None:
    counter = Counter()
    async with Compartment({"counter": counter}) as c:
        assert c.report().confined
        assert await c.evaluate("result = [await E(counter).incr(), await E(counter).incr()]") == [
            1, 2,
        ]
        assert await c.evaluate("import json\nresult = json.dumps({'a': n})", n=3) == '{"a": 3}'
        with pytest.raises(GuestError, match="guest raised ValueError: no") as info:
            await c.evaluate("raise ValueError('no')")
        assert info.value.name == "ValueError"
        with pytest.raises(GuestError, match="SyntaxError"):
            await c.evaluate("def (")
        with pytest.raises(GuestError, match="not passable"):
            await c.evaluate("result = object()")
        # A guest's far object comes back as a reference the host can call.
        made = await c.evaluate("""
from captp import far
@far
class Box:
    def get(self):
        return 'from the guest'
result = Box()
""")
        assert await E(made).get() == "from the guest"
    assert counter.n == 2


HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


@needs_kernel
@pytest.mark.parametrize("loop", ["auto", "asyncio", "uvloop"])
@pytest.mark.parametrize("start", ["zygote", "cold"])
async def test_the_worker_runs_the_loop_its_policy_names(loop: Loop, start: Start) -> None:
    if loop == "uvloop" and not HAS_UVLOOP:
        pytest.skip("uvloop is not installed")
    expected = "asyncio" if loop == "asyncio" or not HAS_UVLOOP else "uvloop"
    counter = Counter()
    async with Compartment({"counter": counter}, Policy(loop=loop, start=start)) as c:
        assert c.report().loop == expected and c.report().confined
        running = await c.evaluate(
            "import asyncio\n"
            "result = [type(asyncio.get_running_loop()).__module__, await E(counter).incr()]"
        )
        assert running[0].split(".")[0] == expected and running[1] == 1
        assert f"loop {expected}" in str(c.report())


async def test_a_policy_asking_for_a_missing_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(ConfinementError, match="asks for uvloop, which is not installed"):
        async with Compartment({}, Policy(loop="uvloop", mode="best_effort")):
            pass


# What the guest sees of the build it runs: the chooser's flag, where the
# decoder was loaded from, and its environment (empty but for the locale
# Python itself sets; the host's OCAPN_PURE must not leak into it).
BUILD_PROBE = """
import os, ocapn._native as native, ocapn._syrup_decode as decode
result = [native.COMPILED, decode.__file__, sorted(os.environ)]
"""


@pytest.mark.parametrize("start", ["zygote", "cold"])
async def test_the_worker_runs_the_hosts_build(start: Start) -> None:
    from ocapn import _native

    async with Compartment({}, Policy(start=start, mode="best_effort")) as c:
        compiled, origin, environ = await c.evaluate(BUILD_PROBE)
    assert compiled is _native.COMPILED
    assert origin.endswith(".so" if _native.COMPILED else ".py"), origin
    assert set(environ) <= {"LC_CTYPE"}


def test_a_pure_host_gets_a_pure_worker_where_a_build_exists() -> None:
    import os
    import subprocess

    from ocapn import _native

    if not _native.COMPILED:
        pytest.skip("needs the compiled build in use (`python -m ocapn.compile`: CI's step)")
    script = f"""
import anyio, json
from captp.confine import Compartment, Policy
from ocapn import _native

async def main():
    seen = [_native.COMPILED]
    for start in ("zygote", "cold"):
        async with Compartment({{}}, Policy(start=start, mode="best_effort")) as c:
            seen.append(await c.evaluate({BUILD_PROBE!r}))
    print(json.dumps(seen))

anyio.run(main)
"""
    env = {**os.environ, "OCAPN_PURE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    host, *workers = json.loads(done.stdout.splitlines()[-1])
    assert host is False and len(workers) == 2
    for compiled, origin, environ in workers:
        assert compiled is False and origin.endswith(".py"), origin
        assert set(environ) <= {"LC_CTYPE"}


def test_the_worker_side_of_the_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from captp.confine._worker import uses_uvloop

    monkeypatch.delitem(sys.modules, "uvloop", raising=False)
    assert not uses_uvloop("auto") and not uses_uvloop("asyncio")
    with pytest.raises(ModuleNotFoundError, match="asks for uvloop"):
        uses_uvloop("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", object())
    assert uses_uvloop("auto") and uses_uvloop("uvloop") and not uses_uvloop("asyncio")


@needs_kernel
async def test_compartment_wall_limit_from_every_backend() -> None:
    async with Compartment({}, Policy(limits=Limits(wall_s=1.0))) as c:
        with pytest.raises(LimitExceeded, match="wall_s"):
            await c.evaluate("import time\ntime.sleep(60)")


async def test_unconfined_mode_warns_loudly() -> None:
    with pytest.warns(RuntimeWarning, match="UNCONFINED"):
        async with Compartment({}, Policy(mode="unconfined", start="cold")) as c:
            assert c.report().missing == list(LAYERS)  # nothing applied, and it says so
            assert not c.report().confined and c.report().mode == "unconfined"
            assert await c.evaluate("result = 6 * 7") == 42


@needs_kernel
async def test_best_effort_runs_and_reports_what_is_missing(tmp_path: Path) -> None:
    # A read-only path that does not exist makes Landlock fail in the worker.
    policy = Policy(mode="best_effort", fs_read=(str(tmp_path / "missing"),))
    async with Compartment({}, policy) as c:
        report = c.report()
        assert report.missing == ["landlock"]
        assert str(tmp_path / "missing") in report.layers["landlock"].detail
        assert "landlock: MISSING" in str(report)
        assert await c.evaluate("result = 1") == 1


@needs_kernel
async def test_a_dead_zygote_is_replaced() -> None:
    from captp.confine import _zygote

    async with Compartment({}) as c:
        assert await c.evaluate("result = 1") == 1
    assert _zygote._zygote is not None
    _zygote._zygote[0].kill()
    _zygote._zygote[0].wait()
    async with Compartment({}) as c:
        assert await c.evaluate("result = 2") == 2


@needs_kernel
async def test_compartments_leave_no_file_or_process_behind(tmp_path: Path) -> None:
    import os

    from captp.confine import LayerUnavailable

    async with Compartment({}) as c:  # the zygote and the loop's own files exist from here
        pass
    before = set(os.listdir("/proc/self/fd"))
    pids = []
    for start in ("zygote", "cold"):
        async with Compartment({}, Policy(start=start)) as c:
            pids.append(c.pid)
        with pytest.raises(LayerUnavailable):  # refused inside the worker
            async with Compartment({}, Policy(start=start, fs_read=(str(tmp_path / "no"),))):
                pass
    assert set(os.listdir("/proc/self/fd")) == before
    for pid in pids:  # killed, and reaped by the zygote or by us: no zombie
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            continue
        assert state != "Z"


@needs_kernel
async def test_a_policy_module_that_does_not_exist_is_named() -> None:
    from captp.confine import WorkerDied

    with pytest.raises(WorkerDied, match="No module named 'no_such_module_here'"):
        async with Compartment({}, Policy(modules=("json", "no_such_module_here"))):
            pass


@needs_kernel
async def test_many_compartments_at_once() -> None:
    import anyio

    counter = Counter()
    pids: dict[int, int] = {}

    async def one(i: int) -> None:
        async with Compartment({"c": counter}) as box:
            pids[i] = box.pid
            assert len(await box.evaluate("result = [await E(c).incr() for _ in range(10)]")) == 10

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(one, i)
    assert counter.n == 60
    assert len(set(pids.values())) == 6  # one worker each


@pytest.mark.parametrize("layer", ["landlock", "seccomp", "namespaces"])
async def test_30_strict_refuses_without_a_layer(
    layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Escape test 30 (runs on any kernel): strict refuses to start, naming the layer.
    from captp.confine import LAYERS, Layer, LayerUnavailable, _kernel

    def lacking() -> dict[str, Layer]:
        layers = {name: Layer(name, True, "simulated") for name in LAYERS}
        layers[layer] = Layer(layer, False, "simulated: not on this kernel")
        return layers

    monkeypatch.setattr(_kernel, "probe", lacking)
    with pytest.raises(LayerUnavailable) as info:
        async with Compartment({}, Policy()):
            pass
    assert info.value.layer == layer
    assert str(info.value) == f"strict confinement needs {layer}: simulated: not on this kernel"


def test_the_policy_file_in_the_docs_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "captp" / "confine" / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "tools.toml").write_text(block)
    policy = Policy.load(tmp_path / "tools.toml")["summarizer"]
    assert policy.endowments == {"chat": "chat-mini"}
    assert policy.limits == Limits(wall_s=5.0)  # the documented values are the defaults
    assert policy.modules == ("json", "re") and policy.mode == "strict"


@needs_kernel
async def test_a_compartment_from_a_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"compartments": {"counter-tool": {
        "endowments": {"counter": "the-counter"},
        "modules": ["json"],
        "limits": {"wall_s": 20},
    }}}))
    policy = Policy.load(path)["counter-tool"]
    counter = Counter()
    async with Compartment({"the-counter": counter, "other": Counter()}, policy) as c:
        assert await c.evaluate("result = sorted(k for k in globals() if k[0] != '_')") == [
            "E", "counter",
        ]
        assert await c.evaluate("import json\nresult = json.dumps(await E(counter).incr())") == "1"
        with pytest.raises(GuestError, match="ModuleNotFoundError: No module named 'sqlite3'"):
            await c.evaluate("import sqlite3")
    assert counter.n == 1
