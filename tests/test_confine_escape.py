"""The escape tests of spec/confinement.md: guest code in a strict compartment tries to get out.

Each test runs guest code in a ``strict`` compartment endowed with one chat
capability (its key held by the host), wrapped as ``caretaker(membrane(chat))``,
and asserts the exact outcome; those on the ``box`` fixture run on both of
the worker's loops (uvloop where installed, and asyncio's own).  Where this
kernel lacks a layer the tests skip, saying which; ``strict`` then refuses
to start (test 30: the worker's refusal is here, the host's, which runs on
any kernel, in test_confine.py).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from captp import far
from captp.confine import (
    Compartment,
    Invocation,
    LayerUnavailable,
    LimitExceeded,
    Limits,
    Policy,
    WorkerDied,
    caretaker,
    membrane,
    probe,
)

MISSING = [f"{n}: {layer.detail}" for n, layer in probe().items() if not layer.ok]
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(bool(MISSING), reason=f"kernel layers missing: {MISSING}"),
]

GUEST_MODULES = ("json", "math", "re", "os", "socket", "ctypes", "ctypes.util", "gc")
POLICY = Policy(modules=GUEST_MODULES, name="escape")
KEY = "sk-test-1234567890"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the host side runs under every backend in test_confine.py


@far
class ChatAPI:
    """The endowed service: its key stays in the host."""

    def __init__(self) -> None:
        self._key = KEY
        self.calls = 0

    def complete(self, messages: list[dict[str, str]]) -> str:
        self.calls += 1
        return f"(reply to {messages[-1]['content']!r})"


class Setup:
    def __init__(self) -> None:
        self.chat = ChatAPI()
        self.log: list[Invocation] = []
        inner, self.revoke_membrane = membrane(self.chat, self.log.append)
        self.proxy, self.revoke = caretaker(inner)


@pytest.fixture
def setup() -> Setup:
    return Setup()


# The worker's loop: uvloop where installed ("auto"), and asyncio's own.
@pytest.fixture(params=["auto", "asyncio"])
async def box(setup: Setup, request: pytest.FixtureRequest) -> AsyncIterator[Compartment]:
    async with Compartment({"chat": setup.proxy}, POLICY.with_(loop=request.param)) as c:
        yield c


# A helper the guest uses to report what an attempt raised: its type and errno.
ATTEMPT = """
def attempt(fn):
    try:
        value = fn()
    except BaseException as e:
        return [type(e).__name__, getattr(e, "errno", None)]
    return ["ok", repr(value)[:200]]
"""

LIBC = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    r = fn(*args)
    return r, ctypes.get_errno()
"""


async def run(c: Compartment, source: str) -> Any:
    return await c.evaluate(ATTEMPT + source)


def assert_denied(outcome: Any, error: str = "PermissionError", code: int = errno.EPERM) -> None:
    assert outcome == [error, code]


async def test_01_chat_call_works_and_is_logged(box: Compartment, setup: Setup) -> None:
    reply = await box.evaluate(
        "result = await E(chat).complete([{'role': 'user', 'content': 'hi'}])"
    )
    assert reply == "(reply to 'hi')"
    assert [(i.method, i.ok) for i in setup.log] == [("complete", True)]
    assert box.report().confined
    # Forked from the zygote: the seccomp filter it compiled once, with this pid patched in.
    assert box.report().layers["seccomp"].detail.startswith("precompiled filter")


async def test_02_etc_passwd(box: Compartment) -> None:
    assert_denied(await run(box, "result = attempt(lambda: open('/etc/passwd').read())"),
                  code=errno.EACCES)


async def test_03_parent_environ(box: Compartment) -> None:
    outcome = await run(box, f"""
import os
result = [attempt(lambda: open(f'/proc/{{os.getppid()}}/environ', 'rb').read()),
          attempt(lambda: open('/proc/{os.getpid()}/environ', 'rb').read())]
""")
    assert outcome == [["PermissionError", errno.EACCES]] * 2


async def test_04_environment_is_empty(box: Compartment) -> None:
    env = await box.evaluate("import os\nresult = dict(os.environ)")
    assert set(env) <= {"LC_CTYPE"}
    assert KEY not in repr(env)


async def test_05_write_scratch(box: Compartment, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)  # the uid may write here: only Landlock stops it
    target = tmp_path / "x"
    source = f"result = attempt(lambda: open({str(target)!r}, 'w').write('x'))"
    assert_denied(await run(box, source), code=errno.EACCES)
    assert not target.exists()


async def test_06_list_root(box: Compartment) -> None:
    assert_denied(await run(box, "import os\nresult = attempt(lambda: os.listdir('/'))"),
                  code=errno.EACCES)


async def test_07_import_outside_policy(box: Compartment) -> None:
    outcome = await run(box, "result = attempt(lambda: __import__('sqlite3'))")
    assert outcome == ["ModuleNotFoundError", None]


async def test_08_tcp_connect(box: Compartment) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        outcome = await run(box, f"""
import socket
def go():
    s = socket.socket()
    s.connect(('127.0.0.1', {port}))
result = attempt(go)
""")
        assert_denied(outcome)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


