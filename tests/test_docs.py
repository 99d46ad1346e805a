"""The documentation: its generated parts say what the code says, and the site builds offline.

docs/settings.md is written by docs/gen_settings.py from the settings classes, and the blocks of command
output in README.md and docs/ by docs/gen_outputs.py from running the commands; both are committed. These
tests regenerate them and fail when the committed text differs (rerun the script named in the failure).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def docs_script(name: str) -> ModuleType:
    """One of the generator scripts in docs/ (a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_settings() -> ModuleType:
    pytest.importorskip("ray.serve", reason="the settings page covers sbn serve-ray: needs the [ray] extra")
    return docs_script("gen_settings")


def test_the_settings_page_is_generated_from_the_settings_classes(gen_settings: ModuleType) -> None:
    assert (DOCS / "settings.md").read_text() == gen_settings.render(), (
        "docs/settings.md is out of date: run python docs/gen_settings.py"
    )


def test_the_settings_page_has_every_variable_with_its_description(gen_settings: ModuleType) -> None:
    # read from the committed page and from the classes themselves, not through the generator's formatting
    from pydantic_settings import BaseSettings

    def subclasses(cls: type) -> set[type]:
        return {sub for direct in cls.__subclasses__() for sub in {direct, *subclasses(direct)}}

    expected = {
        f"{cls.model_config['env_prefix']}{name.upper()}": field.description
        for cls in subclasses(BaseSettings)
        if cls.__module__.startswith("spikebottlenet.") and cls.model_config.get("env_prefix")
        for name, field in cls.model_fields.items()
    }
    rows = [
        [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]  # cells: split at unescaped pipes
        for line in (DOCS / "settings.md").read_text().splitlines()
        if line.startswith("| `SBN_")
    ]
    documented = {
        variable.strip("`"): meaning.replace("\\|", "|").replace("&lt;", "<").replace("&gt;", ">")
        for variable, _type, _default, meaning in rows
    }
    assert len(rows) == len(documented), "a variable is documented twice"
    assert documented == expected


@pytest.fixture(scope="module")
def gen_outputs() -> ModuleType:
    return docs_script("gen_outputs")


def test_output_blocks_show_what_their_commands_print(gen_outputs: ModuleType) -> None:
    run = functools.cache(gen_outputs.run_sbn)
    shown = set()
    for page in gen_outputs.pages():
        text = page.read_text()
        shown.update(gen_outputs.commands(text))
        assert gen_outputs.render(text, run) == text, (
            f"{page.relative_to(ROOT)}: an output block is out of date: run python docs/gen_outputs.py"
        )
    assert {"sbn report --preset paper", "sbn report --compare", "sbn models"} <= shown


def test_an_output_block_is_replaced_by_the_command_and_its_output(gen_outputs: ModuleType) -> None:
    def page(body: str) -> str:
        return f"intro\n<!-- output: sbn models -->\n```text\n$ sbn models\n{body}\n```\n<!-- /output -->\nrest\n"

    # what the command prints replaces the old body, its trailing blanks dropped; the text around stays
    assert gen_outputs.render(page("old  table"), lambda command: f"{command} now  \n") == page("sbn models now")


def test_output_blocks_run_sbn_commands_only(gen_outputs: ModuleType) -> None:
    with pytest.raises(ValueError, match="sbn commands only"):
        gen_outputs.run_sbn("rm -rf site")


# Elements that make a browser fetch what their src or href names (an <a> only links)
ASSET = re.compile(
    r"<(?:script|link|img|iframe|source|audio|video|embed|track|object)\b[^>]*?"
    r"\b(?:src|href|data)=[\"']?((?:https?:)?//[^\"' >]+)",
    re.I,
)
CSS_IMPORT = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"'])((?:https?:)?//[^\"')]+)", re.I)


def test_the_site_builds_strict_and_loads_nothing_from_another_host(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra (part of dev) builds the site")
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 10
    fetched = {f"{path.relative_to(site)}: {url}" for path in pages for url in ASSET.findall(path.read_text())}
    fetched |= {
        f"{path.relative_to(site)}: {url}"
        for path in site.rglob("*.css")
        for url in CSS_IMPORT.findall(path.read_text())
    }
    assert not fetched
    # the API pages are rendered from the code, not left as ::: directives
    assert 'id="spikebottlenet.sbn.client.DeviceClient"' in (site / "api" / "python" / "index.html").read_text()


def test_the_asset_check_finds_what_a_page_would_fetch() -> None:
    page = (
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        '<script src="//cdn.example.org/mermaid.js"></script><a href="https://example.org/">a link</a>'
    )
    assert ASSET.findall(page) == ["https://fonts.googleapis.com/css?family=Roboto", "//cdn.example.org/mermaid.js"]
    assert CSS_IMPORT.findall('@import "https://x.org/a.css"; b { background: url(//x.org/b.png) }') == [
        "https://x.org/a.css",
        "//x.org/b.png",
    ]
