"""``sbn edge``: the tail half served over gRPC (``spikebottlenet.v1.SplitInference``).

    device --SpikeFrame--> SplitInferenceServicer -> TailRunner (decode, decoder + tail) --Logits--> device

Next to it run the standard health service (``grpc.health.v1.Health``: SERVING once the model is
loaded and the port is open, NOT_SERVING while shutting down) and server reflection, so
``grpc_health_probe`` and ``grpcurl`` work without the proto files.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from concurrent import futures
from time import perf_counter

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared.codec import raw_length
from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb
from shared.rpc.spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from shared.rpc.wire import SERVICE_NAME
from shared.settings import add_settings_arguments, configure_torch_threads, settings_from_args

from .settings import EdgeSettings
from .tail_runner import FingerprintMismatch, FrameError, InvalidFrame, TailRunner

log = logging.getLogger("sbn.edge")

# FAILED_PRECONDITION tells the device "this deployment pairs two different models" (retrying
# cannot help, fix the checkpoints); INVALID_ARGUMENT tells it "this frame is malformed".
_STATUS: dict[type[FrameError], grpc.StatusCode] = {
    FingerprintMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidFrame: grpc.StatusCode.INVALID_ARGUMENT,
}


class SplitInferenceServicer(pb_grpc.SplitInferenceServicer):
    def __init__(self, runner: TailRunner) -> None:
        self._runner = runner

    def Infer(self, request: pb.SpikeFrame, context: grpc.ServicerContext) -> pb.Logits:
        received = perf_counter()
        try:
            result = self._runner.run(request)
        except FrameError as e:
            log.warning("refused frame %s: %s", request.request_id or "(no id)", e)
            context.abort(_STATUS[type(e)], str(e))
        batch, classes = result.logits.shape
        timing = pb.EdgeTiming(decode_ms=result.decode_ms, inference_ms=result.inference_ms,
                               total_ms=(perf_counter() - received) * 1e3)
        return pb.Logits(request_id=request.request_id, batch_size=batch, num_classes=classes,
                         values=result.logits.reshape(-1).tolist(), timing=timing,
                         model_fingerprint=self._runner.fingerprint)

    def GetModelInfo(self, request: pb.ModelInfoRequest, context: grpc.ServicerContext) -> pb.ModelInfo:
        return self._runner.model_info()


def max_frame_bytes(runner: TailRunner) -> int:
    """Receive limit: the largest legal frame, with margin.

    The raw payload of the largest batch is the largest legal payload: a sparse one exceeds it by
    at most one block header per 4096 bytes plus a ~10-byte stream header (bitarray's sc format),
    and "auto" sends the smaller of the two. The envelope (request id, fingerprint, shape) is about
    150 bytes. Twice that worst case still refuses an absurd message before it is read into memory.
    """
    t, c, h, w = runner.spike_shape
    raw = raw_length((t, runner.max_batch, c, h, w))
    return 2 * (raw + raw // 4096 + 1024)


def max_reply_bytes(runner: TailRunner) -> int:
    """Send limit: the float32 logits of the largest batch (4 bytes each, packed) and the envelope, doubled."""
    return 2 * (4 * runner.max_batch * runner.checkpoint.config.backbone.num_classes + 1024)


def create_server(runner: TailRunner, max_concurrency: int) -> tuple[grpc.Server, health.HealthServicer]:
    """The server with all three services registered; not yet bound to a port or started."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="edge-rpc"),
        # One worker per admitted RPC: an RPC beyond that is refused at once with RESOURCE_EXHAUSTED
        # (the device answers 503) rather than queued, so overload shows instead of growing latency.
        maximum_concurrent_rpcs=max_concurrency,
        options=[
            ("grpc.max_receive_message_length", max_frame_bytes(runner)),
            ("grpc.max_send_message_length", max_reply_bytes(runner)),
            # gRPC sets SO_REUSEPORT by default, so a second edge on a busy port would silently share
            # it with the first; fail to bind instead.
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_SplitInferenceServicer_to_server(SplitInferenceServicer(runner), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer


def serve(runner: TailRunner, settings: EdgeSettings) -> int:
    """Serve until SIGTERM or SIGINT, then drain in-flight RPCs for the grace period; returns the exit status."""
    server, health_servicer = create_server(runner, settings.max_concurrency)
    try:
        port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    except RuntimeError as e:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, e)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    for service in ("", SERVICE_NAME):  # "" is the whole server, as health probes ask by default
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving the tail after RB%d of model %s (%s) on %s:%d", runner.split_point, runner.fingerprint[:12],
             "trained" if runner.checkpoint.trained else "untrained", settings.host, port)
    stop.wait()
    log.info("shutting down; in-flight RPCs get %.1f s", settings.shutdown_grace_s)
    health_servicer.enter_graceful_shutdown()  # probes see NOT_SERVING while the server drains
    server.stop(settings.shutdown_grace_s).wait()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, EdgeSettings)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_from_args(EdgeSettings, args)
    configure_torch_threads(settings.threads)
    try:
        runner = TailRunner.load(settings.checkpoint_path(), settings.max_batch)
    except ValueError as e:  # CheckpointError, or a checkpoint without a bottleneck to split at
        log.error("cannot load the tail: %s", e)
        return 1
    return serve(runner, settings)
