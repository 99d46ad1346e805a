"""``sbn edge`` and ``sbn device`` started on a bad checkpoint exit non-zero with one clear line, before
serving anything. (load_checkpoint's own refusals are tested in tests/shared/test_checkpoint.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from spikebottlenet.shared.processes import free_port
from tests.conftest import calibrated_model
from tests.shared.test_checkpoint import TouchOnUnpickle, tensor_span

# name: (what the one line must say, for the edge and the device alike)
BAD = {
    "weights changed after saving": "weights do not match their recorded digest (modified after saving?)",
    "a pickle": "is not a safetensors file",
    "truncated": "is not a safetensors file (or it is truncated)",
}
FIRST_WORDS = {"edge": "cannot load the tail:", "device": "cannot start the device:"}


def make_bad(kind: str, good: Path, folder: Path) -> Path:
    path = folder / f"{kind.replace(' ', '-')}.safetensors"
    if kind == "weights changed after saving":  # one bit of the head and one of the tail: both halves refuse
        data = bytearray(good.read_bytes())
        for name in ("head.stem.conv.weight", "tail.classifier.fc.bias"):
            data[tensor_span(good, name)[0]] ^= 0x01
        path.write_bytes(bytes(data))
    elif kind == "a pickle":  # with a payload that would leave a trace if unpickled
        torch.save({"state": calibrated_model(8).state_dict(), "payload": TouchOnUnpickle(folder / "unpickled")}, path)
    else:
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="module")
def outcomes(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[tuple[str, str], subprocess.CompletedProcess[str]], Path]:
    """{(command, bad kind): its finished process}, all started at once; and their folder."""
    folder = tmp_path_factory.mktemp("bad-checkpoints")
    bad = {kind: make_bad(kind, checkpoint, folder) for kind in BAD}
    processes = {
        (command, kind): subprocess.Popen(
            [sys.executable, "-m", "spikebottlenet", command, "--checkpoint", str(path), "--port", str(free_port())],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in FIRST_WORDS
        for kind, path in bad.items()
    }
    finished = {}
    for key, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        finished[key] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return finished, folder


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("command", FIRST_WORDS)
def test_a_bad_checkpoint_stops_the_process_with_one_clear_line(
    outcomes: tuple[dict, Path], command: str, kind: str, report: Callable[[str], None]
) -> None:
    finished, folder = outcomes
    result = finished[command, kind]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and not result.stdout
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"ERROR {FIRST_WORDS[command]}" in lines[0] and BAD[kind] in lines[0], lines[0]
    assert not (folder / "unpickled").exists()
    said = lines[0].split(" ERROR ")[1].replace(str(folder) + "/", "")
    report(f"bad checkpoint ({kind}): sbn {command} exited 1 before serving, with the one line: {said}")
