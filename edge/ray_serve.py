"""``sbn serve-ray``: the tail as a Ray Serve deployment behind Serve's gRPC proxy, speaking the same
``spikebottlenet.v1.SplitInference`` service as ``sbn edge``, so that an unchanged ``sbn device`` can point at it.

    pip install '.[ray]'
    sbn serve-ray                        # a local Ray instance; Serve's gRPC proxy on :50051, 1..4 replicas by load
    sbn serve-ray --address auto         # the Ray cluster this machine belongs to (KubeRay: see docs/deploy.md)

Where ``sbn edge`` batches with its own inference worker (edge/micro_batcher.py), a replica batches with
``@serve.batch``: the frames that reach one replica together run through the tail as one batch of up to
batch_max_images images, the replica waiting up to batch_max_wait_ms for them. Serve places the replicas (each
reserves cpus_per_replica of the cluster's CPUs and runs torch on ``threads``), spreads the frames over them, and adds
or removes replicas by the frames each has in flight (min_replicas..max_replicas), unless ``replicas`` fixes the count.

Frames are checked and refused exactly as by ``sbn edge`` (INVALID_ARGUMENT, FAILED_PRECONDITION, naming the
problem); InferStream streams as it does there. Not carried, because Serve's proxy does not: TLS, and the
grpc.health.v1 service (Serve answers its own ``ray.serve.RayServeAPIService/Healthz`` and HTTP ``/-/healthz``; the
device's /readyz asks GetModelInfo, which the replicas answer).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import Any, NoReturn

try:
    import ray
    from ray import serve
    from ray.serve.config import AutoscalingConfig, gRPCOptions
    from ray.serve.grpc_util import RayServegRPCContext
except ImportError as e:  # an optional extra: say how to get it instead of a traceback
    raise SystemExit(
        f"sbn serve-ray needs Ray Serve, which is not installed ({e}): pip install 'spikebottlenet[ray]'"
    ) from None
import grpc
import torch
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.ports import port_in_use
from spikebottlenet.shared.settings import add_settings_arguments, settings_from_args
from spikebottlenet.shared.torch_runtime import configure_torch_threads
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc

from .server import max_frame_bytes, max_reply_bytes
from .settings import TailSettings
from .stream import SpikeStream
from .tail_runner import FrameError, TailRunner, load_tails, not_served

log = logging.getLogger("sbn.edge")

APP_NAME = "spikebottlenet"
DEPLOYMENT_NAME = "TailReplica"
# What Serve's proxy imports to carry our service (it must be importable on every node: the project installed there)
SERVICER_FUNCTION = "spikebottlenet.edge.ray_serve.add_servicer_to_server"


def add_servicer_to_server(servicer: object, server: grpc.Server) -> None:
    """Registers ``spikebottlenet.v1.SplitInference`` with Serve's gRPC proxy: the generated function, imported from
    here so that the proxy also imports shared.rpc, which lets it unpickle our messages (see shared/rpc/__init__.py)."""
    pb_grpc.add_SplitInferenceServicer_to_server(servicer, server)


class RayServeSettings(TailSettings):
    model_config = SettingsConfigDict(env_prefix="SBN_RAY_")

    address: str | None = Field(
        None,
        description="the Ray cluster to deploy on (auto: the one this machine belongs to; ray://head:10001 "
        "through Ray Client); unset: start a local Ray instance on this machine's cores",
    )
    port: int = Field(
        50051,
        ge=1,
        le=65535,
        description="port of Serve's gRPC proxy (on every interface), which devices call as they would sbn edge",
    )
    http_host: str = Field("127.0.0.1", description="address of Serve's HTTP proxy (GET /-/healthz, /-/routes)")
    http_port: int = Field(8001, ge=1, le=65535, description="port of Serve's HTTP proxy")
    replicas: int | None = Field(
        None, ge=1, description="run exactly this many replicas; unset: autoscale between min_replicas and max_replicas"
    )
    min_replicas: int = Field(
        1,
        ge=0,
        description="autoscaling: fewest replicas (0 lets an idle tier stop; the "
        "next frame then waits for a replica to start)",
    )
    max_replicas: int = Field(4, ge=1, description="autoscaling: most replicas; each reserves cpus_per_replica")
    target_frames_per_replica: float = Field(
        8.0,
        gt=0,
        description="autoscaling: frames in flight per replica that Serve aims at (its "
        "target_ongoing_requests); more for a while adds a replica, fewer removes one",
    )
    upscale_delay_s: float = Field(
        30.0, ge=0, description="autoscaling: how long the load must call for more replicas before Serve adds them"
    )
    downscale_delay_s: float = Field(
        600.0, ge=0, description="autoscaling: how long the load must call for fewer replicas before Serve removes them"
    )
    max_concurrency: int = Field(
        32,
        ge=1,
        description="frames one replica takes at once (Serve's max_ongoing_requests), at least "
        "batch_max_images so that batches can fill; more wait in Serve's queue",
    )
    cpus_per_replica: float = Field(
        1.0, gt=0, description="CPUs Ray reserves for each replica (threads is what torch uses)"
    )

    @model_validator(mode="after")
    def _bounds(self) -> RayServeSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.max_concurrency < self.batch_max_images:
            raise ValueError(
                f"max_concurrency ({self.max_concurrency}) is below batch_max_images "
                f"({self.batch_max_images}): a replica's batches could never fill"
            )
        return self

    def deployment_options(self) -> dict[str, Any]:
        """Serve's options for the tail deployment, keyword arguments of ``Deployment.options``: the replica count or
        autoscaling bounds, and each replica's share of the cluster."""
        count: dict[str, Any] = (
            {"num_replicas": self.replicas}
            if self.replicas
            else {
                "num_replicas": "auto",
                "autoscaling_config": AutoscalingConfig(
                    min_replicas=self.min_replicas,
                    initial_replicas=max(self.min_replicas, 1),
                    max_replicas=self.max_replicas,
                    target_ongoing_requests=self.target_frames_per_replica,
                    upscale_delay_s=self.upscale_delay_s,
                    downscale_delay_s=self.downscale_delay_s,
                ),
            }
        )
        return {
            **count,
            "max_ongoing_requests": self.max_concurrency,
            "logging_config": {"enable_access_log": False},
            # a replica on a GPU reserves one: Ray shows a replica only the GPUs it reserved
            "ray_actor_options": {
                "num_cpus": self.cpus_per_replica,
                **({"num_gpus": 1} if self.device != "cpu" else {}),
            },
        }


