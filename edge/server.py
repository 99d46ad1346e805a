"""``sbn edge``: the tail half served over gRPC (``spikebottlenet.v1.SplitInference``).

    device --SpikeFrame--> SplitInferenceServicer -> TailRunner (decode, decoder + tail) --Logits--> device
    device --SpikeStep per time step--> InferStream -> SpikeStream (edge/stream.py) --RunningLogits per step-->

One edge serves one or several models (``--checkpoint`` repeated, or ``--models all``): each frame
names its model by fingerprint and is routed to that model's tail, with admission slots, a batching
queue and metrics per model, and one inference worker for all of them.

Next to it run the standard health service (``grpc.health.v1.Health``: SERVING once the model is
loaded and the port is open, NOT_SERVING while shutting down) and server reflection, so
``grpc_health_probe`` and ``grpcurl`` work without the proto files.

The port speaks plaintext by default, TLS with ``tls_cert`` and ``tls_key``, and mutual TLS with
``tls_client_ca`` too: then every client, health probes included, must present a certificate signed
by that CA, and one without is refused in the handshake, before any RPC.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import NamedTuple, NoReturn

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared.codec import Codec, max_payload_length
from shared.fec import MAX_PARITY_BYTES, protected_length
from shared.ports import port_in_use
from shared.rpc.spikebottlenet.v1 import split_inference_pb2 as pb
from shared.rpc.spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from shared.rpc.wire import SERVICE_NAME
from shared.settings import add_settings_arguments, configure_torch_threads, settings_from_args

from .metrics import EdgeMetrics, MetricsEndpoint
from .micro_batcher import BatchPolicy, PendingFrame, TailBatcher
from .settings import EdgeSettings
from .stream import SpikeStream
from .tail_runner import FrameError, TailRunner, load_tails, not_served

log = logging.getLogger("sbn.edge")


NO_DEADLINE_S = 86_400.0

# RPCs the server takes beyond the inference slots, so that health checks, model info and reflection
# still answer while every slot runs a frame: a busy edge is not an unhealthy one.
CONTROL_RPCS = 4


@dataclass
class ServedModel:
    runner: TailRunner
    slots: threading.BoundedSemaphore  # its frames admitted at once, queued or running


class SplitInferenceServicer(pb_grpc.SplitInferenceServicer):
    """Routes each frame to its model by fingerprint, admits up to ``max_concurrency`` frames per model at
    once (queued or running), decodes each on its gRPC thread and hands it to the micro-batcher's one
    inference worker (edge/micro_batcher.py).

    Deadlines: a frame whose caller's deadline has passed is refused with DEADLINE_EXCEEDED before it is
    decoded or queued, and dropped by the worker if it passes while queued. A caller that cancels (or
    times out) frees its slot at once: gRPC's termination callback wakes the waiting thread, which
    answers and releases the slot, and the worker skips the frame if it has not run yet.
    """

    def __init__(self, runners: Sequence[TailRunner], max_concurrency: int, inject_delay_s: float = 0.0,
                 metrics: EdgeMetrics | None = None, batching: BatchPolicy = BatchPolicy(),
                 stream_max_s: float = 30.0) -> None:
        """``runners``: the served models, the default one (whose info GetModelInfo leads with) first;
        ``stream_max_s``: the longest an InferStream call may stay open."""
        if not runners:
            raise ValueError("an edge serves at least one model")
        self.metrics = metrics or EdgeMetrics()
        # A slot is given back before the reply is sent, so a client that waits for one reply before
        # sending the next frame never finds its own previous frame still holding the slot.
        self._models = {r.fingerprint: ServedModel(r, threading.BoundedSemaphore(max_concurrency)) for r in runners}
        self._runners = list(runners)
        for runner in runners:
            self.metrics.serving(runner.fingerprint, runner.checkpoint.config.backbone.arch, runner.split_point.name)
        self._max_concurrency = max_concurrency
        self._inject_delay_s = inject_delay_s
        self._stream_max_s = stream_max_s
        self.batcher = TailBatcher(batching, self.metrics)
        self.served_by = f"{socket.gethostname()}:{os.getpid()}"  # replicas behind one name tell themselves apart

    def close(self) -> None:
        """Stop the inference worker (after the server has stopped taking RPCs)."""
        self.batcher.close()

    def Infer(self, request: pb.SpikeFrame, context: grpc.ServicerContext) -> pb.Logits:
        received = perf_counter()
        model = self._admit(request.model_fingerprint, context)
        fingerprint = model.runner.fingerprint
        try:
            frame, logits = self._run(model.runner, request, context)
        finally:
            model.slots.release()
        batch, classes = logits.shape
        self.metrics.answered(fingerprint, batch)
        timing = pb.EdgeTiming(decode_ms=frame.decoded.decode_ms, inference_ms=frame.inference_ms,
                               total_ms=(perf_counter() - received) * 1e3, queue_ms=frame.queue_ms,
                               batch_images=frame.batch_images)
        return pb.Logits(request_id=request.request_id, batch_size=batch, num_classes=classes,
                         values=logits.reshape(-1).tolist(), timing=timing, model_fingerprint=fingerprint,
                         damage=frame.decoded.damage, served_by=self.served_by)

    def InferStream(self, request_iterator: Iterator[pb.SpikeStep],
                    context: grpc.ServicerContext) -> Iterator[pb.RunningLogits]:
        """A frame one time step per message, each answered with the running logits (edge/stream.py). The stream
        holds one of its model's slots while open, and runs its steps at once, between the inference worker's
        batches (it is not batched: its state is its own)."""
        stream: SpikeStream | None = None
        model: ServedModel | None = None
        # A client that opens a stream and then sends nothing would hold a slot and this thread for as long as
        # its deadline allows, or for ever: the call is cancelled after stream_max_s, which ends the loop below.
        expiry = threading.Timer(self._stream_max_s, context.cancel)
        expiry.daemon = True
        expiry.start()
        try:
            for message in request_iterator:
                if stream is None:
                    model = self._admit(message.model_fingerprint, context)
                    stream = self._open_stream(model.runner, message, context)
                    self.metrics.stream_opened()
                self._refuse_if_late(context, model.runner.fingerprint)
                try:
                    reply = stream.run(message)
                except FrameError as e:
                    log.warning("refused stream %s at step %d: %s", stream.first.request_id or "(no id)", stream.steps,
                                e)
                    self._refuse(context, model.runner.fingerprint, e.status, str(e))
                except Exception as e:  # noqa: BLE001 - a fault of this edge's, answered as such, never a crash
                    log.exception("stream %s failed at step %d", stream.first.request_id or "(no id)", stream.steps)
                    self._refuse(context, model.runner.fingerprint, grpc.StatusCode.INTERNAL,
                                 f"the tail failed on step {stream.steps}: {e}")
                self.metrics.stream_step(model.runner.fingerprint)
                yield reply
        finally:
            expiry.cancel()
            if model is not None:
                model.slots.release()
                if stream is not None:
                    self.metrics.stream_closed()

    def _open_stream(self, runner: TailRunner, first: pb.SpikeStep, context: grpc.ServicerContext) -> SpikeStream:
        try:
            return SpikeStream(runner, first)
        except FrameError as e:
            log.warning("refused stream %s: %s", first.request_id or "(no id)", e)
            self._refuse(context, runner.fingerprint, e.status, str(e))

    def _refuse_if_late(self, context: grpc.ServicerContext, fingerprint: str) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            self._refuse(context, fingerprint, grpc.StatusCode.DEADLINE_EXCEEDED,
                         "the stream's deadline passed before this step ran")

    def _admit(self, fingerprint: str, context: grpc.ServicerContext) -> ServedModel:
        """The served model a frame names, one of its slots taken; aborts with FAILED_PRECONDITION for a model this
        edge does not serve, RESOURCE_EXHAUSTED when every slot is taken."""
        model = self._models.get(fingerprint)
        if model is None:
            refusal = not_served(fingerprint, self._runners)
            self._refuse(context, None, refusal.status, str(refusal))
        if not model.slots.acquire(blocking=False):
            self._refuse(context, model.runner.fingerprint, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"edge is busy: all {self._max_concurrency} inference slots of model "
                         f"{model.runner.fingerprint[:12]} ({model.runner.split_point.name}) are taken; retry later")
        return model

    def _run(self, runner: TailRunner, request: pb.SpikeFrame,
             context: grpc.ServicerContext) -> tuple[PendingFrame, torch.Tensor]:
        """The frame and its logits [B, num_classes]; every other outcome aborts the RPC with the status that says
        why."""
        remaining = context.time_remaining()
        # A call without a deadline reports ~INT64_MAX seconds (or None): treat anything past a day as none.
        deadline = None if remaining is None or remaining > NO_DEADLINE_S else monotonic() + remaining
        caller_gone, settled = threading.Event(), threading.Event()
        if not context.add_callback(lambda: (caller_gone.set(), settled.set())):
            caller_gone.set()  # the call had already ended
        if self._inject_delay_s:
            caller_gone.wait(self._inject_delay_s)
        fingerprint = runner.fingerprint
        self._refuse_if_gone(context, fingerprint, caller_gone, deadline, remaining)  # before any decoding work
        try:
            decoded = runner.decode(request)
        except FrameError as e:
            log.warning("refused frame %s: %s", request.request_id or "(no id)", e)
            self._refuse(context, fingerprint, e.status, str(e))
        self.metrics.decoded(fingerprint, decoded.decode_ms / 1e3, decoded.damage)
        frame = PendingFrame(runner, decoded, deadline, caller_gone, settled)
        if not frame.abandoned(monotonic()):
            self.batcher.submit(frame)
            settled.wait(None if deadline is None else max(0.0, deadline - monotonic()))
        if frame.error is not None:
            self._refuse(context, fingerprint, grpc.StatusCode.INTERNAL,
                         f"the tail failed on this frame's batch: {frame.error}")
        if (logits := frame.logits) is not None:
            return frame, logits
        self._refuse_if_gone(context, fingerprint, caller_gone, deadline, remaining)
        raise RuntimeError("a frame settled without logits, error or a reason")  # the worker always sets one

    def _refuse_if_gone(self, context: grpc.ServicerContext, fingerprint: str, caller_gone: threading.Event,
                        deadline: float | None, remaining: float | None) -> None:
        """Aborts with DEADLINE_EXCEEDED or CANCELLED when nobody will read the answer any more."""
        if deadline is not None and monotonic() >= deadline:
            self._refuse(context, fingerprint, grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"the deadline passed before the frame ran ({remaining:.3f} s were left on arrival)")
        if caller_gone.is_set():
            self._refuse(context, fingerprint, grpc.StatusCode.CANCELLED, "the caller cancelled the call")

    def _refuse(self, context: grpc.ServicerContext, fingerprint: str | None, code: grpc.StatusCode,
                message: str) -> NoReturn:
        self.metrics.refused(fingerprint, code.name)
        context.abort(code, message)

    def GetModelInfo(self, request: pb.ModelInfoRequest, context: grpc.ServicerContext) -> pb.ModelInfo:
        """The default model's info, and in ``models`` every served model's (the default first)."""
        info = self._runners[0].model_info()
        info.models.extend(runner.model_info() for runner in self._runners)
        return info


def max_frame_bytes(runners: Sequence[TailRunner]) -> int:
    """Receive limit: the largest legal frame, with margin.

    The raw payload of the largest batch is the largest legal payload: a sparse one exceeds it by
    at most one block header per 4096 bytes plus a ~10-byte stream header (bitarray's sc format),
    an entropy one is never sent longer than raw (shared/codec.py falls back to raw), and "auto"
    sends the smallest; Reed–Solomon parity adds at most MAX_PARITY_BYTES per block (shared/fec.py).
    The envelope (request id, fingerprint, shape) is about 150 bytes. Twice that worst case still
    refuses an absurd message before it is read into memory.
    """
    largest = max(max_payload_length((r.spike_shape[0], r.max_batch, *r.spike_shape[1:]), Codec.SPARSE)
                  for r in runners)
    return 2 * (protected_length(largest, MAX_PARITY_BYTES) + 1024)


def max_reply_bytes(runners: Sequence[TailRunner]) -> int:
    """Send limit: the float32 logits of the largest batch (4 bytes each, packed) and the envelope, doubled."""
    return 2 * max(4 * r.max_batch * r.checkpoint.config.backbone.num_classes + 1024 for r in runners)


class EdgeServer(NamedTuple):
    server: grpc.Server
    health: health.HealthServicer
    servicer: SplitInferenceServicer  # close() it after stopping the server: it stops the inference worker


def create_server(runners: TailRunner | Sequence[TailRunner], max_concurrency: int, inject_delay_s: float = 0.0,
                  metrics: EdgeMetrics | None = None, batching: BatchPolicy = BatchPolicy(),
                  stream_max_s: float = 30.0, max_connection_age_s: float | None = None) -> EdgeServer:
    """The server with all three services registered, serving ``runners`` (the default model first); not yet
    bound to a port or started."""
    runners = [runners] if isinstance(runners, TailRunner) else list(runners)
    workers = max_concurrency * len(runners) + CONTROL_RPCS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edge-rpc"),
        # One thread per admitted RPC (it decodes its frame, then waits for the inference worker), and a
        # frame beyond the slots is refused at once with RESOURCE_EXHAUSTED (the device answers 503)
        # rather than queued without bound, so overload shows instead of growing latency.
        maximum_concurrent_rpcs=workers,
        options=[
            ("grpc.max_receive_message_length", max_frame_bytes(runners)),
            ("grpc.max_send_message_length", max_reply_bytes(runners)),
            # gRPC sets SO_REUSEPORT by default, so a second edge on a busy port would silently share
            # it with the first; fail to bind instead.
            ("grpc.so_reuseport", 0),
            # Connections end now and then (GOAWAY, calls in flight allowed to finish): a client then reconnects,
            # re-resolving the name, and its round robin takes in replicas started since it last looked.
            *([("grpc.max_connection_age_ms", round(max_connection_age_s * 1e3)),
               ("grpc.max_connection_age_grace_ms", round(stream_max_s * 1e3))] if max_connection_age_s else []),
        ],
    )
    servicer = SplitInferenceServicer(runners, max_concurrency, inject_delay_s, metrics, batching, stream_max_s)
    pb_grpc.add_SplitInferenceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return EdgeServer(server, health_servicer, servicer)


def server_credentials(settings: EdgeSettings) -> grpc.ServerCredentials | None:
    """TLS from the settings, requiring client certificates when tls_client_ca is set; None: plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
                                       root_certificates=client_ca, require_client_auth=client_ca is not None)


