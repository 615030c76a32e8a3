"""Which build of the hot modules runs: compiled (mypyc) or pure Python.

``python -m ocapn.compile`` compiles the modules in :data:`MODULES` (the
engine's here in :mod:`captp`, the codec's and the wire's in :mod:`ocapn`, the
asyncio socket channel in :mod:`netlayers`) in place: each ``.py`` gets a
``.so`` beside it, which Python's import system prefers. This module, imported
first by :mod:`captp` (the lowest layer, so a process that imports only
:mod:`captp` chooses too), decides once per process, for all of them together:

* compiled, if every module's ``.so`` for this interpreter exists and every
  source is unchanged since the build (the manifest ``captp/_native.sums``
  holds their sizes, times and CRC-32s);
* pure Python otherwise, or when ``OCAPN_PURE`` is set to anything but
  ``""`` / ``"0"``: an import hook then loads the ``.py`` files even where
  ``.so`` files exist.  A stale build warns once (``RuntimeWarning``).

A compiled module that no build makes now (an older build's, beside its
source) is always stepped around, with a warning; ``python -m ocapn.compile
clean`` removes it.

:data:`COMPILED` and :data:`REASON` say which and why (also as
``ocapn.syrup.COMPILED`` and ``ocapn.cbor.COMPILED``).  A compartment's
worker, whose environment is empty, is told the host's build on its command
line (``captp.confine``).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "COMPILED",
    "GROUP",
    "MANIFEST",
    "MODULES",
    "PURE_ENV",
    "REASON",
    "compiled_files",
    "describe",
    "interpreted",
    "leftover_files",
    "pure_requested",
    "source_files",
    "write_manifest",
]

MODULES: Final = (
    "captp._passable",
    "captp.messages",
    "captp._eventual",
    "captp.engine",
    "captp._connection",
    "ocapn._syrup_encode",
    "ocapn._syrup_decode",
    "ocapn._syrup_stream",
    "ocapn._cbor_codec",
    "ocapn.wire",
    "netlayers.asyncio_tcp",
)
"""The modules ``python -m ocapn.compile`` compiles, by qualified name, lowest layer first."""

GROUP: Final = "captp._native_lib"
"""The mypyc group: one shared library, ``captp/_native_lib__mypyc*.so``, holds the code
of every module (so calls between them are direct C calls); it lives in :mod:`captp`,
the lowest layer, which every compiled module's package imports anyway."""

MANIFEST: Final = "captp/_native.sums"
"""The build's record of its sources, relative to the directory holding the packages
(one line each: qualified name, size, mtime_ns, CRC-32).

A CRC, not a cryptographic hash: it notices edits, and ``zlib`` imports in a
fraction of the time ``hashlib`` takes (this runs on every ``import captp``)."""

PURE_ENV: Final = "OCAPN_PURE"
"""The environment variable that asks for pure Python (anything but ``""`` / ``"0"``)."""

_SUFFIX: Final = importlib.machinery.EXTENSION_SUFFIXES[0]
_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _relative(name: str) -> str:
    return name.replace(".", os.sep)


def source_files(root: str | Path) -> list[Path]:
    """The sources of :data:`MODULES` under ``root`` (the directory holding the packages)."""
    from pathlib import Path

    return [Path(root) / f"{_relative(name)}.py" for name in MODULES]


def compiled_files(root: str | Path) -> list[Path]:
    """Every file a build makes under ``root``: the ``.so`` files for this Python, the manifest."""
    from pathlib import Path

    base = Path(root)
    names = [*MODULES, f"{GROUP}__mypyc"]
    return [base / f"{_relative(name)}{_SUFFIX}" for name in names] + [base / MANIFEST]


def _strays(root: str) -> dict[str, str]:
    """Compiled modules beside a source that are not in :data:`MODULES` (an older build's):
    qualified name -> source.  The import system would load them; they are stepped around."""
    strays = {}
    for package in sorted({name.partition(".")[0] for name in MODULES}):
        directory = os.path.join(root, package)
        try:
            files = os.listdir(directory)
        except OSError:
            continue
        for file in files:
            if file.endswith(_SUFFIX):
                stem = file[: -len(_SUFFIX)]
                name = f"{package}.{stem}"
                source = os.path.join(directory, f"{stem}.py")
                if name not in MODULES and os.path.exists(source):
                    strays[name] = source
    return strays


def leftover_files(root: str | Path) -> list[Path]:
    """Compiled files under ``root`` that no build of :data:`MODULES` makes (an older
    build's modules, group libraries and manifest), for ``python -m ocapn.compile clean``."""
    from pathlib import Path

    base = Path(root)
    mine = set(compiled_files(base))
    found = [base / f"{_relative(name)}{_SUFFIX}" for name in _strays(str(base))]
    for package in sorted({name.partition(".")[0] for name in MODULES}):
        found += sorted((base / package).glob(f"*__mypyc{_SUFFIX}"))
        found.append(base / package / "_native.sums")
    return [path for path in found if path not in mine and path.exists()]


def _checksum(path: str) -> str:
    import zlib

    with open(path, "rb") as f:
        return f"{zlib.crc32(f.read()):08x}"


