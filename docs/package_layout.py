"""mkdocs hook: the package laid out as it is installed, for mkdocstrings to read.

pyproject.toml maps the repository's folders to subpackages (``package-dir``: shared/ is spikebottlenet.shared,
sbn/ is spikebottlenet.sbn, ...), so no folder of the repository is laid out as the package is. mkdocstrings'
Python handler (griffe) reads sources without importing them and looks for that layout; this hook makes it before
each build in build/docs-packages/spikebottlenet, of symbolic links that follow pyproject.toml's mapping, and
mkdocs.yml points the handler there.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority

PACKAGE = "spikebottlenet"
LAYOUT = Path("build/docs-packages")  # relative to mkdocs.yml, as the handler's paths are


@event_priority(100)  # before any plugin reads a page
def on_config(config: MkDocsConfig) -> None:
    root = Path(config.config_file_path).parent
    package_dir = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = root / LAYOUT / PACKAGE
    shutil.rmtree(top, ignore_errors=True)  # removes the links, never what they point to
    top.mkdir(parents=True)
    for entry in (root / PACKAGE).iterdir():  # the root package's own folder: __init__.py, v1/, ...
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for package, folder in package_dir.items():  # spikebottlenet.shared -> shared/, ...
        (top / package.removeprefix(f"{PACKAGE}.")).symlink_to(root / folder)
