"""What a checkpoint says about itself, read without loading any weights: config, digests, fingerprint, info.

Checkpoints are safetensors files whose metadata (all values strings, as the format requires) is

    format       "spikebottlenet/1"
    config       JSON of ModelConfig (arch, width, classes, split point, bottleneck, T, LIF, normalization, labels)
    digests      JSON {part: sha256 of that part's tensors}; parts are "head" and "tail" for a split
                 model, "backbone" for a plain one
    fingerprint  sha256 of the canonical config JSON and the part digests
    info         JSON of the TrainingRecord: what training did and measured (accuracy, command, "trained": false ...)
    info_digest  sha256 of the fingerprint and the canonical info JSON

Per-part digests let the edge verify only the tail tensors it loads (and the device only the head)
while both still arrive at the same model fingerprint, which they compare on every request.

The fingerprint leaves the info out on purpose: it pairs a head with its tail, and recalibrating a
checkpoint (``update_info``, shared/checkpoint.py) must not unpair halves already deployed with the same
weights. The info is covered by its own digest instead. Info whose digest does not match (edited by hand,
copied from another checkpoint, or from a file older than info_digest) loads as unverified:
``CheckpointInfo.info_verified`` is false, ``trained`` is false whatever the info claims, and loading the
model logs a warning. Like the fingerprint, the digest detects changes, not forgers: anyone can recompute
a sha256.

This module imports no torch: a device without it (the ONNX runtime) reads the same metadata, from a
checkpoint or from a head exported from one.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from safetensors import SafetensorError, safe_open

from .errors import ConfigError, SpikeBottleNetError
from .model_config import ModelConfig
from .uncertainty import Calibration

FORMAT = "spikebottlenet/1"
DEFAULT_MODEL_DIR = Path(__file__).parent / "models"
# the pre-trained backbones the shipped split checkpoints were fine-tuned from (their pretrained_fingerprint):
# the start of `sbn train finetune` or `sbn train sweep` at other split points, without pre-training again
BACKBONE_DIR = DEFAULT_MODEL_DIR / "backbones"


class CheckpointError(SpikeBottleNetError, ValueError):
    """A file that is not a valid, intact SpikeBottleNet checkpoint, or not one this action can use (a backbone where
    a split model is needed, another dataset's)."""


@runtime_checkable
class RecordPart(Protocol):
    """A field of the TrainingRecord with fields of its own (EntropyCodecFigures, WireTraining, Calibration): a
    dataclass that writes itself as a JSON object and reads itself back from one."""

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Self: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EntropyCodecFigures:
    """What the fitted entropy codec buys on the test split (training/entropy_fit.py)."""

    fitted_on: str  # "<dataset> training split, <N> images"
    test_images: int
    raw_bytes: int  # one image's raw payload
    entropy_mean_bytes: float  # the mean entropy-coded payload per test image
    first_order_bound_bytes: float  # what a first-order coder approaches: H(s_t | s_t-1, channel) of the test spikes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> EntropyCodecFigures:
        return cls(**stored)


@dataclass(frozen=True)
class WireTraining:
    """The wire's terms in training (training/wire_training.py): recorded in a refined checkpoint's info."""

    rate_weight: float = 0.0  # lambda: weight of the transmitted spikes' firing rate in the loss
    flip_probability: float = 0.0  # training-time bit error rate on the transmitted spikes
    erase_probability: float = 0.0  # training-time chance that an image's channel arrives silent (an erased chunk)

    def __post_init__(self) -> None:
        if self.rate_weight < 0 or not 0 <= self.flip_probability <= 1 or not 0 <= self.erase_probability <= 1:
            raise ConfigError(
                f"rate_weight must be >= 0, flip_probability and erase_probability within 0..1, got {self}"
            )

    @property
    def active(self) -> bool:
        return self.rate_weight > 0 or self.flip_probability > 0 or self.erase_probability > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> WireTraining:
        return cls(**stored)


@dataclass(frozen=True)
class TrainingRecord:
    """A checkpoint's info: what training did and what it measured (training/recipes.py writes it).

    None is "not recorded": an untrained placeholder, a backbone (no bottleneck figures), a file from before
    the field existed. Accuracies are percentages, drops points against the backbone fine-tuned from.
    """

    trained: bool = False
    stage: str | None = None  # "pretrain", "finetune" or "refine"
    dataset: str | None = None  # training/datasets.py's name for it
    command: str | None = None  # the `sbn train ...` that wrote it
    epochs: int | None = None
    seed: int | None = None
    train_accuracy: float | None = None  # the last epoch's (pretrain)
    validation_accuracy: float | None = None  # the last epoch's
    test_accuracy: float | None = None
    # a split model's, against the backbone it was fine-tuned from
    pretrained_fingerprint: str | None = None
    pretrained_time_steps: int | None = None
    pretrained_accuracy: float | None = None  # the backbone's test accuracy
    accuracy_drop: float | None = None  # pretrained_accuracy - test_accuracy
    validation_drop: float | None = None  # the same on the validation split (None: a backbone without its figure)
    transmitted_bytes: int | None = None
    compression: float | None = None
    uncertainty: Calibration | None = None  # the "uncertain" threshold (shared/uncertainty.py)
    entropy_codec: EntropyCodecFigures | None = None  # sbn train fit-codec's test figures
    # a refined one's (sbn train refine)
    refined_from: str | None = None  # the fingerprint of the checkpoint it was refined from
    wire_training: WireTraining | None = None
    refine_epochs: int | None = None
    # keys this version does not know, kept as read: rewriting the info (update_info) must not drop them
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored as the info: the fields recorded (not None), and the unknown keys as read."""
        info = {
            f.name: _to_json(getattr(self, f.name))
            for f in fields(self)
            if f.name != "extra" and getattr(self, f.name) is not None
        }
        return {**info, **self.extra}

    @classmethod
    def from_dict(cls, info: Any) -> TrainingRecord:
        """The record of a stored info object; raises CheckpointError for one that does not fit it."""
        if not isinstance(info, dict):
            raise CheckpointError(f"malformed info: a JSON {type(info).__name__}, not an object")
        hints = typing.get_type_hints(cls)
        known, extra = {}, {}
        for key, value in info.items():
            if key not in hints or key == "extra":
                extra[key] = value
                continue
            part = next((kind for kind in _kinds(hints[key]) if issubclass(kind, RecordPart)), None)
            try:
                known[key] = part.from_dict(value) if part is not None and isinstance(value, dict) else value
            except (TypeError, ValueError) as e:  # a key missing, one too many, a value out of range
                raise CheckpointError(f"malformed info: {key}: {e}") from None
        return _checked(cls(**known, extra=extra), "info")


def _kinds(hint: Any) -> tuple[Any, ...]:
    """The types an annotation admits: (float, NoneType) for ``float | None``, (dict,) for ``dict[str, Any]``."""
    if isinstance(hint, types.UnionType):
        return typing.get_args(hint)
    return (typing.get_origin(hint) or hint,)


def _is_a(value: Any, kind: Any) -> bool:
    if kind is float:  # JSON has one number type: an int is a float too (and kept an int, to be written back as read)
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:  # to Python a bool is an int; in the info it is not
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _checked(record: Any, where: str) -> Any:
    """``record`` (a dataclass read from JSON) if every field holds a type its annotation admits, parts included."""
    hints = typing.get_type_hints(type(record))
    for f in fields(record):
        value, kinds = getattr(record, f.name), _kinds(hints[f.name])
        if not any(_is_a(value, kind) for kind in kinds):
            names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
            raise CheckpointError(f"malformed {where}: {f.name} is {value!r}, not {names}")
        if is_dataclass(value):
            _checked(value, f"{where}: {f.name}")
    return record


def _to_json(value: Any) -> Any:
    return value.to_dict() if isinstance(value, RecordPart) else value


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    config: ModelConfig
    fingerprint: str
    digests: dict[str, str]
    info: TrainingRecord = field(default_factory=TrainingRecord)
    info_verified: bool = False  # the info_digest matches: the info is as written for these weights

    @property
    def trained(self) -> bool:
        """Only verified info counts: an edited "trained": true must not pass an untrained model off as trained."""
        return self.info_verified and self.info.trained


def part_names(config: ModelConfig) -> tuple[str, ...]:
    return ("head", "tail") if config.bottleneck else ("backbone",)


def part_of(name: str, config: ModelConfig) -> str:
    return name.split(".", 1)[0] if config.bottleneck else "backbone"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def model_fingerprint(config: dict[str, Any], digests: dict[str, str]) -> str:
    """Of the config as stored (a JSON object), so that it never depends on how this version parses it."""
    return hashlib.sha256(canonical_json({"config": config, "digests": digests}).encode()).hexdigest()


def info_digest(fingerprint: str, info: dict[str, Any]) -> str:
    """Of the fingerprint too, so that info moved onto another checkpoint, digest and all, does not verify."""
    return hashlib.sha256(canonical_json({"fingerprint": fingerprint, "info": info}).encode()).hexdigest()


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """Parse and validate the metadata without reading any weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} {'is not a file' if path.exists() else 'does not exist'}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(
            f"checkpoint {path} is not readable by this user (uid {os.getuid()}): check its permissions"
        )
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a safetensors file (or it is truncated): {e}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a SpikeBottleNet checkpoint "
            f"(metadata format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    return checkpoint_info_from_metadata(metadata, path)


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A verified checkpoint's metadata as stored (``read_checkpoint_info`` checks it first): what an export of
    one of its halves carries, so that ``checkpoint_info_from_metadata`` reads it back."""
    read_checkpoint_info(path)
    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata())


def checkpoint_info_from_metadata(metadata: dict[str, str], path: Path) -> CheckpointInfo:
    """Parse and validate a checkpoint's metadata (the layout above), read from ``path``: a checkpoint, or a file
    exported from one (shared/onnx_head.py)."""
    try:
        stored_config = json.loads(metadata["config"])
        config = ModelConfig.from_dict(stored_config)
        digests = json.loads(metadata["digests"])
        stored_info = json.loads(metadata.get("info", "{}"))
        fingerprint = metadata["fingerprint"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint metadata ({type(e).__name__}: {e})") from None
    if set(digests) != set(part_names(config)):
        raise CheckpointError(f"{path}: digests for {sorted(digests)}, expected {list(part_names(config))}")
    if model_fingerprint(stored_config, digests) != fingerprint:
        raise CheckpointError(f"{path}: the fingerprint does not match the config and digests in the metadata")
    try:
        info = TrainingRecord.from_dict(stored_info)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    # of the info as stored, like the fingerprint: verifying never depends on how this version reads it
    info_verified = metadata.get("info_digest") == info_digest(fingerprint, stored_info)
    return CheckpointInfo(path, config, fingerprint, digests, info, info_verified)


def embedded_models() -> list[CheckpointInfo]:
    """The demo checkpoints shipped in shared/models, by backbone and split point."""
    infos = [read_checkpoint_info(path) for path in DEFAULT_MODEL_DIR.glob("*.safetensors")]
    split = [c for c in infos if c.config.bottleneck]
    return sorted(split, key=lambda c: (c.config.backbone.arch, c.config.split_point.index))


def default_checkpoint(arch: str, split_point: int) -> Path:
    """The embedded demo checkpoint of backbone ``arch`` (a registry name) split at ``split_point``."""
    models = embedded_models()
    for ckpt in models:
        if (ckpt.config.backbone.arch, ckpt.config.split_point.index) == (arch, split_point):
            return ckpt.path
    available = ", ".join(f"{c.config.backbone.arch} {c.config.split_point.name}" for c in models)
    raise CheckpointError(
        f"no embedded checkpoint for {arch} at split point {split_point} (shared/models has: {available or 'nothing'})"
    )