def write_manifest(root: str | Path) -> None:
    """Record the sources a build compiled, so that a later edit is noticed."""
    lines = []
    for name, path in zip(MODULES, source_files(root), strict=True):
        st = path.stat()
        lines.append(f"{name} {st.st_size} {st.st_mtime_ns} {_checksum(str(path))}\n")
    with open(os.path.join(root, MANIFEST), "w", encoding="utf-8") as f:
        f.write("".join(lines))


def _stale_sources(root: str) -> list[str] | None:
    """Sources changed since the build (empty: none), or None if there is no manifest."""
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            entries = [line.split() for line in f if line.strip()]
    except OSError:
        return None
    recorded = {entry[0]: entry[1:] for entry in entries if len(entry) == 4}
    stale = []
    for name in MODULES:
        source = os.path.join(root, f"{_relative(name)}.py")
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
        return None if source is None else _source_spec(name, source)


def _source_spec(name: str, source: str) -> ModuleSpec:
    """How to load the Python file ``source`` as module ``name``."""
    loader = importlib.machinery.SourceFileLoader(name, source)
    spec = importlib.machinery.ModuleSpec(name, loader, origin=source)
    spec.has_location = True  # sets __file__, as for any source module
    return spec


def _decide(root: str, pure_asked: bool) -> tuple[bool, str, bool]:
    """(compiled?, why, whether compiled files exist that must be stepped around)."""
    wanted = [*MODULES, f"{GROUP}__mypyc"]
    built = [n for n in wanted if os.path.exists(os.path.join(root, f"{_relative(n)}{_SUFFIX}"))]
    if not built:
        return False, "pure Python (no compiled build; `python -m ocapn.compile` makes one)", False
    if pure_asked:
        return False, f"pure Python ({PURE_ENV} is set)", True
    if len(built) < len(wanted):
        missing = [name for name in wanted if name not in built]
        return False, f"pure Python (the compiled build lacks {', '.join(missing)})", True
    stale = _stale_sources(root)
    if stale is None:
        return False, f"pure Python (the compiled build has no {MANIFEST})", True
    if stale:
        return False, f"pure Python (the compiled build is stale: {', '.join(stale)} changed)", True
    return True, "compiled with mypyc", False


_finder: _PureFinder | None = None


def _select(root: str, pure_asked: bool) -> tuple[bool, str]:
    """Decide, and make Python load the pure modules if compiled ones are there but not wanted."""
    global _finder
    compiled, reason, step_around = _decide(root, pure_asked)
    strays = _strays(root)
    quiet = pure_asked or "ocapn.compile" in sys.orig_argv
    if step_around and not quiet:
        warnings.warn(
            f"captp: {reason}; run `python -m ocapn.compile` to rebuild it, or"
            " `python -m ocapn.compile clean` to remove it",
            RuntimeWarning,
            stacklevel=2,
        )
    if strays and not quiet:
        warnings.warn(
            f"captp: ignoring compiled modules no build makes now ({', '.join(sorted(strays))});"
            " `python -m ocapn.compile clean` removes them",
            RuntimeWarning,
            stacklevel=2,
        )
    if step_around or strays:
        sources = dict(strays)
        if step_around:
            sources.update({n: os.path.join(root, f"{_relative(n)}.py") for n in MODULES})
        _finder = _PureFinder(sources)
        sys.meta_path.insert(0, _finder)
    return compiled, reason


def pure_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` asks for pure Python (:data:`PURE_ENV`)."""
    return environ.get(PURE_ENV, "") not in ("", "0")


COMPILED, REASON = _select(_ROOT, pure_requested())
"""Whether the compiled modules are in use in this process, and why (or why not)."""


_twins: dict[str, ModuleType] = {}


def interpreted(name: str) -> ModuleType:
    """Module ``name`` as interpreted Python: itself if pure, else its source run once more.

    For the rare input a compiled module's strict types refuse but its source
    handles as it is (the Syrup parser reads ``bytes``; its source reads a
    ``memoryview`` alike).  The twin is loaded once, as ``<name>__interpreted``;
    what it shares with the compiled module (its imports) stays shared, and
    the classes it defines are its own.
    """
    if not COMPILED or name not in MODULES:
        return sys.modules[name]
    twin = _twins.get(name)
    if twin is None:
        import importlib.util

        twin_name = f"{name}__interpreted"
        spec = _source_spec(twin_name, os.path.join(_ROOT, f"{_relative(name)}.py"))
        loader = spec.loader
        assert loader is not None  # (_source_spec gives one)
        twin = importlib.util.module_from_spec(spec)
        sys.modules[twin_name] = twin  # while it runs, as for any import
        try:
            loader.exec_module(twin)
        except BaseException:
            del sys.modules[twin_name]
            raise
        _twins[name] = twin
    return twin


def _origin(name: str) -> str:
    """The file the import system loads ``name`` from, found without importing anything."""
    if _finder is not None and name in _finder.sources:
        return _finder.sources[name]
    package, _, module = name.rpartition(".")
    spec = importlib.machinery.PathFinder.find_spec(module, [os.path.join(_ROOT, package)])
    return (spec.origin if spec is not None else None) or "?"


def describe() -> str:
    """One line: the build in use and why, and where the modules come from."""
    return f"{REASON}: {', '.join(os.path.relpath(_origin(name), _ROOT) for name in MODULES)}"