async def test_09_udp_socket(box: Compartment) -> None:
    outcome = await run(box, """
import socket
result = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
""")
    assert_denied(outcome)


async def test_10_abstract_unix_socket(box: Compartment) -> None:
    name = f"\0captp-confine-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()
        server.setblocking(False)
        outcome = await run(box, f"""
import socket
result = attempt(lambda: socket.socket(socket.AF_UNIX).connect({name!r}))
""")
        assert_denied(outcome)
        with pytest.raises(BlockingIOError):
            server.accept()


async def test_11_execv(box: Compartment) -> None:
    outcome = await run(
        box, "import os\nresult = attempt(lambda: os.execv('/bin/sh', ['sh', '-c', 'id']))"
    )
    assert_denied(outcome)
    assert await box.evaluate("result = 'still here'") == "still here"


async def test_12_posix_spawn(box: Compartment) -> None:
    outcome = await run(
        box, "import os\nresult = attempt(lambda: os.posix_spawn('/bin/true', ['true'], {}))"
    )
    assert_denied(outcome)


async def test_13_fork(box: Compartment) -> None:
    assert_denied(await run(box, "import os\nresult = attempt(os.fork)"))


async def test_14_signal_parent_and_host(box: Compartment) -> None:
    outcome = await run(box, f"""
import os
result = [attempt(lambda: os.kill(os.getppid(), 0)), attempt(lambda: os.kill({os.getpid()}, 0)),
          attempt(lambda: os.kill(os.getpid(), 0))]
""")
    # Signals to itself still work: the filter names the worker's own pid.
    assert outcome == [["PermissionError", errno.EPERM]] * 2 + [["ok", "None"]]


async def test_15_process_vm_readv(box: Compartment) -> None:
    outcome = await box.evaluate(LIBC + f"""
buf = ctypes.create_string_buffer(16)
class IOVec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
local = IOVec(ctypes.addressof(buf), 16)
remote = IOVec(0x400000, 16)
result = call(libc.process_vm_readv, {os.getpid()}, ctypes.byref(local), 1,
              ctypes.byref(remote), 1, 0)
""")
    assert outcome == [-1, errno.EPERM]


async def test_16_ptrace_attach(box: Compartment) -> None:
    outcome = await box.evaluate(LIBC + f"""
import os
result = [call(libc.ptrace, 16, os.getppid(), None, None),
          call(libc.ptrace, 16, {os.getpid()}, None, None)]
""")
    assert outcome == [[-1, errno.EPERM]] * 2


async def test_17_unshare_user_namespace(box: Compartment) -> None:
    outcome = await box.evaluate(LIBC + "result = call(libc.unshare, 0x10000000)")
    assert outcome == [-1, errno.EPERM]


async def test_18_private_method(box: Compartment, setup: Setup) -> None:
    outcome = await box.evaluate("""
try:
    await E(chat)['_key']()
    result = 'reached'
except Exception as e:
    result = [type(e).__name__, str(e)]
""")
    assert outcome[0] == "RemoteError"
    assert outcome[1].startswith("TypeError: ChatAPI has no method '_key'")
    assert KEY not in outcome[1]


async def test_19_private_field(box: Compartment) -> None:
    outcome = await box.evaluate("""
try:
    result = await E.get(chat)._key
except Exception as e:
    result = [type(e).__name__, str(e)]
""")
    assert outcome[0] == "RemoteError"
    assert outcome[1].startswith("TypeError: cannot get field '_key'")
    assert "not a struct" in outcome[1]


async def test_20_no_inherited_files(box: Compartment) -> None:
    kinds = await box.evaluate("""
import os, stat
found = {}
for fd in range(256):
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        continue
    found[str(fd)] = 'file' if stat.S_ISREG(mode) else 'dir' if stat.S_ISDIR(mode) else 'other'
result = found
""")
    files = {int(fd) for fd, kind in kinds.items() if kind in ("file", "dir")}
    assert files <= {1, 2}  # stdout and stderr: the host's log file


async def test_21_introspection_reaches_classes_not_the_host(box: Compartment) -> None:
    count = await box.evaluate("result = len(().__class__.__base__.__subclasses__())")
    assert count > 100  # in-process introspection is not the boundary; the process is


async def test_22_memory_limit(box: Compartment) -> None:
    assert await run(box, "result = attempt(lambda: bytearray(8 << 30))") == ["MemoryError", None]


async def test_23_revoked(box: Compartment, setup: Setup) -> None:
    call = "result = await E(chat).complete([{'role': 'user', 'content': 'x'}])"
    assert await box.evaluate(call) == "(reply to 'x')"
    setup.revoke()
    outcome = await box.evaluate("""
try:
    await E(chat).complete([{'role': 'user', 'content': 'y'}])
    result = 'reached'
except Exception as e:
    result = str(e)
""")
    assert outcome.startswith("Revoked: ")
    assert setup.chat.calls == 1


