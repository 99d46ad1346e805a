"""The training loop: the schedule, learning at all, exact resumption, and the resumable state file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spikebottlenet.shared.backbones import SpikingResNetConfig
from spikebottlenet.shared.backbones.spiking_backbone import SpikingBackbone
from spikebottlenet.training import trainer
from spikebottlenet.training.datasets import Augmentation, Dataset
from spikebottlenet.training.recipes import damp_residual_branches
from spikebottlenet.training.resume import ResumeError, load_train_state, save_train_state
from spikebottlenet.training.runtime import Runtime
from spikebottlenet.training.trainer import TrainConfig, fit, lr_at, make_optimizer
from tests.training.conftest import TINY_TRAIN, WIDTH


def tiny_model(seed: int = 0) -> SpikingBackbone:
    torch.manual_seed(seed)
    model = SpikingBackbone(SpikingResNetConfig(width_multiplier=WIDTH, num_classes=10), time_steps=1)
    damp_residual_branches(model)
    return model


def test_lr_warms_up_linearly_then_decays_to_zero() -> None:
    lrs = [lr_at(step, total_steps=100, warmup_steps=10, peak=1.0) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # cosine: never increases after warmup
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_a_few_steps_lower_the_loss(tiny_digits: Dataset, cpu: Runtime) -> None:
    model = tiny_model()
    data = dataclasses.replace(tiny_digits, augmentation=Augmentation(padding=0, hflip=False))
    images, labels = data.normalize(data.train.images), data.train.labels

    def loss() -> float:
        model.train()  # batch statistics: the loss the optimizer sees, without augmentation
        with torch.no_grad():
            return F.cross_entropy(model(images), labels).item()

    before = loss()
    fit(model, data, dataclasses.replace(TINY_TRAIN, epochs=4, lr=1e-2), cpu)  # 8 steps
    assert loss() < before - 0.1


def test_an_interrupted_run_resumes_exactly(
    tiny_digits: Dataset, cpu: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(TINY_TRAIN, epochs=2)
    reference = tiny_model()
    fit(reference, tiny_digits, config, cpu)

    state = tmp_path / "run.train-state.safetensors"
    evaluate, calls = trainer.evaluate, []

    def evaluate_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # during epoch 2's evaluation: its state is never written
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", evaluate_then_crash)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), tiny_digits, config, cpu, state_path=state)
    monkeypatch.setattr(trainer, "evaluate", evaluate)

    resumed = tiny_model(seed=1)  # different initial weights: everything must come from the state
    history = fit(resumed, tiny_digits, config, cpu, state_path=state)
    assert [h["epoch"] for h in history] == [1, 2]
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_refuses_the_state_of_a_different_run(tiny_digits: Dataset, cpu: Runtime, tmp_path: Path) -> None:
    state = tmp_path / "run.train-state.safetensors"
    fit(tiny_model(), tiny_digits, TINY_TRAIN, cpu, state_path=state)
    with pytest.raises(ResumeError, match=r"differs in: train\.lr\)"):
        fit(tiny_model(), tiny_digits, dataclasses.replace(TINY_TRAIN, lr=1e-4), cpu, state_path=state)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_train_state_round_trips_optimizer_and_weights(optimizer: str, tmp_path: Path) -> None:
    model = tiny_model()
    opt = make_optimizer(model, TrainConfig(optimizer=optimizer))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = tmp_path / "state.safetensors"
    save_train_state(path, model, opt, scaler, run={"a": 1}, progress={"history": [{"epoch": 1}]})

    restored = tiny_model(seed=1)
    restored_opt = make_optimizer(restored, TrainConfig(optimizer=optimizer))
    progress = load_train_state(path, restored, restored_opt, scaler, run={"a": 1})
    assert progress == {"history": [{"epoch": 1}]}
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved, loaded = opt.state_dict(), restored_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, values in saved["state"].items():
        for key, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][index][key])), (index, key)
