"""Rewrites the blocks of command output in README.md and docs/ from running the commands.

    python docs/gen_outputs.py

A block is marked in the Markdown by the command it shows:

    <!-- output: sbn models -->
    ```text
    $ sbn models
    ...what the command printed...
    ```
    <!-- /output -->

and everything between the two comments is replaced by the command and what it prints now. Only `sbn`
commands that are fast, deterministic and need no running service belong in such blocks (`sbn report`,
`sbn models`); output that depends on timing is described in prose or shown as an example instead.
tests/test_docs.py reruns every block's command and fails when a committed block differs.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?P<open><!-- output: (?P<command>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- /output -->)", re.S)


def pages() -> list[Path]:
    """The Markdown files that may hold output blocks."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def run_sbn(command: str) -> str:
    """What ``command`` (``sbn ...``) prints, run as ``python -m spikebottlenet ...`` with no SBN_* settings set."""
    program, *args = shlex.split(command)
    if program != "sbn":
        raise ValueError(f"an output block runs sbn commands only, not {command!r}")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SBN_")}
    done = subprocess.run(
        [sys.executable, "-m", "spikebottlenet", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        raise RuntimeError(f"{command!r} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def render(text: str, run: Callable[[str], str]) -> str:
    """``text`` with every output block holding what ``run`` returns for its command."""

    def block(match: re.Match[str]) -> str:
        printed = "\n".join(line.rstrip() for line in run(match["command"]).rstrip("\n").split("\n"))
        return f"{match['open']}```text\n$ {match['command']}\n{printed}\n```\n{match['close']}"

    return BLOCK.sub(block, text)


def commands(text: str) -> list[str]:
    return [match["command"] for match in BLOCK.finditer(text)]


if __name__ == "__main__":
    run = functools.cache(run_sbn)  # a command shown in several blocks runs once
    for page in pages():
        text = page.read_text()
        if commands(text) and (new := render(text, run)) != text:
            page.write_text(new)
            print(f"rewrote {page.relative_to(ROOT)}")
