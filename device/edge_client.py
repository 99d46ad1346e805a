"""The device's side of the gRPC call: one channel to the edge, gRPC failures as typed exceptions.

The channel is asyncio-native (``grpc.aio``), so a request waiting on the edge holds no thread of
the HTTP server. It is opened once and reconnects by itself: an edge that was down when the device
started, or restarted since, is picked up again without restarting the device. It speaks TLS when
the settings name a CA (``channel_credentials``), presenting a client certificate if one is set.

The edge admits a fixed number of frames at once and refuses more as busy rather than queueing them
without bound. So the device keeps its own calls within that number (``max_edge_calls``): a burst of
uploads waits here, within each request's deadline, for a call to come free, instead of being turned
into 503s. Every call carries what is left of its request's deadline as the gRPC deadline, so the edge
drops a frame nobody waits for any more.

Every reply is checked against its frame (request id, model, batch size, class count, number of
values): a reply that does not fit is a bad gateway (502) naming the mismatch, never an exception
further on.

A hung edge replica (a stopped process, a frozen host, a dead link) keeps its connection open and answers
nothing, so gRPC would go on sending it frames. The channel pings an edge connection that has said nothing for
``keepalive_s`` while calls are open on it, and closes it when a ping goes unanswered for ``keepalive_timeout_s``:
the frames on it then fail UNAVAILABLE and are sent again to another replica (the retry policy below), and round
robin takes no more frames there until it answers again. (An edge must accept pings that often: ``sbn edge``
does, Ray Serve's proxy does not.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter
from types import TracebackType

import grpc
import numpy as np

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.rpc.wire import SERVICE_NAME
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc

from . import edge_replicas
from .deadline import Deadline
from .settings import DeviceSettings


class EdgeError(SpikeBottleNetError):
    """The edge did not return logits for a frame."""


class EdgeUnavailable(EdgeError):
    """Not reachable (down, or the TLS handshake failed), busy, or the call was cancelled: worth retrying later."""


class EdgeTimeout(EdgeError):
    """No answer within the request's deadline."""


class EdgeModelMismatch(EdgeError):
    """The edge serves a different checkpoint than this device's head: a deployment error."""


class EdgeRejected(EdgeError):
    """The edge refused the frame (INVALID_ARGUMENT) or failed on it (UNKNOWN, INTERNAL, ...)."""


class EdgeBadReply(EdgeError):
    """The edge answered, but not with the logits of the frame it was sent."""


# gRPC status -> failure; any other code is EdgeRejected. UNAVAILABLE, RESOURCE_EXHAUSTED and
# CANCELLED mean "the edge could not take this now" (down, busy, or shutting down and cancelling its
# calls) rather than "something is wrong with it".
_ERRORS: dict[grpc.StatusCode, type[EdgeError]] = {
    grpc.StatusCode.UNAVAILABLE: EdgeUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EdgeUnavailable,
    grpc.StatusCode.CANCELLED: EdgeUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: EdgeTimeout,
    grpc.StatusCode.FAILED_PRECONDITION: EdgeModelMismatch,
}

