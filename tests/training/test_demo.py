"""``sbn train demo`` writes its checkpoints under the current directory unless told to install them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spikebottlenet import shared
from spikebottlenet.sbn.cli import main
from spikebottlenet.shared.backbones import BACKBONES
from spikebottlenet.shared.checkpoint_metadata import DEFAULT_MODEL_DIR
from spikebottlenet.training import cli as training_cli
from spikebottlenet.training.demo import DemoPlan, backbone_path

PACKAGE = Path(shared.__file__).resolve().parent


def demo_out(monkeypatch: pytest.MonkeyPatch, *options: str) -> Path:
    """The folder `sbn train demo OPTIONS` hands its split checkpoints to, training replaced by a stub
    (which, for --install, leaves a stand-in backbone where the demo pre-trains it)."""
    outs: list[Path] = []

    def record(
        runtime: object, work: Path, dataset: str, plan: DemoPlan, out: Path, restart: bool = False
    ) -> list[Path]:
        assert dataset == datasets.pop(0)
        outs.append(out)
        if "--install" in options:  # which copies the backbone: here a stand-in, in the test's --work folder
            assert "--work" in options, "a stub backbone must not land in the real runs/demo"
            work.mkdir(parents=True, exist_ok=True)
            backbone_path(work, dataset, plan.arch).write_bytes(b"backbone of " + plan.arch.encode())
        return []

    # the shipped models' dataset unless one is named
    datasets = [options[options.index("--dataset") + 1] if "--dataset" in options else "mnist"] * len(BACKBONES)

    monkeypatch.setattr(training_cli, "run_demo", record)
    threads = str(torch.get_num_threads())  # run() sets the thread count: leave it as the other tests have it
    assert main(["train", "demo", "--threads", threads, *options]) == 0
    assert len(set(outs)) == 1
    return outs[0]


def test_by_default_the_demo_writes_under_the_current_directory_not_into_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = demo_out(monkeypatch).resolve()
    assert out.is_relative_to(tmp_path) and not out.is_relative_to(PACKAGE)


def test_install_writes_into_the_package_and_out_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "package-backbones"
    monkeypatch.setattr(training_cli, "installed_backbone_path", lambda dataset, arch: installed / f"{dataset}_{arch}")
    assert demo_out(monkeypatch, "--install", "--work", str(tmp_path / "work")) == DEFAULT_MODEL_DIR
    # the backbones go with the split checkpoints
    assert sorted(p.name for p in installed.iterdir()) == sorted(f"mnist_{arch}" for arch in BACKBONES)
    assert (installed / "mnist_spiking_resnet50").read_bytes() == b"backbone of spiking_resnet50"
    assert demo_out(monkeypatch, "--out", str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"
    with pytest.raises(SystemExit):  # one or the other
        demo_out(monkeypatch, "--install", "--out", str(tmp_path))


def test_the_digits_demo_is_still_there_for_smoke_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo_out(monkeypatch, "--dataset", "digits", "--out", str(tmp_path)) == tmp_path