class StreamRefused(Exception):
    """Ends an InferStream call with the status set on its context."""


@dataclass(frozen=True)
class QueuedFrame:
    """A decoded frame on its way into one of the replica's batches."""

    runner: TailRunner
    spikes: torch.Tensor  # [T, B, C', H', W']
    weight: int  # its images toward the batch's limit: capped at the limit, so that a larger frame runs alone
    queued: float  # perf_counter() when it joined the batch queue


@dataclass(frozen=True)
class RanFrame:
    logits: torch.Tensor  # [B, num_classes]: the frame's rows of its batch's logits
    batch_images: int  # images in the tail run that carried it
    inference_ms: float  # that run's decoder + tail
    queue_ms: float  # joined the queue -> its run started


def _batch_weight(frames: list[QueuedFrame]) -> int:
    return sum(frame.weight for frame in frames)


def run_together(frames: Sequence[QueuedFrame]) -> list[RanFrame]:
    """One batch of frames through their tails: one run per model, the frames of a model concatenated along B."""
    ran: dict[int, RanFrame] = {}
    for runner in {id(f.runner): f.runner for f in frames}.values():
        mine = [(i, f) for i, f in enumerate(frames) if f.runner is runner]
        start = perf_counter()
        rows = runner.infer_together([f.spikes for _, f in mine])
        inference_ms = (perf_counter() - start) * 1e3
        images = sum(f.spikes.shape[1] for _, f in mine)
        for (i, frame), logits in zip(mine, rows, strict=True):
            ran[i] = RanFrame(logits, images, inference_ms, (start - frame.queued) * 1e3)
    return [ran[i] for i in range(len(frames))]


