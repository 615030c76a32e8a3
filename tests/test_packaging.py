"""The wheel holds what a user needs, and the version is written in one place."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ocapn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_the_three_library_packages_and_not_the_interop_harness(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"captp", "ocapn", "netlayers"}
    for package in ("captp", "ocapn", "netlayers"):
        assert f"{package}/py.typed" in names  # type information ships
    assert "ocapn/persist/__init__.py" in names
    assert "netlayers/testing.py" in names
    assert not [n for n in names if "node_modules" in n or n.endswith((".js", ".json"))]


def test_the_wheel_version_is_the_package_version(wheel: zipfile.ZipFile) -> None:
    (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(meta_name))
    assert meta["Name"] == "ocapn-python"
    assert meta["Version"] == ocapn.__version__
    (entry_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "ocapn = ocapn.cli:main" in wheel.read(entry_name).decode()


def test_the_version_is_written_once_and_the_changelog_names_it() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {ocapn.__version__}" in changelog
