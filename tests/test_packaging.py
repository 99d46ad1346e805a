"""The wheel installs one name, ``spikebottlenet``, holding every package folder of the repository and nothing else.

The wheel is built by pip from the working tree, as ``pip install .`` (and the Docker image) builds it, and is then
read as the zip archive it is: the list of folders to expect comes from the file system, not from pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The repository's folders and the subpackage each becomes; bench/ and tests/ stay out of the wheel.
INSTALLED_FOLDERS = {
    "shared": "spikebottlenet/shared",
    "device": "spikebottlenet/device",
    "edge": "spikebottlenet/edge",
    "training": "spikebottlenet/training",
    "sbn": "spikebottlenet/sbn",
    "spikebottlenet": "spikebottlenet",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: setuptools is already here, and the build must not reach for an index
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (path,) = out.glob("spikebottlenet-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_one_top_level_name(wheel: zipfile.ZipFile) -> None:
    (top_level,) = [n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["spikebottlenet"]
    tops = {PurePosixPath(n).parts[0] for n in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"spikebottlenet"}


def test_every_package_folder_is_in_the_wheel_under_its_subpackage(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    expected = set()
    for folder, package in INSTALLED_FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            for module in init.parent.glob("*.py"):
                expected.add(f"{package}/{module.relative_to(ROOT / folder).as_posix()}")
    assert expected, "no package folders found"
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith(("bench/", "tests/", "spikebottlenet/bench", "spikebottlenet/tests"))]


def test_the_embedded_models_and_the_web_page_are_package_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    models = {p.relative_to(ROOT).as_posix() for p in (ROOT / "shared" / "models").rglob("*.safetensors")}
    assert models and {f"spikebottlenet/{m}" for m in models} <= names
    page = {p.relative_to(ROOT).as_posix() for p in (ROOT / "device" / "web" / "static").iterdir()}
    assert page and {f"spikebottlenet/{p}" for p in page} <= names


def test_the_console_script_runs_the_namespaced_cli(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "sbn = spikebottlenet.sbn.cli:main" in wheel.read(entry_points).decode().splitlines()