class TailReplica:
    """One Serve replica: the served models' tails, and the servicer methods Serve's gRPC proxy calls by name."""

    def __init__(self, settings: RayServeSettings) -> None:
        configure_torch_threads(settings.threads)
        # resolved here, on the replica's node: an embedded model's path is where the project is installed there
        self.runners = load_tails(settings.checkpoint_paths(), settings.max_batch, settings.device, settings.precision)
        for runner in self.runners:  # before Serve counts the replica as running
            runner.warm_up()
        self._by_fingerprint = {runner.fingerprint: runner for runner in self.runners}
        self._max_images = settings.batch_max_images
        # Ray types serve.batch's result as a plain callable; the wrapper it returns also has these setters, which
        # Serve documents for sizing a batch at run time
        self._run_batch.set_max_batch_size(settings.batch_max_images)  # type: ignore[attr-defined]
        self._run_batch.set_batch_wait_timeout_s(settings.batch_max_wait_ms / 1e3)  # type: ignore[attr-defined]
        self._stream_max_s = settings.stream_max_s
        replica = serve.get_replica_context()
        self.served_by = f"{replica.app_name}#{replica.deployment}#{replica.replica_id.unique_id}"
        log.info("replica %s serving %s", self.served_by, ", ".join(r.fingerprint[:12] for r in self.runners))

    async def Infer(self, frame: pb.SpikeFrame, grpc_context: RayServegRPCContext) -> pb.Logits:
        received = perf_counter()
        runner = self._by_fingerprint.get(frame.model_fingerprint)
        try:
            if runner is None:
                raise not_served(frame.model_fingerprint, self.runners)
            # off the event loop, which gathers the batches: Reed-Solomon and entropy decoding are CPU work
            decoded = await asyncio.to_thread(runner.decode, frame)
        except FrameError as e:
            log.warning("refused frame %s: %s", frame.request_id or "(no id)", e)
            return self._refuse(grpc_context, e.status, str(e))
        try:
            ran = await self._run_batch(
                QueuedFrame(runner, decoded.spikes, min(decoded.images, self._max_images), perf_counter())
            )
        except Exception as e:  # noqa: BLE001 - a fault of this replica's, answered as such, never a crash
            log.exception("the tail failed on frame %s", frame.request_id or "(no id)")
            return self._refuse(grpc_context, grpc.StatusCode.INTERNAL, f"the tail failed on this frame's batch: {e}")
        batch, classes = ran.logits.shape
        timing = pb.EdgeTiming(
            decode_ms=decoded.decode_ms,
            inference_ms=ran.inference_ms,
            queue_ms=ran.queue_ms,
            total_ms=(perf_counter() - received) * 1e3,
            batch_images=ran.batch_images,
        )
        return pb.Logits(
            request_id=frame.request_id,
            batch_size=batch,
            num_classes=classes,
            values=ran.logits.reshape(-1).tolist(),
            timing=timing,
            model_fingerprint=runner.fingerprint,
            damage=decoded.damage,
            served_by=self.served_by,
        )

    async def InferStream(
        self, steps: AsyncIterator[pb.SpikeStep], grpc_context: RayServegRPCContext
    ) -> AsyncIterator[pb.RunningLogits]:
        """A frame one time step per message, each answered with the running logits, as sbn edge answers it
        (edge/stream.py); the stream's neuron state lives in this call. Serve's proxy hands each message over
        separately, so a stream costs an actor call per step on top of the step. Cancelled after stream_max_s."""
        stream: SpikeStream | None = None
        messages = aiter(steps)
        ends = monotonic() + self._stream_max_s
        while True:
            try:
                message = await asyncio.wait_for(anext(messages), max(0.0, ends - monotonic()))
            except StopAsyncIteration:
                return
            except TimeoutError:
                self._end_stream(
                    grpc_context,
                    grpc.StatusCode.CANCELLED,
                    f"the stream stayed open longer than stream_max_s ({self._stream_max_s:g} s)",
                )
            try:
                if stream is None:
                    runner = self._by_fingerprint.get(message.model_fingerprint)
                    if runner is None:
                        raise not_served(message.model_fingerprint, self.runners)
                    stream = SpikeStream(runner, message)
                reply = await asyncio.to_thread(stream.run, message)
            except FrameError as e:
                log.warning("refused stream %s at step %d: %s", message.request_id or "(no id)", message.step, e)
                self._end_stream(grpc_context, e.status, str(e))
            except Exception as e:  # noqa: BLE001 - a fault of this replica's, answered as such
                log.exception("stream %s failed", message.request_id or "(no id)")
                self._end_stream(grpc_context, grpc.StatusCode.INTERNAL, f"the tail failed on step {message.step}: {e}")
            yield reply

    @serve.batch(batch_size_fn=_batch_weight)  # sizes set per deployment in __init__
    async def _run_batch(self, frames: list[QueuedFrame]) -> list[RanFrame]:
        # Off the event loop, so that the replica keeps taking frames (the next batch) while this one runs; Serve
        # runs one batch at a time (max_concurrent_batches=1), and a streamed step of the same model waits for it
        # (TailRunner's lock), so frames of one model never run torch side by side.
        return await asyncio.to_thread(run_together, frames)

    def GetModelInfo(self, request: pb.ModelInfoRequest, grpc_context: RayServegRPCContext) -> pb.ModelInfo:
        """As sbn edge answers it: the default model's info, and every served model's in ``models``."""
        info = self.runners[0].model_info()
        info.models.extend(runner.model_info() for runner in self.runners)
        return info

    @staticmethod
    def _refuse(grpc_context: RayServegRPCContext, code: grpc.StatusCode, message: str) -> pb.Logits:
        """Ends the call with ``code`` and ``message``; the returned message is not sent."""
        grpc_context.set_code(code)
        grpc_context.set_details(message)
        return pb.Logits()

    @staticmethod
    def _end_stream(grpc_context: RayServegRPCContext, code: grpc.StatusCode, message: str) -> NoReturn:
        """Ends a stream with ``code`` and ``message``: Serve takes a stream's status from the exception that ends
        it (with the code set on the context), not from the context alone."""
        grpc_context.set_code(code)
        grpc_context.set_details(message)
        raise StreamRefused(message) from None