async def test_24_forged_positions_abort_the_session(box: Compartment, setup: Setup) -> None:
    with pytest.raises(WorkerDied, match="no export at position 0"):
        await box.evaluate("""
import gc
session = next(o for o in gc.get_objects() if hasattr(type(o), 'import_object'))
for i in range(64):
    await E(session.import_object(i)).complete([{'role': 'user', 'content': 'forged'}])
""")
    assert setup.chat.calls == 0
    assert setup.log == []


async def test_25_wall_clock_limit(setup: Setup) -> None:
    policy = POLICY.with_(limits=Limits(wall_s=2.0))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.05)
            ticks += 1

    async with Compartment({"chat": setup.proxy}, policy) as c, anyio.create_task_group() as tg:
        tg.start_soon(tick)
        started = time.monotonic()
        with pytest.raises(LimitExceeded) as info:
            await c.evaluate("while True: pass")
        elapsed = time.monotonic() - started
        tg.cancel_scope.cancel()
        assert info.value.limit == "wall_s"
        assert 1.9 < elapsed < 30
        assert ticks >= 10  # the host kept running meanwhile
        with pytest.raises(LimitExceeded):
            await c.evaluate("result = 1")  # the worker is gone


async def test_26_log_is_capped(setup: Setup) -> None:
    policy = POLICY.with_(limits=Limits(log_bytes=100_000))
    async with Compartment({"chat": setup.proxy}, policy) as c:
        outcome = await c.evaluate(ATTEMPT + """
import sys
def flood():
    for _ in range(400):
        print('x' * 65536)
        sys.stdout.flush()
result = attempt(flood)
""")
        assert outcome == ["OSError", errno.EFBIG]
        assert 0 < len(c.log()) <= 100_000
        assert await c.evaluate("result = 2") == 2


async def test_27_compartments_cannot_reach_each_other(setup: Setup) -> None:
    other = Setup()
    async with Compartment({"chat": setup.proxy}, POLICY) as a, \
            Compartment({"chat": other.proxy}, POLICY) as b:
        signal_a = await b.evaluate(
            ATTEMPT + f"import os\nresult = attempt(lambda: os.kill({a.pid}, 0))"
        )
        assert signal_a == ["PermissionError", errno.EPERM]
        assert a.pid != b.pid
        with pytest.raises(WorkerDied, match="no export"):
            await b.evaluate("""
import gc
session = next(o for o in gc.get_objects() if hasattr(type(o), 'import_object'))
for i in range(64):
    await E(session.import_object(i)).complete([{'role': 'user', 'content': 'forged'}])
""")
        assert setup.chat.calls == other.chat.calls == 0
        assert await a.evaluate(
            "result = await E(chat).complete([{'role': 'user', 'content': 'a'}])"
        ) == "(reply to 'a')"


@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        # a 100 MB frame announced: refused before it is buffered
        ("b'100000000:' + b'x' * 65536", "frame length 100000000 is over the limit"),
        ("b'5:hello'", "protocol error"),  # not a record
    ],
)
async def test_28_bogus_bytes_on_the_channel(setup: Setup, junk: str, reason: str) -> None:
    async with Compartment({"chat": setup.proxy}, POLICY) as c:
        with pytest.raises(WorkerDied, match=reason):
            await c.evaluate(f"import os\nos.write(3, {junk})\nimport time\ntime.sleep(30)")
    assert setup.chat.calls == 0


async def test_29_pathname_unix_socket(box: Compartment, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    path = tmp_path / "host.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        path.chmod(stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)
        server.listen()
        server.setblocking(False)
        outcome = await run(box, f"""
import socket
result = attempt(lambda: socket.socket(socket.AF_UNIX).connect({str(path)!r}))
""")
        assert_denied(outcome)
        with pytest.raises(BlockingIOError):
            server.accept()


async def test_30_strict_worker_refuses_when_a_layer_fails(tmp_path: Path) -> None:
    # A read-only path that cannot be opened makes Landlock fail inside the worker.
    policy = POLICY.with_(fs_read=(str(tmp_path / "missing"),))
    with pytest.raises(LayerUnavailable) as info:
        async with Compartment({}, policy):
            pass
    assert info.value.layer == "landlock"


async def test_cpu_limit_ends_the_worker(setup: Setup) -> None:
    policy = POLICY.with_(limits=Limits(cpu_s=1, wall_s=60.0))
    async with Compartment({"chat": setup.proxy}, policy) as c:
        with pytest.raises(WorkerDied, match="session ended"):
            await c.evaluate("while True: pass")  # SIGXCPU after one second of CPU


async def test_policy_picks_the_endowments(setup: Setup) -> None:
    policy = POLICY.with_(endowments={"llm": "chat-mini"})
    capabilities = {"chat-mini": setup.proxy, "search": ChatAPI()}
    async with Compartment(capabilities, policy) as c:
        names = await c.evaluate("result = sorted(k for k in globals() if not k.startswith('_'))")
        assert names == ["E", "llm"]
        assert await c.evaluate(
            "result = await E(llm).complete([{'role': 'user', 'content': 'p'}])"
        ) == "(reply to 'p')"
