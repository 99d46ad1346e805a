"""The device's side of the gRPC call: one channel to the edge, gRPC failures as typed exceptions.

The channel is asyncio-native (``grpc.aio``), so a request waiting on the edge holds no thread of
the HTTP server. It is opened once and reconnects by itself: an edge that was down when the device
started, or restarted since, is picked up again without restarting the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from types import TracebackType

import grpc
import torch

from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb
from shared.rpc.spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc


class EdgeError(Exception):
    """The edge did not return logits for a frame."""


class EdgeUnavailable(EdgeError):
    """Not reachable, not answering within the deadline, or busy: worth retrying later."""


class EdgeModelMismatch(EdgeError):
    """The edge serves a different checkpoint than this device's head: a deployment error."""


class EdgeRejected(EdgeError):
    """The edge refused the frame or failed on it."""


# Codes that mean "the edge could not take this now" rather than "something is wrong with it".
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}

# gRPC backs off exponentially between reconnection attempts, up to 120 s by default: an edge
# restarted after a few minutes would wait that long to be tried again. Edges sit next to the
# device (LAN or loopback), so retrying at least every 2 s is cheap.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class EdgeReply:
    logits: torch.Tensor  # [B, num_classes] float32
    edge_ms: float  # the edge's own time, receipt to reply
    round_trip_ms: float  # as the device saw it: the edge's time plus the network and (de)serialization


class EdgeClient:
    def __init__(self, address: str, deadline_s: float) -> None:
        self.address = address
        self.deadline_s = deadline_s
        self._channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.SplitInferenceStub(self._channel)

    async def __aenter__(self) -> EdgeClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._channel.close()

    async def infer(self, frame: pb.SpikeFrame) -> EdgeReply:
        start = perf_counter()
        try:
            # Not wait_for_ready: with the edge down the call fails at once (503) instead of
            # holding the request for the whole deadline.
            reply: pb.Logits = await self._stub.Infer(frame, timeout=self.deadline_s)
        except grpc.aio.AioRpcError as e:
            raise self._error(e) from None
        round_trip_ms = (perf_counter() - start) * 1e3
        if len(reply.values) != reply.batch_size * reply.num_classes:
            raise EdgeRejected(f"edge at {self.address} sent {len(reply.values)} logits for a "
                               f"{reply.batch_size} x {reply.num_classes} result")
        logits = torch.tensor(reply.values, dtype=torch.float32).reshape(reply.batch_size, reply.num_classes)
        return EdgeReply(logits, reply.timing.total_ms, round_trip_ms)

    async def model_info(self) -> pb.ModelInfo:
        try:
            return await self._stub.GetModelInfo(pb.ModelInfoRequest(), timeout=self.deadline_s)
        except grpc.aio.AioRpcError as e:
            raise self._error(e) from None

    def _error(self, e: grpc.aio.AioRpcError) -> EdgeError:
        code = e.code()
        if code in _UNAVAILABLE:
            kind: type[EdgeError] = EdgeUnavailable
        elif code == grpc.StatusCode.FAILED_PRECONDITION:
            kind = EdgeModelMismatch
        else:
            kind = EdgeRejected
        return kind(f"edge at {self.address}: {code.name}: {e.details()}")
