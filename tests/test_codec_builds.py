"""The optional compiled (mypyc) engine, codec and wire: choosing the build, stepping
around it, and their tests run against the other build (spec-notes/0040).

The test run this file is part of uses whichever build :mod:`captp._native`
chose; ``test_codec_suite_passes_under_the_other_build`` runs the engine's, the
codec's and the wire's test files again in a child process under the other one, so
that a run with the compiled build (CI's compiled step) checks both.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import FunctionType

import pytest

import captp._connection
import captp._eventual
import captp._passable
import captp.engine
import captp.messages
import netlayers.asyncio_tcp
import ocapn._cbor_codec
import ocapn._syrup_decode
import ocapn._syrup_encode
import ocapn._syrup_stream
import ocapn.wire
from captp import _native
from captp import messages as m
from ocapn import _native as ocapn_native
from ocapn import cbor, syrup

ROOT = Path(__file__).resolve().parent.parent
CODEC_TESTS = [
    "tests/test_engine.py",
    "tests/test_atomic.py",
    "tests/test_pipe.py",
    "tests/test_lifecycle.py",
    "tests/test_syrup.py",
    "tests/test_syrup_properties.py",
    "tests/test_syrup_stream.py",
    "tests/test_cbor.py",
    "tests/test_cbor_properties.py",
    "tests/test_float32.py",
    "tests/test_ocapn_wire.py",
    "tests/test_asyncio_tcp.py",
]
MODULES = [
    captp._passable,
    captp.messages,
    captp._eventual,
    captp.engine,
    captp._connection,
    ocapn._syrup_encode,
    ocapn._syrup_decode,
    ocapn._syrup_stream,
    ocapn._cbor_codec,
    ocapn.wire,
    netlayers.asyncio_tcp,
]


def _built() -> bool:
    return all(path.exists() for path in _native.compiled_files(ROOT))


def _child_env(pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OCAPN_PURE"}
    if pure:
        env["OCAPN_PURE"] = "1"
    return env


def _run(args: list[str], pure: bool) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the repository, with the pure switch set or cleared; must succeed."""
    return subprocess.run(
        [sys.executable, *args], env=_child_env(pure=pure), cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def test_the_flags_say_which_modules_are_loaded() -> None:
    assert syrup.COMPILED is cbor.COMPILED is ocapn_native.COMPILED is _native.COMPILED
    assert [module.__name__ for module in MODULES] == list(_native.MODULES)
    for module in MODULES:
        origin = module.__file__ or ""
        assert origin.endswith(".so" if _native.COMPILED else ".py"), origin
    assert _native.REASON.startswith("compiled" if _native.COMPILED else "pure")


def test_the_messages_of_every_call_are_built_by_compiled_code() -> None:
    """Their own ``__init__`` (the dataclass one stays interpreted, compiled: 0040)."""
    hot: list[type] = [m.Deliver, m.Listen, m.Get, m.Return, m.Resolve, m.Desc]
    for cls in hot:
        init = vars(cls)["__init__"]
        assert isinstance(init, FunctionType) is not _native.COMPILED, cls
        fields = [f.name for f in dataclasses.fields(cls)]
        assert list(inspect.signature(cls).parameters) == fields, cls
    deliver = m.Deliver("t", "go", (1,))
    assert dataclasses.replace(deliver, answer=3) == m.Deliver("t", "go", (1,), 3)


def test_a_large_view_is_parsed_by_the_interpreted_form_with_the_shared_signals() -> None:
    """Compiled, the parser takes ``bytes``; a view goes to the module's source, run as Python."""
    twin = _native.interpreted("ocapn._syrup_decode")
    if _native.COMPILED:
        assert twin is not ocapn._syrup_decode and twin.__name__.endswith("__interpreted")
        assert isinstance(twin._one, FunctionType)
        assert _native.interpreted("ocapn._syrup_decode") is twin  # loaded once
    else:
        assert twin is ocapn._syrup_decode
    assert twin.Truncated is ocapn._syrup_decode.Truncated  # what its callers catch
    assert twin.HookFailed is ocapn._syrup_decode.HookFailed
    blob = bytes(range(256)) * 300
    data = syrup.encode([captp._passable.Record(captp._passable.Symbol("x"), (blob,)), 7])
    assert len(data) >= ocapn._syrup_decode.VIEW_THRESHOLD

    class Refused(Exception):
        pass

    def hook(label: object, fields: list[object]) -> object:
        raise Refused(label)

    for source in (memoryview(data), bytearray(data)):
        got = syrup.decode(source)
        assert got == [captp._passable.Record(captp._passable.Symbol("x"), (blob,)), 7]
        with pytest.raises(Refused):  # the hook's own exception, unchanged
            syrup.decode(source, record_hook=hook)
        with pytest.raises(syrup.SyrupDecodeError, match="middle of a value"):
            syrup.decode(source[:-3])


def test_ocapn_pure_selects_pure_python_even_when_a_build_exists() -> None:
    script = (
        "import ocapn._syrup_decode as d, ocapn._cbor_codec as c, captp.engine as e\n"
        "from ocapn import syrup, cbor\n"
        "print(syrup.COMPILED, cbor.COMPILED, d.__file__.endswith('.py'),"
        " c.__file__.endswith('.py'), e.__file__.endswith('.py'))\n"
    )
    done = _run(["-c", script], pure=True)
    assert done.stdout.split() == ["False", "False", "True", "True", "True"]
    assert "RuntimeWarning" not in done.stderr  # asked for: no warning


@pytest.mark.parametrize("pure", [True, False])
def test_a_process_that_imports_only_captp_chooses_too(pure: bool) -> None:
    """The chooser is in the lowest layer: ``import captp`` alone honours the switch."""
    script = (
        "import sys, captp, captp.engine as e\n"
        "print(captp._native.COMPILED, e.__file__.endswith('.so'), 'ocapn' in sys.modules)\n"
    )
    done = _run(["-c", script], pure=pure)
    compiled = not pure and _native._decide(str(ROOT), False)[0]  # a fresh build exists
    assert done.stdout.split() == [str(compiled), str(compiled), "False"]


def test_the_pure_switch_reads_like_a_flag() -> None:
    assert _native.pure_requested({"OCAPN_PURE": "yes"})
    assert not _native.pure_requested({"OCAPN_PURE": "0"})
    assert not _native.pure_requested({})


def test_a_pure_install_needs_no_mypy_extensions() -> None:
    """``mypyc_attr`` (which lets EndoPositions subclass the compiled Positions) falls back."""
    script = (
        "import sys; sys.modules['mypy_extensions'] = None  # as if not installed\n"
        "from captp.endo import EndoPositions\n"
        "p = EndoPositions(); print(p.next_export(False), p.next_question())\n"
    )
    done = _run(["-c", script], pure=True)
    assert done.stdout.split() == ["o+1", "q-1"]


def test_status_command_names_the_build() -> None:
    done = _run(["-m", "ocapn.compile", "status"], pure=True)
    assert done.stdout.startswith("pure Python")
    assert "ocapn/_syrup_decode.py" in done.stdout and "captp/engine.py" in done.stdout


def _fake_build(tmp_path: Path) -> Path:
    """A directory of packages with every compiled file (empty) and a matching manifest."""
    for path in _native.source_files(tmp_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {path.name}\n")
    for path in _native.compiled_files(tmp_path):
        path.touch()
    _native.write_manifest(tmp_path)
    return tmp_path


def test_the_build_spans_both_packages() -> None:
    files = [p.relative_to(ROOT).as_posix() for p in _native.compiled_files(ROOT)]
    first = _native.MODULES[0].replace(".", "/")  # the lowest layer's module
    assert files[0].startswith(f"{first}.") and files[-1] == "captp/_native.sums"
    assert any(f.startswith("captp/_native_lib__mypyc.") for f in files)
    assert any(f.startswith("ocapn/wire.") for f in files)


def test_decision_follows_the_files_and_the_switch(tmp_path: Path) -> None:
    assert _native._decide(str(tmp_path), False) == (
        False, "pure Python (no compiled build; `python -m ocapn.compile` makes one)", False
    )  # fmt: skip
    root = str(_fake_build(tmp_path))
    assert _native._decide(root, False) == (True, "compiled with mypyc", False)
    compiled, reason, step_around = _native._decide(root, True)
    assert (compiled, step_around) == (False, True) and "OCAPN_PURE" in reason


@pytest.mark.parametrize("name", ["captp/engine.py", "ocapn/_syrup_decode.py"])
def test_an_edited_source_makes_the_build_stale(tmp_path: Path, name: str) -> None:
    root = _fake_build(tmp_path)
    (root / name).write_text("# edited\n")
    compiled, reason, step_around = _native._decide(str(root), False)
    assert (compiled, step_around) == (False, True)
    assert f"stale: {name[:-3].replace('/', '.')} changed" in reason
    # Touched but unchanged (a checkout, say): still fresh, by its hash.
    root = _fake_build(tmp_path / "again")
    os.utime(root / name, ns=(1, 1))
    assert _native._decide(str(root), False)[0] is True


def test_an_incomplete_build_is_stepped_around(tmp_path: Path) -> None:
    root = _fake_build(tmp_path)
    next(p for p in _native.compiled_files(root) if "_syrup_stream" in p.name).unlink()
    compiled, reason, step_around = _native._decide(str(root), False)
    assert (compiled, step_around) == (False, True) and "_syrup_stream" in reason
    (root / _native.MANIFEST).unlink()
    for path in _native.compiled_files(root):
        path.unlink(missing_ok=True)
    assert _native._decide(str(root), False)[0] is False


def test_a_compiled_module_no_build_makes_is_stepped_around_and_cleaned(tmp_path: Path) -> None:
    """An older build's ``.so`` (a module since dropped from MODULES) is never loaded."""
    root = _fake_build(tmp_path)
    first = _native.compiled_files(root)[0]
    suffix = first.name.removeprefix(_native.MODULES[0].rpartition(".")[2])
    (root / "captp" / "_promise.py").write_text("# a module this build does not compile\n")
    stray = root / "captp" / f"_promise{suffix}"
    stray.touch()
    old_group = root / "ocapn" / f"_codec_native__mypyc{suffix}"
    old_group.touch()
    (root / "ocapn" / "_native.sums").touch()
    finders = list(sys.meta_path)
    try:
        with pytest.warns(RuntimeWarning, match="captp._promise"):
            assert _native._select(str(root), False) == (True, "compiled with mypyc")
        spec = sys.meta_path[0].find_spec("captp._promise")  # type: ignore[call-arg]
        assert spec is not None and spec.origin == str(root / "captp" / "_promise.py")
    finally:
        sys.meta_path[:] = finders
    assert set(_native.leftover_files(root)) == {
        stray, old_group, root / "ocapn" / "_native.sums"
    }
    assert not set(_native.leftover_files(root)) & set(_native.compiled_files(root))


def test_a_stale_build_warns_once_in_a_fresh_process(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        root = _fake_build(tmp_path)
        (root / "ocapn" / "_syrup_encode.py").write_text("# changed\n")
        finders = list(sys.meta_path)
        try:
            with pytest.raises(RuntimeWarning, match="stale"):
                _native._select(str(root), False)
        finally:
            sys.meta_path[:] = finders


@pytest.mark.slow
def test_codec_suite_passes_under_the_other_build() -> None:
    """The engine's, codec's, wire's and channel's tests, in a child, under the other build."""
    if not _built():
        pytest.skip("no compiled build here (`python -m ocapn.compile`; CI's compiled step)")
    other_is_pure = _native.COMPILED
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CODEC_TESTS],
        env=_child_env(pure=other_is_pure), cwd=ROOT,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


@pytest.mark.slow
def test_a_failed_build_leaves_the_codec_pure(tmp_path: Path) -> None:
    """``python -m ocapn.compile`` without a working C compiler: exit 1, nothing left, pure."""
    for name in ("captp", "ocapn", "netlayers"):
        shutil.copytree(
            ROOT / name, tmp_path / name,
            ignore=shutil.ignore_patterns("*.so", "_native.sums", "__pycache__"),
        )  # fmt: skip
    env = {**_child_env(pure=False), "CC": "/bin/false", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "ocapn.compile"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "/bin/false" in done.stdout and "the modules stay pure Python" in done.stdout
    assert not [p for p in _native.compiled_files(tmp_path) if p.exists()]
    script = "from ocapn import syrup; print(syrup.COMPILED, syrup.decode(b'1+'))"
    check = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert check.stdout.split() == ["False", "1"]
    assert "RuntimeWarning" not in check.stderr
