"""Mutual TLS between device and edge: a device with a certificate from the deployment's CA classifies;
any other client is refused in the handshake (the device answers 503, a raw gRPC client gets UNAVAILABLE),
and the edge goes on serving the certified device."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import stop_all, wait_for_edge
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import EdgeProcess, device_client, monolithic_logits, start_edge, upload

from .pki import KeyPair, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def credentials(ca: Path, client: KeyPair | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(ca.read_bytes())
    return grpc.ssl_channel_credentials(ca.read_bytes(), client.key.read_bytes(), client.cert.read_bytes())


@pytest.fixture(scope="module")
def tls_edge(checkpoint: Path, pki: Pki) -> Iterator[EdgeProcess]:
    """An edge that requires client certificates signed by ``pki.ca``."""
    edge = start_edge(
        checkpoint,
        None,
        "--tls-cert",
        str(pki.edge.cert),
        "--tls-key",
        str(pki.edge.key),
        "--tls-client-ca",
        str(pki.ca),
    )
    try:
        # the health probe works over mutual TLS, with a certificate like any client's
        wait_for_edge(edge.address, edge.process, credentials=credentials(pki.ca, pki.device))
        yield edge
    finally:
        stop_all([edge.process])


@pytest.fixture(scope="module")
def refused(report: Callable[[str], None]) -> Iterator[list[str]]:
    """The clients the edge refused in this module, reported at its end."""
    clients: list[str] = []
    yield clients
    report(
        f"mTLS: {len(clients)} clients refused in the handshake, none served: "
        + "; ".join(clients)
        + "; the edge served certified clients after every refusal"
    )


def certified(pki: Pki, **settings: Any) -> dict[str, Any]:
    """Device settings for a certificate signed by the edge's client CA."""
    return dict(tls_ca=pki.ca, tls_cert=pki.device.cert, tls_key=pki.device.key, **settings)


@pytest.mark.parametrize("server_name", [None, "edge.test"], ids=["address", "server name"])
def test_a_device_certified_by_the_ca_classifies_like_the_monolithic_model(
    tls_edge: EdgeProcess, pki: Pki, checkpoint: Path, server_name: str | None, report: Callable[[str], None]
) -> None:
    image = synthetic_png(seed=11)
    with device_client(checkpoint, tls_edge.address, **certified(pki, tls_server_name=server_name)) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post("/classify", params={"logits": "true"}, files=upload(image))
    assert response.status_code == 200, response.text
    torch.testing.assert_close(
        torch.tensor(response.json()["logits"]), monolithic_logits(checkpoint, image), rtol=0, atol=1e-5
    )
    report(
        f"mTLS: a device certified by the CA, dialling {'the address' if server_name is None else server_name}: "
        f"ready, and classified like the monolithic model"
    )


# What each refused device is configured with (the edge requires a certificate signed by pki.ca)
REFUSED: dict[str, Callable[[Pki], dict[str, Any]]] = {
    "plaintext": lambda pki: {},
    "no client certificate": lambda pki: dict(tls_ca=pki.ca),
    "a certificate from another CA": lambda pki: dict(
        tls_ca=pki.ca, tls_cert=pki.rogue_device.cert, tls_key=pki.rogue_device.key
    ),
    "the edge's CA not trusted": lambda pki: dict(
        tls_ca=pki.rogue_ca, tls_cert=pki.device.cert, tls_key=pki.device.key
    ),
    "a wrong server name": lambda pki: certified(pki, tls_server_name="other.test"),
}


def assert_serving(edge: EdgeProcess, pki: Pki) -> None:
    with grpc.secure_channel(edge.address, credentials(pki.ca, pki.device)) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("case", REFUSED)
def test_a_device_the_handshake_refuses_answers_503_and_is_not_ready(
    tls_edge: EdgeProcess, pki: Pki, checkpoint: Path, case: str, refused: list[str]
) -> None:
    with device_client(checkpoint, tls_edge.address, **REFUSED[case](pki)) as client:
        classify = client.post("/classify", files=upload(synthetic_png()))
        readyz = client.get("/readyz")
    assert (classify.status_code, readyz.status_code) == (503, 503)
    assert "UNAVAILABLE" in classify.json()["detail"] and "UNAVAILABLE" in readyz.json()["detail"]
    assert_serving(tls_edge, pki)
    refused.append(f"device with {case} (/classify 503, /readyz 503)")


RAW_CLIENTS: dict[str, Callable[[Pki], grpc.ChannelCredentials | None]] = {
    "plaintext": lambda pki: None,
    "no client certificate": lambda pki: credentials(pki.ca),
    "a certificate from another CA": lambda pki: credentials(pki.ca, pki.rogue_device),
}


@pytest.mark.parametrize("case", RAW_CLIENTS)
def test_a_raw_grpc_client_without_a_valid_certificate_gets_unavailable(
    tls_edge: EdgeProcess, pki: Pki, case: str, refused: list[str]
) -> None:
    creds = RAW_CLIENTS[case](pki)
    with grpc.secure_channel(tls_edge.address, creds) if creds else grpc.insecure_channel(tls_edge.address) as ch:
        calls = (
            lambda: pb_grpc.SplitInferenceStub(ch).GetModelInfo(pb.ModelInfoRequest(), timeout=5),
            lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5),
        )
        for call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert_serving(tls_edge, pki)
    refused.append(f"raw gRPC client with {case} (UNAVAILABLE, for SplitInference and Health)")
