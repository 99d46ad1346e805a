"""The package laid out as it is installed, for the tools that read sources without installing them.

pyproject.toml maps the repository's folders to subpackages (``package-dir``: shared/ is spikebottlenet.shared,
sbn/ is spikebottlenet.sbn, ...), so no folder of the repository is laid out as the package is. mkdocstrings'
Python handler (griffe) and mypy both look for that layout; this file makes it in build/packages/spikebottlenet,
of symbolic links that follow pyproject.toml's mapping. mkdocs runs it as a hook before each build (mkdocs.yml
points the handler's ``paths`` there), ``make typecheck`` runs it as a script before mypy (pyproject.toml's
``mypy_path`` is the same folder).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority

PACKAGE = "spikebottlenet"
LAYOUT = Path("build/packages")  # relative to the repository root, where mkdocs.yml and pyproject.toml are


def make_layout(root: Path) -> Path:
    """Makes the layout under ``root``, the repository, afresh; returns the package's folder in it."""
    package_dir = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = root / LAYOUT / PACKAGE
    shutil.rmtree(top, ignore_errors=True)  # removes the links, never what they point to
    top.mkdir(parents=True)
    for entry in (root / PACKAGE).iterdir():  # the root package's own folder: __init__.py, v1/, ...
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for package, folder in package_dir.items():  # spikebottlenet.shared -> shared/, ...
        (top / package.removeprefix(f"{PACKAGE}.")).symlink_to(root / folder)
    return top


@event_priority(100)  # before any plugin reads a page
def on_config(config: MkDocsConfig) -> None:
    make_layout(Path(config.config_file_path).parent)


if __name__ == "__main__":
    make_layout(Path(__file__).resolve().parents[1])
