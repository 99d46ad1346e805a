"""A device holding several heads in front of an edge serving some of their tails: real edge process, real
HTTP. Each request runs the split point it names (or the default, or the planner's), bad names get 422
listing what the device holds, and a head whose tail the edge lacks is reported, not fatal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import stop_all, wait_for_edge
from tests.stack import device_client, monolithic_logits, start_edge, upload

HELD = (8, 3, 16)  # the device's heads, the default first
SERVED = (8, 3)  # the edge's tails: RB16's is missing


@pytest.fixture(scope="module")
def checkpoints(calibrated_checkpoint: Callable[..., Path]) -> dict[int, Path]:
    return {k: calibrated_checkpoint(k) for k in HELD}


@pytest.fixture(scope="module")
def client(checkpoints: dict[int, Path]) -> Iterator[httpx.Client]:
    edge = start_edge(
        checkpoints[SERVED[0]], None, *(f for k in SERVED[1:] for f in ("--checkpoint", str(checkpoints[k])))
    )
    try:
        wait_for_edge(edge.address, edge.process)
        # the test checkpoints record no accuracy drop: no budget, or auto would have nothing to choose from
        with device_client([checkpoints[k] for k in HELD], edge.address, max_accuracy_drop=None) as client:
            yield client
    finally:
        stop_all([edge.process])


def test_readiness_lists_every_head_and_whether_the_edge_serves_it(
    client: httpx.Client, checkpoints: dict[int, Path]
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["split_point"] == HELD[0]  # the default model
    assert [(h["split_point"], h["edge_serves"]) for h in body["heads"]] == [(k, k in SERVED) for k in HELD]
    assert all(h["edge_ms"] > 0 for h in body["heads"] if h["edge_serves"])  # the edge's own measurement


@pytest.mark.parametrize("split_point", [None, *SERVED])
def test_each_request_runs_the_split_point_it_names(
    client: httpx.Client, checkpoints: dict[int, Path], split_point: int | None
) -> None:
    image = synthetic_png(seed=5)
    params = {"logits": "true"} | ({} if split_point is None else {"split_point": str(split_point)})
    response = client.post("/classify", params=params, files=upload(image))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = HELD[0] if split_point is None else split_point
    assert body["split_point"] == expected
    # the reference: that split point's whole model, in this process
    torch.testing.assert_close(
        torch.tensor(body["logits"]), monolithic_logits(checkpoints[expected], image), rtol=0, atol=1e-5
    )
    energy = body["energy"]
    assert energy["device_total_mj"] == pytest.approx(energy["device_45nm_mj"] + energy["transmit_mj"])


def test_a_head_whose_tail_the_edge_lacks_is_a_502_naming_both_sides(
    client: httpx.Client, checkpoints: dict[int, Path]
) -> None:
    response = client.post("/classify", params={"split_point": "16"}, files=upload(synthetic_png()))
    assert response.status_code == 502
    detail = response.json()["detail"]
    rb16 = client.get("/readyz").json()["heads"][2]["model_fingerprint"]
    assert rb16 in detail and "does not serve" in detail and "RB8" in detail and "RB3" in detail


@pytest.mark.parametrize(
    "params, words",
    [
        ({"split_point": "5"}, ["no head for spiking_resnet50 at split point 5"]),
        ({"split_point": "seven"}, ["a number or auto", "'seven'"]),
        ({"arch": "spiking_mobilenetv2", "split_point": "3"}, ["no spiking_mobilenetv2 head"]),
        ({"arch": "spiking_mobilenetv2"}, ["needs a split_point"]),
    ],
)
def test_a_split_point_this_device_does_not_hold_is_a_422_listing_what_it_holds(
    client: httpx.Client, params: dict[str, str], words: list[str]
) -> None:
    response = client.post("/classify", params=params, files=upload(synthetic_png()))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail
    assert all(f"split_point={k}" in detail for k in HELD), detail


def test_auto_picks_among_the_split_points_the_edge_serves(client: httpx.Client) -> None:
    for _ in range(6):
        response = client.post("/classify", params={"split_point": "auto"}, files=upload(synthetic_png()))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["split_point"] in SERVED  # never RB16: the edge has no tail for it
        choice = body["split_choice"]
        assert choice["candidates"] == len(SERVED) and choice["objective"] == "latency"
        assert choice["predicted_latency_ms"] > 0
