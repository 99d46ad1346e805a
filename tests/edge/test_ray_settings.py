"""``sbn serve-ray``'s settings: SBN_RAY_* variables and flags, and the Serve options they become."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("ray.serve", reason="needs the [ray] extra (pip install '.[ray]'), which `make test` installs")

from spikebottlenet.edge.ray_serve import RayServeSettings, add_arguments  # noqa: E402
from spikebottlenet.shared.settings import settings_from_args  # noqa: E402


@pytest.fixture(autouse=True)
def no_ray_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RayServeSettings.model_fields:
        monkeypatch.delenv(f"SBN_RAY_{name.upper()}", raising=False)


def settings(*argv: str) -> RayServeSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(RayServeSettings, parser.parse_args(argv))


def test_autoscaling_by_default_within_the_documented_bounds() -> None:
    options = settings().deployment_options()
    assert options["num_replicas"] == "auto"
    scaling = options["autoscaling_config"]
    assert (scaling.min_replicas, scaling.initial_replicas, scaling.max_replicas) == (1, 1, 4)
    assert (scaling.target_ongoing_requests, scaling.upscale_delay_s, scaling.downscale_delay_s) == (8.0, 30.0, 600.0)
    # a replica takes enough frames at once for its batches to fill (batch_max_images 16)
    assert options["max_ongoing_requests"] == 32 and options["ray_actor_options"] == {"num_cpus": 1.0}


def test_a_fixed_replica_count_turns_autoscaling_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBN_RAY_REPLICAS", "2")
    options = settings("--cpus-per-replica", "0.5").deployment_options()
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0.5}


def test_a_tail_on_a_gpu_reserves_one_per_replica() -> None:
    # Ray shows a replica only the GPUs it reserved: without num_gpus, cuda would be refused in the replica
    assert settings("--device", "cuda").deployment_options()["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}


def test_scaling_to_zero_starts_one_replica_first() -> None:
    scaling = settings("--min-replicas", "0").deployment_options()["autoscaling_config"]
    assert (scaling.min_replicas, scaling.initial_replicas) == (0, 1)


def test_bounds_out_of_order_are_refused_naming_them() -> None:
    with pytest.raises(SystemExit, match="min_replicas"):
        settings("--min-replicas", "5", "--max-replicas", "2")


def test_a_replica_that_could_never_fill_a_batch_is_refused() -> None:
    with pytest.raises(SystemExit, match="max_concurrency"):
        settings("--max-concurrency", "8", "--batch-max-images", "16")