# gRPC backs off exponentially between reconnection attempts, up to 120 s by default: an edge
# restarted after a few minutes would wait that long to be tried again. Edges sit next to the
# device (LAN or loopback), so retrying at least every 2 s is cheap.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    (
        "grpc.service_config",
        json.dumps(
            {
                # Every address the target resolves to (Compose replicas of the edge: one per container) gets a
                # connection, and calls take turns over the ready ones; an edge's max_connection_age closes connections
                # now and then, and each reconnection re-resolves the name, so replicas that start later join in.
                "loadBalancingConfig": [{"round_robin": {}}],
                # A frame on its way to an edge replica that dies (its connection reset before the channel knew) fails
                # UNAVAILABLE; Infer is a pure function of the frame, so gRPC sends it again (up to twice more, round
                # robin moving on to the next replica), within the call's deadline (a lone edge that is down: the
                # retries find no ready replica and fail too, within ~60 ms). Not InferStream: a stream's state lives in
                # the replica that ran it. Under Ray Serve a replica that dies mid-call is reported INTERNAL by Serve's
                # proxy, and not retried. Throttled: once about 50 calls have failed with few successes between (a whole
                # tier down, not one replica among many), gRPC stops retrying until calls succeed again.
                "methodConfig": [
                    {
                        "name": [
                            {"service": SERVICE_NAME, "method": "Infer"},
                            {"service": SERVICE_NAME, "method": "GetModelInfo"},
                        ],
                        "retryPolicy": {
                            "maxAttempts": 3,
                            "initialBackoff": "0.02s",
                            "maxBackoff": "0.2s",
                            "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ],
                "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
            }
        ),
    ),
    # gRPC re-resolves a name at most every 30 s by default; replicas come and go faster than that
    ("grpc.dns_min_time_between_resolutions_ms", 5000),
]


def keepalive_options(interval_s: float, timeout_s: float) -> list[tuple[str, int]]:
    """Channel options that ping a connection silent for ``interval_s`` while calls are open on it, and close it
    when a ping goes unanswered for ``timeout_s``; none for ``interval_s`` 0."""
    if not interval_s:
        return []
    timeout_ms = round(timeout_s * 1e3)
    return [
        ("grpc.keepalive_time_ms", round(interval_s * 1e3)),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # A keepalive ping waits while another ping is unanswered (one at a time), such as gRPC's own flow-control
        # probe, whose timeout is a minute by default: any ping unanswered this long closes the connection.
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        # by default a client sends two pings at most until it next sends data: a hung replica with calls stuck
        # on it and no new ones would be pinged twice and then not again
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass(frozen=True)
class EdgeReply:
    logits: np.ndarray  # float32 [B, num_classes]
    edge_ms: float  # the edge's own time, receipt to reply
    round_trip_ms: float  # as the device saw it: the edge's time plus the network and (de)serialization
    edge_batch_images: int  # images in the edge's tail run that carried the frame (its micro-batching)
    damage: pb.LinkDamage  # what the link did to the frame, as the edge saw it
    served_by: str  # the edge replica that ran it ("host:pid", or a Ray Serve replica id); "" if it did not say


def channel_credentials(settings: DeviceSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials from the settings, with the client certificate if one is set; None: plaintext."""
    if settings.tls_ca is None:
        return None
    key, cert = (path.read_bytes() if path else None for path in (settings.tls_key, settings.tls_cert))
    return grpc.ssl_channel_credentials(settings.tls_ca.read_bytes(), key, cert)


@dataclass(frozen=True)
class StreamReply:
    step: int
    logits: np.ndarray  # float32 [B, num_classes]: the running logits after ``step``
    edge_ms: float  # the edge's decode + inference of this step
    damage: pb.LinkDamage


class EdgeStream:
    """One InferStream call: steps out, running logits in, each reply checked against the stream. The call opens with
    its first step, not before: the edge cancels a stream that sends no first step soon after opening
    (stream_step_s), while the head may take a while to make step 0."""

    def __init__(self, client: EdgeClient, deadline: Deadline) -> None:
        self.client, self.deadline = client, deadline
        self.call: grpc.aio.StreamStreamCall[pb.SpikeStep, pb.RunningLogits] | None = None
        self.first: pb.SpikeStep | None = None
        self.sent = self.received = 0

    async def send(self, message: pb.SpikeStep) -> None:
        if self.call is None:
            self.call = self.client._stub.InferStream(timeout=self.deadline.remaining())
        self.first = self.first or message
        try:
            await self.call.write(message)
        except grpc.aio.AioRpcError as e:
            raise self.client._error(e) from None
        except asyncio.InvalidStateError:  # the call has already ended: its status says why
            raise await self._ended(self.call) from None
        self.sent += 1

    async def done_sending(self) -> None:
        if self.call is None:
            raise RuntimeError("a stream ends after its steps: send one before done_sending")
        try:
            await self.call.done_writing()
        except grpc.aio.AioRpcError as e:
            raise self.client._error(e) from None

    async def receive(self, num_classes: int) -> StreamReply:
        """The next step's running logits; raises an EdgeError subclass if the stream ends without them or they do
        not answer the next step of this stream."""
        if self.call is None or self.first is None:
            raise RuntimeError("a stream answers steps: send one before receiving")
        try:
            reply = await self.call.read()
        except grpc.aio.AioRpcError as e:
            raise self.client._error(e) from None
        if not isinstance(reply, pb.RunningLogits):  # grpc.aio.EOF: the edge ended the call
            raise await self._ended(self.call)
        self.client.check_reply(reply, self.first, num_classes, "stream")
        if reply.step != self.received:
            raise EdgeBadReply(
                f"edge at {self.client.address} answered step {reply.step}; the stream's next answer "
                f"is for step {self.received}"
            )
        self.received += 1
        logits = np.array(reply.values, dtype=np.float32).reshape(reply.batch_size, reply.num_classes)
        return StreamReply(reply.step, logits, reply.decode_ms + reply.inference_ms, reply.damage)

    def cancel(self) -> None:
        """Ends the call if it is open and unfinished (the edge drops the stream's state); else nothing."""
        if self.call is not None:
            self.call.cancel()

    async def _ended(self, call: grpc.aio.StreamStreamCall) -> EdgeError:
        """Why the call ended early: its status as an error."""
        code = await call.code()
        if code is grpc.StatusCode.OK:
            return EdgeBadReply(
                f"edge at {self.client.address} ended the stream after {self.sent} steps without answering each"
            )
        return self.client.error_for(code, await call.details())


class EdgeClient:
    def __init__(
        self,
        address: str,
        probe_timeout_s: float,
        max_calls: int,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        keepalive_s: float = DeviceSettings.model_fields["edge_keepalive_s"].default,
        keepalive_timeout_s: float = DeviceSettings.model_fields["edge_keepalive_timeout_s"].default,
    ) -> None:
        """``probe_timeout_s``: how long GetModelInfo may take (readiness); ``server_name``: the name the edge's
        certificate is checked against instead of the address's host; ``keepalive_s``, ``keepalive_timeout_s``:
        the pings that find a hung edge replica (0: no pings)."""
        self.address = address
        self.probe_timeout_s = probe_timeout_s
        self.max_calls = max_calls
        self._calls = asyncio.Semaphore(max_calls)
        self._credentials = credentials
        self._name_options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        options = [*CHANNEL_OPTIONS, *keepalive_options(keepalive_s, keepalive_timeout_s)]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=[*options, *self._name_options])
        self._stub = pb_grpc.SplitInferenceStub(self._channel)

    async def __aenter__(self) -> EdgeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._channel.close()

    async def infer(self, frame: pb.SpikeFrame, num_classes: int, deadline: Deadline) -> EdgeReply:
        """The frame's logits [B, num_classes]; raises an EdgeError subclass saying why there are none.

        ``deadline`` is the request's: waiting for a free call and the call itself both come out of it.
        """
        try:
            await asyncio.wait_for(self._calls.acquire(), deadline.remaining())
        except TimeoutError:
            raise EdgeTimeout(
                f"edge at {self.address}: no answer within the {deadline.budget_s:g} s deadline; all "
                f"{self.max_calls} calls to it stayed in flight"
            ) from None
        sent = perf_counter()
        try:
            # Not wait_for_ready: with the edge down the call fails at once (503) instead of
            # holding the request for the whole deadline.
            reply: pb.Logits = await self._stub.Infer(frame, timeout=deadline.remaining())
        except grpc.aio.AioRpcError as e:
            raise self._error(e) from None
        finally:
            self._calls.release()
        round_trip_ms = (perf_counter() - sent) * 1e3
        self.check_reply(reply, frame, num_classes, "frame")
        logits = np.array(reply.values, dtype=np.float32).reshape(reply.batch_size, reply.num_classes)
        return EdgeReply(
            logits, reply.timing.total_ms, round_trip_ms, reply.timing.batch_images, reply.damage, reply.served_by
        )

    def check_reply(
        self,
        reply: pb.Logits | pb.RunningLogits,
        request: pb.SpikeFrame | pb.SpikeStep,
        num_classes: int,
        what_it_answers: str,
    ) -> None:
        """Raises EdgeBadReply naming the first way ``reply`` is not the answer to ``request`` (a frame, or a
        stream's first message)."""
        expected = {
            "request id": (reply.request_id, request.request_id),
            "model fingerprint": (reply.model_fingerprint, request.model_fingerprint),
            "batch size": (reply.batch_size, request.shape[1]),
            "class count": (reply.num_classes, num_classes),
            "number of logits": (len(reply.values), request.shape[1] * num_classes),
        }
        for what, (got, want) in expected.items():
            if got != want:
                raise EdgeBadReply(
                    f"edge at {self.address} replied with {what} {got!r}; the {what_it_answers} it "
                    f"answers needs {want!r}"
                )

    @asynccontextmanager
    async def stream(self, deadline: Deadline) -> AsyncIterator[EdgeStream]:
        """An InferStream call within the request's deadline, holding one of the edge calls while open; leaving
        the block ends it (cancelled if unfinished: the edge drops the stream's state)."""
        try:
            await asyncio.wait_for(self._calls.acquire(), deadline.remaining())
        except TimeoutError:
            raise EdgeTimeout(
                f"edge at {self.address}: no answer within the {deadline.budget_s:g} s deadline; all "
                f"{self.max_calls} calls to it stayed in flight"
            ) from None
        stream = EdgeStream(self, deadline)
        try:
            yield stream
        finally:
            stream.cancel()  # a no-op once the call has finished
            self._calls.release()

    async def replicas(self) -> tuple[list[str], list[str]]:
        """The addresses the target resolves to now, and those among them whose edge answers; raises
        edge_replicas.TargetError for a target that cannot be listed."""
        addresses = await edge_replicas.resolve(self.address)
        return addresses, await edge_replicas.answering(
            addresses, self.probe_timeout_s, self._credentials, self._name_options
        )

    async def model_info(self) -> pb.ModelInfo:
        try:
            return await self._stub.GetModelInfo(pb.ModelInfoRequest(), timeout=self.probe_timeout_s)
        except grpc.aio.AioRpcError as e:
            raise self._error(e) from None

    def _error(self, e: grpc.aio.AioRpcError) -> EdgeError:
        return self.error_for(e.code(), e.details())

    def error_for(self, code: grpc.StatusCode, details: str | None) -> EdgeError:
        return _ERRORS.get(code, EdgeRejected)(f"edge at {self.address}: {code.name}: {details}")
