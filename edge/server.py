"""``sbn edge``: the tail half served over gRPC (``spikebottlenet.v1.SplitInference``).

    device --SpikeFrame--> SplitInferenceServicer -> TailRunner (decode, decoder + tail) --Logits--> device
    device --SpikeStep per time step--> InferStream -> SpikeStream (edge/stream.py) --RunningLogits per step-->

One edge serves one or several models (``--checkpoint`` repeated, or ``--models all``): each frame
names its model by fingerprint and is routed to that model's tail, with admission slots, a batching
queue and metrics per model, and one inference worker for all of them.

The server is asyncio's (``grpc.aio``): a call waiting for its request, a stream's next step, a free slot or the
inference worker holds no thread, only its coroutine. So calls that send nothing cannot starve the others: health
checks and GetModelInfo are answered on the event loop at once whatever the other calls do, and a frame is refused
only when its model's slots are taken. CPU work stays off the loop: decoding a frame and a stream's steps run on
worker threads, every whole frame's tail on the one inference worker (edge/micro_batcher.py).

Streams: one client address may have ``max_streams_per_peer`` InferStream calls open at once, counted from the
call's first byte; a stream whose next step does not come within ``stream_step_s`` is cancelled; from its first
step, which names its model, to its end (``stream_max_s`` at most) it holds one of that model's slots.

A request that does not parse is refused with INVALID_ARGUMENT and one log line (gRPC's own deserialization would
answer INTERNAL and log a traceback per message). An error's details name what is wrong with the request, or say
that the edge failed, never the edge's internals: those go to its log.

Next to it run the standard health service (``grpc.health.v1.Health``: SERVING once the model is
loaded and the port is open, NOT_SERVING while shutting down) and server reflection, so
``grpc_health_probe`` and ``grpcurl`` work without the proto files.

The port speaks plaintext by default, TLS with ``tls_cert`` and ``tls_key``, and mutual TLS with
``tls_client_ca`` too: then every client, health probes included, must present a certificate signed
by that CA, and one without is refused in the handshake, before any RPC.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import Any, NamedTuple, NoReturn, TypeVar

import grpc
import torch
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from spikebottlenet.shared.batching import BatchPolicy
from spikebottlenet.shared.codec import Codec, max_payload_length
from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.fec import MAX_PARITY_BYTES, protected_length
from spikebottlenet.shared.ports import port_in_use
from spikebottlenet.shared.rpc.wire import MAX_REQUEST_ID_LENGTH, MIN_PING_INTERVAL_S, SERVICE_NAME
from spikebottlenet.shared.settings import add_settings_arguments, settings_from_args
from spikebottlenet.shared.torch_runtime import configure_torch_threads
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc

from .metrics import EdgeMetrics, MetricsEndpoint
from .micro_batcher import PendingFrame, TailBatcher, WorkerStopped
from .settings import EdgeSettings
from .stream import SpikeStream
from .tail_runner import FrameError, TailRunner, load_tails, not_served

log = logging.getLogger("sbn.edge")

T = TypeVar("T")
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Malformed:
    """A request message that does not parse, handed to the servicer in its place (see ``parser``)."""

    type_name: str  # the message type it should have been
    error: str


def parser(message_type: type[M]) -> Callable[[bytes], M | Malformed]:
    """The request deserializer of ``message_type``: a message that does not parse comes back as Malformed, which
    the servicer refuses with INVALID_ARGUMENT. (A deserializer that raises ends the call in gRPC itself, with
    UNKNOWN or INTERNAL and a traceback in the log for every such message.)"""

    def parse(data: bytes) -> M | Malformed:
        try:
            return message_type.FromString(data)
        except DecodeError as e:
            return Malformed(message_type.DESCRIPTOR.full_name, str(e))

    return parse


def client_address(peer: str) -> str:
    """A call's client without its port (``ipv4:10.0.0.7:53422`` -> ``ipv4:10.0.0.7``): what a client's
    connections have in common."""
    return peer.rpartition(":")[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


def logged_id(request_id: str) -> str:
    """A client's request id as a log line quotes it: escaped, and cut at the longest id an edge accepts."""
    if not request_id:
        return "(no id)"
    return ascii(request_id[:MAX_REQUEST_ID_LENGTH]) + ("..." if len(request_id) > MAX_REQUEST_ID_LENGTH else "")


