"""Which build of the codec's and wire's hot modules runs: compiled (mypyc) or pure Python.

``python -m ocapn.compile`` compiles the modules in :data:`MODULES` in place:
each ``.py`` gets a ``.so`` beside it, which Python's import system prefers.
This module, imported first by :mod:`ocapn`, decides once per process:

* compiled, if every module's ``.so`` for this interpreter exists and every
  source is unchanged since the build (the manifest ``_native.sums`` holds
  their sizes, times and CRC-32s);
* pure Python otherwise, or when ``OCAPN_PURE`` is set to anything but
  ``""`` / ``"0"``: an import hook then loads the ``.py`` files even where
  ``.so`` files exist.  A stale build warns once (``RuntimeWarning``).

:data:`COMPILED` and :data:`REASON` say which and why (also as
``ocapn.syrup.COMPILED`` and ``ocapn.cbor.COMPILED``).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["COMPILED", "MANIFEST", "MODULES", "REASON", "compiled_files", "describe"]

MODULES: Final = ("_syrup_encode", "_syrup_decode", "_syrup_stream", "_cbor_codec", "wire")
"""The modules of :mod:`ocapn` that ``python -m ocapn.compile`` compiles."""

MANIFEST: Final = "_native.sums"
"""The build's record of its sources (one line each: name, size, mtime_ns, CRC-32).

A CRC, not a cryptographic hash: it notices edits, and ``zlib`` imports in a
fraction of the time ``hashlib`` takes (this runs on every ``import ocapn``)."""

_GROUP_LIB: Final = "_codec_native__mypyc"
_SUFFIX: Final = importlib.machinery.EXTENSION_SUFFIXES[0]
_PACKAGE: Final = os.path.dirname(os.path.abspath(__file__))


def compiled_files(package: str | Path) -> list[Path]:
    """Every file a build makes in ``package`` (the ``.so`` files for this Python, the manifest)."""
    from pathlib import Path

    base = Path(package)
    names = [*MODULES, _GROUP_LIB]
    return [base / f"{name}{_SUFFIX}" for name in names] + [base / MANIFEST]


def _checksum(path: str) -> str:
    import zlib

    with open(path, "rb") as f:
        return f"{zlib.crc32(f.read()):08x}"


def write_manifest(package: str | Path, sources: Iterable[Path]) -> None:
    """Record the sources a build compiled, so that a later edit is noticed."""
    lines = []
    for path in sources:
        st = path.stat()
        lines.append(f"{path.stem} {st.st_size} {st.st_mtime_ns} {_checksum(str(path))}\n")
    with open(os.path.join(package, MANIFEST), "w", encoding="utf-8") as f:
        f.write("".join(lines))


def _stale_sources(package: str) -> list[str] | None:
    """Sources changed since the build (empty: none), or None if there is no manifest."""
    try:
        with open(os.path.join(package, MANIFEST), encoding="utf-8") as f:
            entries = [line.split() for line in f if line.strip()]
    except OSError:
        return None
    recorded = {entry[0]: entry[1:] for entry in entries if len(entry) == 4}
    stale = []
    for name in MODULES:
        source = os.path.join(package, f"{name}.py")
        entry = recorded.get(name)
        try:
            st = os.stat(source)
        except OSError:
            stale.append(name)
            continue
        if entry is None:
            stale.append(name)
        elif entry[0] == str(st.st_size) and entry[1] == str(st.st_mtime_ns):
            continue  # unchanged by its size and time: no need to read it
        elif _checksum(source) != entry[2]:
            stale.append(name)
    return stale


class _PureFinder:
    """An import hook that loads the pure-Python source of the compiled modules."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        source = self.sources.get(name)
        if source is None:
            return None
        loader = importlib.machinery.SourceFileLoader(name, source)
        spec = importlib.machinery.ModuleSpec(name, loader, origin=source)
        spec.has_location = True  # sets __file__, as for any source module
        return spec


def _decide(package: str, pure_asked: bool) -> tuple[bool, str, bool]:
    """(compiled?, why, whether compiled files exist that must be stepped around)."""
    built = [
        name
        for name in (*MODULES, _GROUP_LIB)
        if os.path.exists(os.path.join(package, f"{name}{_SUFFIX}"))
    ]
    if not built:
        return False, "pure Python (no compiled build; `python -m ocapn.compile` makes one)", False
    if pure_asked:
        return False, "pure Python (OCAPN_PURE is set)", True
    if len(built) < len(MODULES) + 1:
        missing = sorted({*MODULES, _GROUP_LIB} - set(built))
        return False, f"pure Python (the compiled build lacks {', '.join(missing)})", True
    stale = _stale_sources(package)
    if stale is None:
        return False, f"pure Python (the compiled build has no {MANIFEST})", True
    if stale:
        return False, f"pure Python (the compiled build is stale: {', '.join(stale)} changed)", True
    return True, "compiled with mypyc", False


def _select(package: str, pure_asked: bool) -> tuple[bool, str]:
    """Decide, and make Python load the pure modules if compiled ones are there but not wanted."""
    compiled, reason, step_around = _decide(package, pure_asked)
    if step_around:
        if not pure_asked and "ocapn.compile" not in sys.orig_argv:
            warnings.warn(
                f"ocapn: {reason}; run `python -m ocapn.compile` to rebuild it, or"
                " `python -m ocapn.compile clean` to remove it",
                RuntimeWarning,
                stacklevel=2,
            )
        sources = {f"ocapn.{name}": os.path.join(package, f"{name}.py") for name in MODULES}
        sys.meta_path.insert(0, _PureFinder(sources))
    return compiled, reason


COMPILED, REASON = _select(_PACKAGE, os.environ.get("OCAPN_PURE", "") not in ("", "0"))
"""Whether the compiled modules are in use in this process, and why (or why not)."""


def describe() -> str:
    """One line: the build in use and why, and where the modules come from."""
    import importlib.util

    # Where the import system loads them from (without importing them here:
    # this module is the codec's chooser, below the codec and the wire).
    names = ("_syrup_decode", "_cbor_codec", "wire")
    specs = [importlib.util.find_spec(f"ocapn.{name}") for name in names]
    files = [(spec.origin if spec is not None else None) or "?" for spec in specs]
    return f"{REASON}: {', '.join(os.path.basename(f) for f in files)}"
