"""What both ends of the device -> edge call translate between in-process values and the wire."""

from __future__ import annotations

from ..codec import Codec
from .spikebottlenet.v1 import split_inference_pb2 as pb

# Fully qualified gRPC service name, as the health and reflection services know it.
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name

CODEC_TO_WIRE: dict[Codec, pb.Codec] = {Codec.RAW: pb.CODEC_RAW, Codec.SPARSE: pb.CODEC_SPARSE,
                                        Codec.ENTROPY: pb.CODEC_ENTROPY}
CODEC_FROM_WIRE: dict[int, Codec] = {wire: codec for codec, wire in CODEC_TO_WIRE.items()}
