"""``sbn export``'s refusals, for both formats, and ``sbn export verify FILE``: an exported head (ONNX or NIR) is
checked against a checkpoint before anyone deploys it beside an edge serving that checkpoint. Another model's head is
refused naming both models; a file that is no exported head, by its suffix or its content, is refused in one line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from spikebottlenet.sbn.cli import main
from spikebottlenet.shared.checkpoint_metadata import DEFAULT_MODEL_DIR, default_checkpoint, read_checkpoint_info
from tests.conftest import exported_demo_head

pytestmark = pytest.mark.slow  # the ONNX export traces the head: about 40 s


@pytest.mark.parametrize("format", ["onnx", "nir"])
def test_a_head_passes_against_its_checkpoint_and_is_refused_against_another_naming_both(
    format: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, path = exported_demo_head(format, "spiking_resnet50", 8, tmp_path)
    capsys.readouterr()
    assert main(["export", "verify", str(path), "--checkpoint", str(checkpoint)]) == 0
    # RB8: T x C' x H' x W' = 4 x 8 x 8 x 8 bits, 32 images; a few may differ by rounding, on another CPU
    assert re.search(
        r"check: \w+ against the torch head of model \w{12} on 32 random images: \d+ of 65,536 bits",
        capsys.readouterr().out,
    )

    other = default_checkpoint("spiking_resnet50", 16)
    assert main(["export", "verify", str(path), "--checkpoint", str(other)]) == 1
    error = capsys.readouterr().err
    for model in (checkpoint, other):
        assert read_checkpoint_info(model).fingerprint[:12] in error


@pytest.mark.parametrize("name", ["head.onnx", "head.nir", "head.txt"])
def test_what_is_not_an_exported_head_is_refused_in_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_head = tmp_path / name
    not_a_head.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really" * 20)
    assert main(["export", "verify", str(not_a_head)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error and str(not_a_head) in error


@pytest.mark.parametrize("format", ["onnx", "nir"])
def test_a_backbone_checkpoint_cannot_be_exported(
    format: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backbone = next((DEFAULT_MODEL_DIR / "backbones").glob("*.safetensors"))
    out = tmp_path / f"x.{format}"
    assert main(["export", format, "--checkpoint", str(backbone), "--out", str(out)]) == 1
    assert "no bottleneck" in capsys.readouterr().err
    assert not out.exists()


# a package each format's export needs, and the extra that installs it
@pytest.mark.parametrize(("format", "module"), [("onnx", "onnxscript"), ("nir", "snntorch")])
def test_without_the_extra_the_command_says_what_to_install(
    format: str, module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    out = tmp_path / f"x.{format}"
    assert main(["export", format, "--out", str(out)]) == 1
    assert f"pip install 'spikebottlenet[{format}]'" in capsys.readouterr().err
    assert not out.exists()
