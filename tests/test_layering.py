"""DESIGN.md's layering: a package imports only the packages below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["captp", "ocapn", "netlayers", "interop"]  # each may import those before it
# The `ocapn` command is a program on top of every layer, not part of the library.
PROGRAMS = {"ocapn/cli.py"}
# Imports that cross a layer at run time only, inside a function, never when
# the package is imported.  The confined worker's channel uses the OCapN codec
# (spec-notes/0034-confinement.md says why); this is the one place it does.
RUNTIME_EDGES = {"captp/confine/_channel.py": {"ocapn"}}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_layer_above_it(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            imported_packages(path) & above - RUNTIME_EDGES.get(str(path.relative_to(ROOT)), set())
        )
        for path in sorted((ROOT / layer).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in PROGRAMS and "node_modules" not in path.parts
    }
    assert {k: v for k, v in offenders.items() if v} == {}


# Third-party packages the library may import: its declared dependencies, and
# trio, which is imported only when code is already running under trio
# (wsproto: the websocket netlayer; noise, from noiseprotocol: the np netlayer).
RUNTIME_DEPENDENCIES = {"anyio", "cryptography", "trio", "typing_extensions", "wsproto", "noise"}
# pytest fixtures for users' test suites: imported only by those suites.
TEST_PLUGINS = {
    "netlayers/pytest_plugin.py": {"pytest"},
    "netlayers/pytest_asyncio_plugin.py": {"pytest", "pytest_asyncio"},
}
# Optional packages, used only when installed (the import is guarded).
OPTIONAL = {
    "captp/confine/_worker.py": {"uvloop"},  # a compartment worker's loop (spec-notes/0034)
    "ocapn/compile.py": {"mypyc"},  # the optional compiled build, when run (spec-notes/0040)
    "captp/_typing.py": {"mypy_extensions"},  # mypyc's class options, with a fallback (0040)
}


@pytest.mark.parametrize("layer", LAYERS)
def test_the_library_imports_only_its_declared_dependencies(layer: str) -> None:
    import sys

    local = set(LAYERS)
    stdlib = set(sys.stdlib_module_names)
    found = {
        str(path.relative_to(ROOT)): sorted(
            imported_packages(path) - local - stdlib - RUNTIME_DEPENDENCIES - {"__future__"}
            - TEST_PLUGINS.get(str(path.relative_to(ROOT)), set())
            - OPTIONAL.get(str(path.relative_to(ROOT)), set())
        )
        for path in sorted((ROOT / layer).rglob("*.py"))
        if "node_modules" not in path.parts
    }
    assert {k: v for k, v in found.items() if v} == {}