def application(settings: RayServeSettings) -> serve.Application:
    """The tail deployment and its settings (the replicas read the checkpoints: a checkpoint given by path must exist
    on every node; the embedded demo models do wherever the project is installed)."""
    deployment = serve.deployment(name=DEPLOYMENT_NAME)(TailReplica).options(**settings.deployment_options())
    return deployment.bind(settings)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve's application builder, for a Serve config file (``import_path:
    spikebottlenet.edge.ray_serve:build_app``, as a KubeRay RayService deploys it, or ``serve run``): ``args`` are
    RayServeSettings fields, e.g. ``{"max_replicas": 8}``."""
    return application(RayServeSettings(**args))


def deploy(settings: RayServeSettings) -> None:
    """Starts Serve (its controller and proxies) on the connected Ray cluster and deploys the tail application;
    returns once every initial replica has loaded its tails and the proxy routes to them."""
    # No access log: a log line per frame costs the proxy and the replicas more than decoding the frame does
    serve.start(
        http_options={"host": settings.http_host, "port": settings.http_port},
        grpc_options=gRPCOptions(port=settings.port, grpc_servicer_functions=[SERVICER_FUNCTION]),
        logging_config={"enable_access_log": False},
    )
    # An unchanged device sends no `application` key in its calls' metadata: Serve's gRPC proxy then routes to the
    # only application there is, so the cluster's Serve must run this one alone (route_prefix is HTTP's)
    serve.run(application(settings), name=APP_NAME, route_prefix="/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, RayServeSettings)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_from_args(RayServeSettings, args)
    # the replicas' working directory is not this one: a checkpoint given by a relative path goes as an absolute one
    settings = settings.model_copy(update={"checkpoint": [path.resolve() for path in settings.checkpoint]})
    local = settings.address is None
    # Serve's proxies listen on [::]:port (gRPC) and http_host:http_port on this machine when Ray runs here
    taken = [
        f"{host}:{port}"
        for host, port in (
            ("[::]", settings.port),
            ("0.0.0.0", settings.port),
            (settings.http_host, settings.http_port),
        )
        if local and port_in_use(host, port)
    ]
    if taken:
        log.error(
            "cannot listen on %s: already in use (an edge? another Serve?); choose other ports with --port, "
            "--http-port or SBN_RAY_PORT, SBN_RAY_HTTP_PORT",
            taken[0],
        )
        return 1
    try:  # here first, so that a bad checkpoint is one clear line, not a replica failing to start over and over
        runners = load_tails(settings.checkpoint_paths(), settings.max_batch, settings.device, settings.precision)
    except SpikeBottleNetError as e:
        log.error("cannot load the tail: %s", e)
        return 1
    if local:
        # Read by Serve's proxy when it starts, from the environment the local instance's processes inherit (on an
        # existing cluster, that cluster's own): its message limit, for requests and replies alike, sbn edge's
        # largest; and no port sharing (Serve's default), so that a second Serve on this port fails rather than
        # taking half of the first one's connections.
        os.environ["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"] = str(max(max_frame_bytes(runners), max_reply_bytes(runners)))
        os.environ.setdefault("SERVE_SOCKET_REUSE_PORT_ENABLED", "0")
    models = len(runners)
    del runners
    # "local": a new instance on this machine, never one that RAY_ADDRESS or an earlier `ray start` left running
    ray.init(address=settings.address or "local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        try:
            deploy(settings)
        except RuntimeError as e:  # Serve gave up on the application (a replica kept failing to start)
            log.error("Ray Serve could not deploy the tail: %s", e)
            return 1
        scale = (
            f"{settings.replicas} replica(s)"
            if settings.replicas
            else f"{settings.min_replicas}..{settings.max_replicas} replicas by load"
        )
        log.info(
            "serving %d model(s) through Ray Serve's gRPC proxy on port %d (%s, %g CPU each); HTTP health on "
            "%s:%d/-/healthz",
            models,
            settings.port,
            scale,
            settings.cpus_per_replica,
            settings.http_host,
            settings.http_port,
        )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        log.info("shutting down: Serve lets the frames in flight finish")
    finally:
        try:
            if local:
                serve.shutdown()  # drains the proxies and replicas
            else:  # a shared cluster: take this application down, not Serve or its other applications
                serve.delete(APP_NAME)
        except Exception:  # noqa: BLE001 - stopping goes on: a failed deploy may have left nothing to stop
            log.exception("could not stop the application cleanly")
        finally:
            ray.shutdown()  # a local instance stops with it
    return 0