async def off_loop(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` on a worker thread, the event loop free meanwhile. A call cancelled meanwhile waits for
    the work to finish before it ends: the slot it holds then bounds the work under way, cancelled or not."""
    work = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():  # a second cancellation (stream_max_s, then the client's) must not cut this short
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue
        raise


def _resolve(answered: asyncio.Future[None]) -> None:
    if not answered.done():  # the call may have stopped waiting (cancelled, timed out)
        answered.set_result(None)


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value; None: the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else monotonic() + remaining


@dataclass(frozen=True)
class StreamLimits:
    max_s: float = 30.0  # the longest an InferStream call may stay open
    step_s: float = 1.0  # the longest it may wait for its next step: its first after opening, each later one after
    #                      the answer to the one before
    per_peer: int = 32  # the calls one client address may have open at once


@dataclass
class ServedModel:
    runner: TailRunner
    slots: threading.BoundedSemaphore  # its frames admitted at once, queued or running, streams from their first step


class SplitInferenceServicer(pb_grpc.SplitInferenceServicer):
    """Routes each frame to its model by fingerprint, admits up to ``max_concurrency`` frames per model at
    once (queued or running), decodes each on a worker thread and hands it to the micro-batcher's one
    inference worker (edge/micro_batcher.py).

    Deadlines: a frame whose caller's deadline passes while it waits is answered DEADLINE_EXCEEDED then, and
    dropped by the worker if it has not run. A caller that cancels (or times out) frees its slot at once: gRPC
    cancels the call's coroutine, which releases the slot, and the worker skips the frame if it has not run yet.
    """

    def __init__(
        self,
        runners: Sequence[TailRunner],
        max_concurrency: int,
        inject_delay_s: float = 0.0,
        metrics: EdgeMetrics | None = None,
        batching: BatchPolicy = BatchPolicy(),
        streams: StreamLimits = StreamLimits(),
    ) -> None:
        """``runners``: the served models, the default one (whose info GetModelInfo leads with) first."""
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
        self._streams = streams
        self._open_streams: Counter[str] = Counter()  # client address -> its InferStream calls open now
        self.batcher = TailBatcher(batching, self.metrics)
        self.served_by = f"{socket.gethostname()}:{os.getpid()}"  # replicas behind one name tell themselves apart

    def close(self) -> None:
        """Stop the inference worker (after the server has stopped taking RPCs)."""
        self.batcher.close()

    async def Infer(self, request: pb.SpikeFrame | Malformed, context: grpc.aio.ServicerContext) -> pb.Logits:
        received = perf_counter()
        request = await self._well_formed(request, context)
        model = await self._admit(request.model_fingerprint, context)
        fingerprint = model.runner.fingerprint
        deadline = call_deadline(context)
        try:
            frame, logits = await self._run(model.runner, request, deadline, context)
        except asyncio.CancelledError:  # gRPC ended the call: the caller cancelled, or its deadline passed
            late = deadline is not None and monotonic() >= deadline
            self.metrics.refused(fingerprint, "DEADLINE_EXCEEDED" if late else "CANCELLED")
            raise
        finally:
            model.slots.release()
        batch, classes = logits.shape
        self.metrics.answered(fingerprint, batch)
        timing = pb.EdgeTiming(
            decode_ms=frame.decoded.decode_ms,
            inference_ms=frame.inference_ms,
            total_ms=(perf_counter() - received) * 1e3,
            queue_ms=frame.queue_ms,
            batch_images=frame.batch_images,
        )
        return pb.Logits(
            request_id=request.request_id,
            batch_size=batch,
            num_classes=classes,
            values=logits.reshape(-1).tolist(),
            timing=timing,
            model_fingerprint=fingerprint,
            damage=frame.decoded.damage,
            served_by=self.served_by,
        )

    async def _run(
        self, runner: TailRunner, request: pb.SpikeFrame, deadline: float | None, context: grpc.aio.ServicerContext
    ) -> tuple[PendingFrame, torch.Tensor]:
        """The frame and its logits [B, num_classes]; every other outcome aborts the RPC with the status that says
        why."""
        arrived = monotonic()
        if self._inject_delay_s:
            await asyncio.sleep(self._inject_delay_s)
        fingerprint = runner.fingerprint
        try:
            decoded = await off_loop(runner.decode, request)
        except FrameError as e:
            log.warning("refused frame %s: %s", logged_id(request.request_id), e)
            await self._refuse(context, fingerprint, e.status, str(e))
        except Exception:  # noqa: BLE001 - a fault of this edge's: answered without its internals, never a crash
            log.exception("frame %s failed to decode", logged_id(request.request_id))
            await self._refuse(
                context,
                fingerprint,
                grpc.StatusCode.INTERNAL,
                "the edge failed to decode this frame (the edge's log has the details)",
            )
        self.metrics.decoded(fingerprint, decoded.decode_ms / 1e3, decoded.damage)
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        frame = PendingFrame(runner, decoded, deadline, lambda: loop.call_soon_threadsafe(_resolve, answered))
        try:
            if not frame.abandoned(monotonic()):
                self.batcher.submit(frame)
                async with asyncio.timeout_at(deadline):
                    await answered
        except TimeoutError:
            pass  # no logits: answered DEADLINE_EXCEEDED below
        except WorkerStopped:  # a frame that arrived as the edge shuts down
            await self._refuse(context, fingerprint, grpc.StatusCode.UNAVAILABLE, "the edge is shutting down")
        finally:
            frame.withdrawn.set()  # however the wait ended: a frame that has not run by now never will
        if frame.error is not None:
            await self._refuse(
                context,
                fingerprint,
                grpc.StatusCode.INTERNAL,
                "the edge failed on this frame's batch (the edge's log has the details)",
            )
        if (logits := frame.logits) is not None:
            return frame, logits
        if deadline is None:  # the worker drops a frame only once its call has withdrawn it or its deadline passed
            log.error("frame %s settled without logits, an error or a deadline", logged_id(request.request_id))
            await self._refuse(
                context,
                fingerprint,
                grpc.StatusCode.INTERNAL,
                "the edge failed on this frame (the edge's log has the details)",
            )
        await self._refuse(
            context,
            fingerprint,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the deadline passed before the frame ran ({deadline - arrived:.3f} s were left on arrival)",
        )

    async def InferStream(
        self, requests: AsyncIterator[pb.SpikeStep | Malformed], context: grpc.aio.ServicerContext
    ) -> None:
        """A frame one time step per message, each answered with the running logits (edge/stream.py), run at once,
        between the inference worker's batches (a stream is not batched: its state is its own). Read and written
        with ``context.read()`` and ``write()``, so that the wait for the first step can be cut short."""
        client = client_address(context.peer())
        if self._open_streams[client] >= self._streams.per_peer:
            log.warning("refused a stream from %s: it has %d open already", client, self._open_streams[client])
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streams: this client has {self._open_streams[client]} InferStream calls "
                f"open, the most one client may (max_streams_per_peer = {self._streams.per_peer}); "
                f"finish one first",
            )
        self._open_streams[client] += 1
        self.metrics.stream_opened()
        try:
            async with asyncio.timeout(self._streams.max_s):
                await self._stream(context)
        except TimeoutError:  # a client that leaves a stream hanging holds its slot until here
            await context.abort(
                grpc.StatusCode.CANCELLED,
                f"the stream stayed open longer than stream_max_s ({self._streams.max_s:g} s)",
            )
        finally:
            self._open_streams[client] -= 1
            if not self._open_streams[client]:
                del self._open_streams[client]
            self.metrics.stream_closed()

    async def _stream(self, context: grpc.aio.ServicerContext) -> None:
        first = await self._first_step(context)
        if first is None:
            return  # closed without a step: nothing to answer
        model = await self._admit(first.model_fingerprint, context)
        fingerprint = model.runner.fingerprint
        try:
            stream = await self._open_stream(model.runner, first, context)
            message: pb.SpikeStep = first
            while True:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    await self._refuse(
                        context,
                        fingerprint,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "the stream's deadline passed before this step ran",
                    )
                await context.write(await self._step(stream, message, context))
                self.metrics.stream_step(fingerprint)
                if (received := await self._next_step(context, stream.steps)) is None:
                    return
                message = received
        finally:
            model.slots.release()

    async def _first_step(self, context: grpc.aio.ServicerContext) -> pb.SpikeStep | None:
        """The stream's first message; None if it closes without one. Until it comes the stream holds no slot (it
        names the model), but it holds one of its peer's streams."""
        return await self._next_step(context, 0)

    async def _next_step(self, context: grpc.aio.ServicerContext, step: int) -> pb.SpikeStep | None:
        """Message ``step`` of the stream; None if the client ends it instead. A stream whose next step does not
        come within stream_step_s is cancelled: one that stops sending would otherwise hold what it holds (a
        slot from its first step) until stream_max_s."""
        try:
            async with asyncio.timeout(self._streams.step_s):
                received = await context.read()
        except TimeoutError:
            log.warning(
                "cancelled a stream from %s: no step %d within %g s",
                client_address(context.peer()),
                step,
                self._streams.step_s,
            )
            await context.abort(
                grpc.StatusCode.CANCELLED,
                f"no step {step} within stream_step_s ({self._streams.step_s:g} s) of "
                + ("opening the stream" if step == 0 else "the answer to the step before"),
            )
        return None if received is grpc.aio.EOF else await self._well_formed(received, context)

    async def _open_stream(
        self, runner: TailRunner, first: pb.SpikeStep, context: grpc.aio.ServicerContext
    ) -> SpikeStream:
        try:
            return SpikeStream(runner, first)
        except FrameError as e:
            log.warning("refused stream %s: %s", logged_id(first.request_id), e)
            await self._refuse(context, runner.fingerprint, e.status, str(e))

    async def _step(
        self, stream: SpikeStream, message: pb.SpikeStep, context: grpc.aio.ServicerContext
    ) -> pb.RunningLogits:
        fingerprint = stream.runner.fingerprint
        try:
            return await off_loop(stream.run, message)
        except FrameError as e:
            log.warning("refused stream %s at step %d: %s", logged_id(stream.first.request_id), stream.steps, e)
            await self._refuse(context, fingerprint, e.status, str(e))
        except Exception:  # noqa: BLE001 - a fault of this edge's, answered as such, never a crash
            log.exception("stream %s failed at step %d", logged_id(stream.first.request_id), stream.steps)
            await self._refuse(
                context,
                fingerprint,
                grpc.StatusCode.INTERNAL,
                f"the edge failed on step {stream.steps} (the edge's log has the details)",
            )

    async def _well_formed(self, message: M | Malformed, context: grpc.aio.ServicerContext) -> M:
        if isinstance(message, Malformed):
            log.warning(
                "refused a malformed %s from %s: %s", message.type_name, client_address(context.peer()), message.error
            )
            await self._refuse(
                context,
                None,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the message is not a valid {message.type_name}: {message.error}",
            )
        return message

    async def _admit(self, fingerprint: str, context: grpc.aio.ServicerContext) -> ServedModel:
        """The served model a frame names, one of its slots taken; aborts with FAILED_PRECONDITION for a model this
        edge does not serve, RESOURCE_EXHAUSTED when every slot is taken."""
        model = self._models.get(fingerprint)
        if model is None:
            refusal = not_served(fingerprint, self._runners)
            await self._refuse(context, None, refusal.status, str(refusal))
        if not model.slots.acquire(blocking=False):
            await self._refuse(
                context,
                model.runner.fingerprint,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"edge is busy: all {self._max_concurrency} inference slots of model "
                f"{model.runner.fingerprint[:12]} ({model.runner.split_point.name}) are taken; retry "
                f"later",
            )
        return model

    async def _refuse(
        self, context: grpc.aio.ServicerContext, fingerprint: str | None, code: grpc.StatusCode, message: str
    ) -> NoReturn:
        self.metrics.refused(fingerprint, code.name)
        await context.abort(code, message)

    async def GetModelInfo(
        self, request: pb.ModelInfoRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        """The default model's info, and in ``models`` every served model's (the default first)."""
        await self._well_formed(request, context)
        info = self._runners[0].model_info()
        info.models.extend(runner.model_info() for runner in self._runners)
        return info


def add_servicer(servicer: SplitInferenceServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated ``add_SplitInferenceServicer_to_server`` does, with ``parser``'s
    request deserializers."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Infer": grpc.unary_unary_rpc_method_handler(
            servicer.Infer, request_deserializer=parser(pb.SpikeFrame), response_serializer=pb.Logits.SerializeToString
        ),
        "InferStream": grpc.stream_stream_rpc_method_handler(
            servicer.InferStream,
            request_deserializer=parser(pb.SpikeStep),
            response_serializer=pb.RunningLogits.SerializeToString,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo,
            request_deserializer=parser(pb.ModelInfoRequest),
            response_serializer=pb.ModelInfo.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def max_frame_bytes(runners: Sequence[TailRunner]) -> int:
    """Receive limit: the largest legal frame, with margin.

    The raw payload of the largest batch is the largest legal payload: a sparse one exceeds it by
    at most one block header per 4096 bytes plus a ~10-byte stream header (bitarray's sc format),
    an entropy one is never sent longer than raw (shared/codec.py falls back to raw), and "auto"
    sends the smallest; Reed–Solomon parity adds at most MAX_PARITY_BYTES per block (shared/fec.py).
    The envelope (request id, fingerprint, shape) is about 150 bytes. Twice that worst case still
    refuses an absurd message before it is read into memory.
    """
    largest = max(
        max_payload_length((r.spike_shape[0], r.max_batch, *r.spike_shape[1:]), Codec.SPARSE) for r in runners
    )
    return 2 * (protected_length(largest, MAX_PARITY_BYTES) + 1024)


def max_reply_bytes(runners: Sequence[TailRunner]) -> int:
    """Send limit: the float32 logits of the largest batch (4 bytes each, packed) and the envelope, doubled."""
    return 2 * max(4 * r.max_batch * r.checkpoint.config.backbone.num_classes + 1024 for r in runners)


class EdgeServer(NamedTuple):
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    servicer: SplitInferenceServicer  # close() it after stopping the server: it stops the inference worker


def create_server(
    runners: TailRunner | Sequence[TailRunner],
    max_concurrency: int,
    inject_delay_s: float = 0.0,
    metrics: EdgeMetrics | None = None,
    batching: BatchPolicy = BatchPolicy(),
    streams: StreamLimits = StreamLimits(),
    max_connection_age_s: float | None = None,
) -> EdgeServer:
    """The server with all three services registered, serving ``runners`` (the default model first); not yet
    bound to a port or started. Call it on the event loop that will run the server."""
    runners = [runners] if isinstance(runners, TailRunner) else list(runners)
    server = grpc.aio.server(
        # No maximum_concurrent_rpcs: a call holds no thread, every frame beyond its model's slots is refused at
        # once with RESOURCE_EXHAUSTED (the device answers 503) rather than queued without bound, and streams are
        # bounded per client; a cap on all calls would also refuse health checks and GetModelInfo once reached.
        options=[
            ("grpc.max_receive_message_length", max_frame_bytes(runners)),
            ("grpc.max_send_message_length", max_reply_bytes(runners)),
            # gRPC sets SO_REUSEPORT by default, so a second edge on a busy port would silently share
            # it with the first; fail to bind instead.
            ("grpc.so_reuseport", 0),
            # Devices ping a connection that has been silent for a while, to find a hung edge (device/edge_client.py);
            # by default gRPC takes a ping within 5 minutes of the last one as abuse and closes the connection.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", round(MIN_PING_INTERVAL_S * 1e3)),
            ("grpc.keepalive_permit_without_calls", 1),  # a ping just after the last call has ended is no abuse either
            # Connections end now and then (GOAWAY, calls in flight allowed to finish): a client then reconnects,
            # re-resolving the name, and its round robin takes in replicas started since it last looked.
            *(
                [
                    ("grpc.max_connection_age_ms", round(max_connection_age_s * 1e3)),
                    ("grpc.max_connection_age_grace_ms", round(streams.max_s * 1e3)),
                ]
                if max_connection_age_s
                else []
            ),
        ],
    )
    servicer = SplitInferenceServicer(runners, max_concurrency, inject_delay_s, metrics, batching, streams)
    add_servicer(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return EdgeServer(server, health_servicer, servicer)


def server_credentials(settings: EdgeSettings) -> grpc.ServerCredentials | None:
    """TLS from the settings, requiring client certificates when tls_client_ca is set; None: plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def serve(runners: Sequence[TailRunner], settings: EdgeSettings) -> int:
    """Serve until SIGTERM or SIGINT, then drain in-flight RPCs for the grace period; returns the exit status."""
    metrics = EdgeMetrics()
    batching = settings.batch_policy
    streams = StreamLimits(settings.stream_max_s, settings.stream_step_s, settings.max_streams_per_peer)
    server, health_servicer, servicer = create_server(
        runners,
        settings.max_concurrency,
        settings.inject_delay_s,
        metrics,
        batching,
        streams,
        settings.max_connection_age_s,
    )
    address = f"{settings.host}:{settings.port}"
    security = "plaintext" if settings.tls_cert is None else "mutual TLS" if settings.tls_client_ca else "TLS"
    try:
        credentials = server_credentials(settings)
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except (OSError, RuntimeError) as e:  # the port taken, a TLS file unreadable or not PEM (gRPC logs which)
        log.error("cannot listen on %s (%s): %s", address, security, e)
        servicer.close()
        return 1
    try:
        metrics_endpoint = MetricsEndpoint.start(metrics, settings.host, settings.metrics_port)
    except OSError as e:  # the metrics port taken
        log.error("cannot serve metrics on port %s: %s", settings.metrics_port, e)
        servicer.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    for service in ("", SERVICE_NAME):  # "" is the whole server, as health probes ask by default
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    for runner in runners:
        log.info(
            "serving the tail after %s of %s model %s (%s)",
            runner.split_point.name,
            runner.checkpoint.config.backbone.arch,
            runner.fingerprint[:12],
            "trained" if runner.checkpoint.trained else "untrained",
        )
    log.info("%d model(s) on %s:%d (%s)", len(runners), settings.host, port, security)
    if settings.inject_delay_s:
        log.warning("fault injection: every Infer waits %.3f s first", settings.inject_delay_s)
    log.info(
        "micro-batching: up to %d images per tail run, waiting up to %g ms under load; %d frames per model "
        "admitted at once",
        batching.max_images,
        settings.batch_max_wait_ms,
        settings.max_concurrency,
    )
    await stop.wait()
    log.info("shutting down; in-flight RPCs get %.1f s", settings.shutdown_grace_s)
    await health_servicer.enter_graceful_shutdown()  # probes see NOT_SERVING while the server drains
    await server.stop(settings.shutdown_grace_s)
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
        log.error(
            "cannot listen on %s:%d: the port is already in use (another edge?); free it or choose "
            "another with --port or SBN_EDGE_PORT",
            settings.host,
            settings.port,
        )
        return 1
    configure_torch_threads(settings.threads)
    try:
        runners = load_tails(settings.checkpoint_paths(), settings.max_batch, settings.device, settings.precision)
    except SpikeBottleNetError as e:
        log.error("cannot load the tail: %s", e)
        return 1
    for runner in runners:  # before the port opens: the health service says SERVING only when frames run at speed
        runner.warm_up()
    return asyncio.run(serve(runners, settings))
