"""A message pickled in one process unpickles in another (Ray Serve hands requests from its gRPC proxy to its
replicas so), although protoc names the classes' module after the proto file, not after where the stubs live."""

from __future__ import annotations

import pickle
import subprocess
import sys

from spikebottlenet.v1 import split_inference_pb2 as pb


def test_a_message_pickled_here_unpickles_in_a_fresh_process_that_imports_the_stubs() -> None:
    frame = pb.SpikeFrame(request_id="r1", model_fingerprint="f" * 64, shape=[4, 1, 8, 4, 4], payload=b"\x01\x02")
    assert type(frame).__module__ == "spikebottlenet.v1.split_inference_pb2"  # what pickle will look up
    # the fresh process imports the stubs the way every module of the project does, then unpickles
    read_back = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys\n"
            "from spikebottlenet.v1 import split_inference_pb2\n"
            "sys.stdout.buffer.write(pickle.loads(sys.stdin.buffer.read()).SerializeToString())",
        ],
        input=pickle.dumps(frame),
        capture_output=True,
        check=True,
    ).stdout
    assert pb.SpikeFrame.FromString(read_back) == frame
