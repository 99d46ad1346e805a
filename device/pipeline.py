"""One classification on the split path: head on a worker thread -> edge over gRPC -> result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import TypeVar

from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb

from .classification import Classification, Latency, build_classification
from .edge_client import EdgeClient, EdgeModelMismatch
from .head_runner import HeadRunner

T = TypeVar("T")


class SplitPipeline:
    def __init__(self, head: HeadRunner, edge: EdgeClient) -> None:
        self.head = head
        self.edge = edge
        # Torch work runs off the event loop, on one dedicated thread: head forwards take turns anyway
        # (see HeadRunner), one worker keeps preprocessing within the THREADS budget too, and images
        # waiting their turn wait in this executor's queue instead of each blocking a thread of the
        # pool the HTTP server uses for file I/O.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head")

    def close(self) -> None:
        self._executor.shutdown()

    async def on_head_thread(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the head's worker thread (torch work: see __init__)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def classify(self, image: bytes, include_logits: bool = False,
                       include_spikes: bool = False) -> Classification:
        """Raises ImageError for an unreadable image and EdgeError when the edge returns no logits."""
        start = perf_counter()
        head = await asyncio.get_running_loop().run_in_executor(self._executor, self.head.run, image)
        reply = await self.edge.infer(head.frame)
        latency = Latency(device=head.elapsed_ms, edge=reply.edge_ms, network=reply.round_trip_ms - reply.edge_ms,
                          total=(perf_counter() - start) * 1e3)
        return build_classification(reply.logits[0], head, self.head.checkpoint, latency, include_logits,
                                    include_spikes)

    async def check_edge(self) -> pb.ModelInfo:
        """The edge's model info if it is reachable and serves this head's model; raises EdgeError otherwise."""
        info = await self.edge.model_info()
        if info.model_fingerprint != self.head.checkpoint.fingerprint:
            raise EdgeModelMismatch(f"edge at {self.edge.address} serves model {info.model_fingerprint}, "
                                    f"this device's head is model {self.head.checkpoint.fingerprint}")
        return info
