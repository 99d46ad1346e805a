"""ModelSet on real heads (the test checkpoints): which model a request names, which ones ``auto`` may pick, what
the edge's GetModelInfo tells it, and the 422 for a model this device does not hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spikebottlenet.device.head_queue import HeadQueue, HeadThread
from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.device.model_set import ModelCosts, ModelSet, ServedModel, UnknownModel
from spikebottlenet.shared.batching import BatchPolicy
from spikebottlenet.shared.errors import ConfigError
from spikebottlenet.v1 import split_inference_pb2 as pb

RESNET, MOBILENET = "spiking_resnet50", "spiking_mobilenetv2"
HELD = [(RESNET, 8), (RESNET, 3), (MOBILENET, 8)]  # the default model first
# what the 422s list: every model held, in order
HOLDS = f"{RESNET} split_point=8 (RB8), {RESNET} split_point=3 (RB3), {MOBILENET} split_point=8 (IRB8)"


@pytest.fixture(scope="module")
def heads(calibrated_checkpoint: Callable[..., Path]) -> list[HeadRunner]:
    return [HeadRunner.load(calibrated_checkpoint(k, arch=arch)) for arch, k in HELD]


@pytest.fixture
def thread() -> Iterator[HeadThread]:
    thread = HeadThread()
    yield thread
    thread.close()


def served(head: HeadRunner, thread: HeadThread) -> ServedModel:
    return ServedModel(head, HeadQueue(head, thread, BatchPolicy(), max_queued=4), ModelCosts(1.0, 0.01, 100))


@pytest.fixture
def models(heads: list[HeadRunner], thread: HeadThread) -> ModelSet:
    return ModelSet([served(head, thread) for head in heads])


def keys(models: list[ServedModel]) -> list[tuple[str, int]]:
    return [model.key for model in models]


def test_every_model_in_order_the_default_first(models: ModelSet) -> None:
    assert keys(list(models)) == HELD and models.default.key == (RESNET, 8)
    assert models.served() == HOLDS


# (arch, split_point as the query gives it) -> the model's key, or None for auto
RESOLVED = {
    "neither: the default": (None, None, (RESNET, 8)),
    "the default's arch alone": (RESNET, None, (RESNET, 8)),
    "a split point of the default's arch": (None, "3", (RESNET, 3)),
    "arch and split point": (MOBILENET, "8", (MOBILENET, 8)),
    "auto": (None, "auto", None),
    "auto within an arch": (MOBILENET, "auto", None),
}


@pytest.mark.parametrize("arch, split_point, key", RESOLVED.values(), ids=RESOLVED.keys())
def test_a_request_resolves_to_the_model_it_names(
    models: ModelSet, arch: str | None, split_point: str | None, key: tuple[str, int] | None
) -> None:
    model = models.resolve(arch, split_point)
    assert (None if model is None else model.key) == key


# (arch, split_point) -> how the 422 begins; each then lists what the device holds
UNKNOWN = {
    "a split point not held": (None, "16", f"this device holds no head for {RESNET} at split point 16"),
    "held for another arch only": (MOBILENET, "3", f"this device holds no head for {MOBILENET} at split point 3"),
    "an arch not held": ("spiking_vgg", "8", "this device holds no spiking_vgg head"),
    "an arch not held, auto": ("spiking_vgg", "auto", "this device holds no spiking_vgg head"),
    "not a number": (None, "RB8", "split_point must be a number or auto, got 'RB8'"),
    "another arch without a split point": (MOBILENET, None, f"arch={MOBILENET} needs a split_point"),
}


@pytest.mark.parametrize("arch, split_point, begins", UNKNOWN.values(), ids=UNKNOWN.keys())
def test_a_model_not_held_is_unknown_naming_what_is(
    models: ModelSet, arch: str | None, split_point: str, begins: str
) -> None:
    with pytest.raises(UnknownModel) as raised:
        models.resolve(arch, split_point)
    assert str(raised.value).startswith(begins) and str(raised.value).endswith(HOLDS)


def test_auto_picks_among_the_models_of_its_arch_not_known_to_lack_a_tail(models: ModelSet) -> None:
    assert keys(models.candidates(None)) == HELD  # nothing known about the edge: every model
    assert keys(models.candidates(RESNET)) == [(RESNET, 8), (RESNET, 3)]
    rb3 = models.resolve(RESNET, "3")
    rb3.edge_serves = False
    assert keys(models.candidates(RESNET)) == [(RESNET, 8)]
    assert keys(models.candidates(None)) == [(RESNET, 8), (MOBILENET, 8)]


def test_the_edges_model_info_says_which_tails_it_serves_and_their_time(models: ModelSet) -> None:
    rb8, rb3, irb8 = models
    assert not models.edge_known() and not models.edge_serves_any()
    # an edge serving RB8 (its time 2.5 ms) and IRB8 (no time measured), and a model this device does not hold
    tails = [
        pb.ModelInfo(model_fingerprint=rb8.head.checkpoint.fingerprint, inference_ms=2.5),
        pb.ModelInfo(model_fingerprint=irb8.head.checkpoint.fingerprint),
        pb.ModelInfo(model_fingerprint="0" * 64, inference_ms=9.0),
    ]
    models.learn_edge(pb.ModelInfo(model_fingerprint=tails[0].model_fingerprint, models=tails))
    assert [model.edge_serves for model in models] == [True, False, True]
    assert [model.costs.edge_ms for model in models] == [2.5, None, None]
    assert models.edge_known() and models.edge_serves_any()
    # a time already measured from replies is not replaced by the edge's start-up figure
    rb3.costs.observe_edge(7.0)
    models.learn_edge(pb.ModelInfo(model_fingerprint=rb3.head.checkpoint.fingerprint, inference_ms=1.0))
    assert [model.edge_serves for model in models] == [False, True, False]  # an edge of before the list: one model
    assert [model.costs.edge_ms for model in models] == [2.5, 7.0, None]


def test_two_checkpoints_for_one_split_point_are_refused(heads: list[HeadRunner], thread: HeadThread) -> None:
    with pytest.raises(ConfigError, match="two checkpoints for the same backbone and split point"):
        ModelSet([served(heads[0], thread), served(heads[1], thread), served(heads[0], thread)])
