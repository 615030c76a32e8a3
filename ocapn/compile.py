"""Build, check or remove the optional compiled (mypyc) engine, codec, wire and channel.

Run ``python -m ocapn.compile`` to compile the CapTP engine, the codec's hot
modules, the wire's ``op:``/``desc:`` mapping and the asyncio socket channel
(:data:`captp._native.MODULES`) in place (``build``, the default), ``python -m
ocapn.compile status`` to see which build is in use, and ``python -m
ocapn.compile clean`` to remove the compiled files. Building needs ``mypy``
(which brings mypyc), ``setuptools``, a C compiler and the Python headers; the
pure-Python modules stay where they are and are used whenever the compiled
ones are missing, stale (their source changed since the build) or switched off
with ``OCAPN_PURE=1`` (:mod:`captp._native`). If compiling fails, nothing
changes: the modules stay pure. Decisions and figures: ``spec-notes/0040``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from captp import _native

__all__ = ["build", "clean", "main"]


def _root() -> Path:
    """The directory that holds the packages (``captp/``, ``ocapn/``)."""
    return Path(_native.__file__).resolve().parent.parent


def clean() -> list[Path]:
    """Remove the compiled modules and the manifest (an older build's too); returns them."""
    root = _root()
    removed = [path for path in _native.compiled_files(root) if path.exists()]
    removed += _native.leftover_files(root)
    for path in removed:
        path.unlink()
    return removed


def build(*, verbose: bool = False) -> list[Path]:
    """Compile the modules of :data:`captp._native.MODULES` in place (mypyc); returns the files.

    One mypyc group (:data:`captp._native.GROUP`) holds them all, so the
    wire's calls into the engine are direct C calls.  Raises whatever mypyc,
    setuptools or the C compiler raise; the files of an earlier build are
    removed first, so a failed build leaves the modules pure.
    """
    from mypyc.build import mypycify  # build-time only: mypy is a test dependency

    # setuptools has no type stubs; what is used of it is two calls.
    setuptools: Any = importlib.import_module("setuptools")
    build_ext: Any = importlib.import_module("setuptools.command.build_ext").build_ext

    root = _root()
    clean()
    sources = _native.source_files(root)
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="ocapn-mypyc-") as tmp:
        os.chdir(root)  # mypyc names modules from paths relative to the package root
        try:
            extensions = mypycify(
                [str(path.relative_to(root)) for path in sources],
                opt_level="3",
                group_name=_native.GROUP,
                target_dir=str(Path(tmp) / "c"),
                verbose=verbose,
            )
            dist = setuptools.Distribution({"name": "ocapn-native", "ext_modules": extensions})
            command = build_ext(dist)
            command.inplace = True
            command.build_temp = str(Path(tmp) / "temp")
            command.build_lib = str(Path(tmp) / "lib")
            command.ensure_finalized()
            command.run()
        finally:
            os.chdir(cwd)
    made = [path for path in _native.compiled_files(root) if path.exists()]
    _native.write_manifest(root)
    return [*made, root / _native.MANIFEST]


def main(argv: list[str] | None = None) -> int:
    """``python -m ocapn.compile [build|status|clean]``."""
    args = sys.argv[1:] if argv is None else argv
    what = args[0] if args else "build"
    if what == "clean":
        for path in clean():
            print(f"removed {path}")
        return 0
    if what == "status":
        print(_native.describe())
        return 0
    if what != "build":
        print("usage: python -m ocapn.compile [build|status|clean]", file=sys.stderr)
        return 2
    try:
        made = build(verbose="-v" in args)
    except (Exception, SystemExit) as exc:  # setuptools reports compiler failures as SystemExit
        clean()
        print(f"compiling failed ({type(exc).__name__}: {exc}); the modules stay pure Python")
        return 1
    for path in made:
        print(f"built {path}")
    return 0


if __name__ == "__main__":
    if shutil.which("cc") is None and "CC" not in os.environ:
        print("note: no C compiler named cc on PATH; mypyc will probably fail", file=sys.stderr)
    sys.exit(main())
