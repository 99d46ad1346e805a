"""What both ends of the device -> edge call translate between in-process values and the wire."""

from __future__ import annotations

from spikebottlenet.v1 import split_inference_pb2 as pb

from ..codec import Codec

# Fully qualified gRPC service name, as the health and reflection services know it.
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name

CODEC_TO_WIRE: dict[Codec, pb.Codec] = {
    Codec.RAW: pb.CODEC_RAW,
    Codec.SPARSE: pb.CODEC_SPARSE,
    Codec.ENTROPY: pb.CODEC_ENTROPY,
}
CODEC_FROM_WIRE: dict[int, Codec] = {wire: codec for codec, wire in CODEC_TO_WIRE.items()}

# The longest request_id (in characters) an edge accepts (a device makes its own, 32 characters). An id is echoed in
# every reply, so an unbounded one could make a reply too large to send after its frame had run.
MAX_REQUEST_ID_LENGTH: int = 128

# The edge answers HTTP/2 pings as often as this (one sooner is a strike: gRPC closes a connection after a few),
# so that a device's keepalive, which pings an edge connection that has said nothing for a while, finds a hung edge
# replica within a second or two; a device pings no more often.
MIN_PING_INTERVAL_S: float = 0.1