def serve(runners: Sequence[TailRunner], settings: EdgeSettings) -> int:
    """Serve until SIGTERM or SIGINT, then drain in-flight RPCs for the grace period; returns the exit status."""
    metrics = EdgeMetrics()
    batching = BatchPolicy(settings.batch_max_images, settings.batch_max_wait_ms / 1e3)
    server, health_servicer, servicer = create_server(runners, settings.max_concurrency, settings.inject_delay_s,
                                                      metrics, batching, settings.stream_max_s,
                                                      settings.max_connection_age_s)
    address = f"{settings.host}:{settings.port}"
    security = "plaintext" if settings.tls_cert is None else "mutual TLS" if settings.tls_client_ca else "TLS"
    try:
        credentials = server_credentials(settings)
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except (OSError, RuntimeError) as e:  # the port taken, a TLS file unreadable or not PEM (gRPC logs which)
        log.error("cannot listen on %s (%s): %s", address, security, e)
        return 1
    try:
        metrics_endpoint = MetricsEndpoint.start(metrics, settings.host, settings.metrics_port)
    except OSError as e:  # the metrics port taken
        log.error("cannot serve metrics on port %s: %s", settings.metrics_port, e)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    for service in ("", SERVICE_NAME):  # "" is the whole server, as health probes ask by default
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    for runner in runners:
        log.info("serving the tail after %s of %s model %s (%s)", runner.split_point.name,
                 runner.checkpoint.config.backbone.arch, runner.fingerprint[:12],
                 "trained" if runner.checkpoint.trained else "untrained")
    log.info("%d model(s) on %s:%d (%s)", len(runners), settings.host, port, security)
    if settings.inject_delay_s:
        log.warning("fault injection: every Infer waits %.3f s first", settings.inject_delay_s)
    log.info("micro-batching: up to %d images per tail run, waiting up to %g ms under load; %d frames per model "
             "admitted at once", batching.max_images, settings.batch_max_wait_ms, settings.max_concurrency)
    stop.wait()
    log.info("shutting down; in-flight RPCs get %.1f s", settings.shutdown_grace_s)
    health_servicer.enter_graceful_shutdown()  # probes see NOT_SERVING while the server drains
    server.stop(settings.shutdown_grace_s).wait()
    servicer.close()
    if metrics_endpoint is not None:
        metrics_endpoint.close()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, EdgeSettings)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_from_args(EdgeSettings, args)
    # Before the model loads: a taken port is the commonest start-up failure, and gRPC's own report of
    # it is a C-level log line followed by a generic "Failed to bind".
    if port_in_use(settings.host, settings.port):
        log.error("cannot listen on %s:%d: the port is already in use (another edge?); free it or choose "
                  "another with --port or SBN_EDGE_PORT", settings.host, settings.port)
        return 1
    configure_torch_threads(settings.threads)
    try:
        runners = load_tails(settings.checkpoint_paths(), settings.max_batch)
    except ValueError as e:
        log.error("cannot load the tail: %s", e)
        return 1
    for runner in runners:  # before the port opens: the health service says SERVING only when frames run at speed
        runner.warm_up()
    return serve(runners, settings)
