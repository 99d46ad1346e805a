"""One classification on the split path: the head queue -> the head -> the edge over gRPC -> result.

Each request has one deadline, stamped as it arrives (``deadline_s``, device/deadline.py): reading
the upload, the wait for the head, the head, the wait for a free edge call and the call itself all
come out of it, and the edge gets what is left as its gRPC deadline. Torch work runs off the event loop on one dedicated
thread, batched across concurrent requests by the HeadBatcher.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from time import perf_counter

from shared.preprocess import ImageError
from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb

from .classification import Classification, Latency, build_classification
from .deadline import Deadline
from .edge_client import EdgeClient, EdgeModelMismatch, EdgeReply
from .head_batcher import HeadBatcher, QueuedHead
from .head_runner import HeadRunner
from .metrics import DeviceMetrics
from .settings import DeviceSettings


class SplitPipeline:
    def __init__(self, head: HeadRunner, edge: EdgeClient, settings: DeviceSettings, metrics: DeviceMetrics) -> None:
        self.head = head
        self.edge = edge
        self.metrics = metrics
        # Torch work runs on one thread: head forwards take turns anyway (see HeadRunner), and one worker
        # keeps preprocessing within the THREADS budget too.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head")
        self.heads = HeadBatcher(head, self._executor, settings.head_batch_max_images,
                                 settings.head_batch_max_wait_ms / 1e3, settings.head_queue_limit,
                                 on_run=metrics.ran_head)

    async def start(self) -> None:
        self.heads.start()

    async def close(self) -> None:
        await self.heads.stop()
        self._executor.shutdown()

    async def run_head(self, images: list[bytes], deadline: Deadline) -> QueuedHead:
        """The images through the head (batched with other requests'), one frame for them; raises HeadQueueFull or
        HeadTimeout."""
        self.metrics.head_queue.set(self.heads.queued)
        queued = await self.heads.submit(images, deadline)
        self.metrics.observe_head(queued)
        return queued

    async def ask_edge(self, frame: pb.SpikeFrame, deadline: Deadline) -> EdgeReply:
        """The frame's logits from the edge; raises an EdgeError subclass."""
        reply = await self.edge.infer(frame, self.head.checkpoint.config.backbone.num_classes, deadline)
        self.metrics.observe_edge(reply)
        return reply

    async def classify(self, image: bytes, deadline: Deadline, include_logits: bool = False,
                       include_spikes: bool = False) -> Classification:
        """Raises ImageError for an unreadable image, HeadQueueFull / HeadTimeout when the head cannot take it in
        time, and EdgeError when the edge returns no logits."""
        start = perf_counter()
        queued = await self.run_head([image], deadline)
        batch = queued.batch
        if batch.frame is None:
            raise ImageError(batch.errors[0])
        reply = await self.ask_edge(batch.frame, deadline)
        latency = Latency(device=batch.timings.total_ms, queue=queued.queue_ms, edge=reply.edge_ms,
                          network=reply.round_trip_ms - reply.edge_ms, total=(perf_counter() - start) * 1e3)
        return build_classification(reply.logits[0], batch.heads[0], self.head.checkpoint, latency, include_logits,
                                    include_spikes, head_batch_images=batch.run_images,
                                    edge_batch_images=reply.edge_batch_images)

    async def check_edge(self) -> pb.ModelInfo:
        """The edge's model info if it is reachable and serves this head's model; raises EdgeError otherwise."""
        info = await self.edge.model_info()
        if info.model_fingerprint != self.head.checkpoint.fingerprint:
            raise EdgeModelMismatch(f"edge at {self.edge.address} serves model {info.model_fingerprint}, "
                                    f"this device's head is model {self.head.checkpoint.fingerprint}")
        return info
