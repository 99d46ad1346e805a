"""The committed gRPC stubs are exactly what the pinned grpcio-tools generates from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_proto() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spikebottlenet.shared.rpc.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"stale gRPC stubs; run `make proto`\n{result.stdout}{result.stderr}"


def test_stubs_import_as_a_package() -> None:
    from spikebottlenet.v1 import split_inference_pb2, split_inference_pb2_grpc

    assert split_inference_pb2.DESCRIPTOR.package == "spikebottlenet.v1"
    assert hasattr(split_inference_pb2_grpc, "SplitInferenceStub")
