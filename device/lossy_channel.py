"""The lossy channel between device and edge, for experiments (``SBN_DEVICE_CHANNEL``; off unless set).

Every message to the edge crosses it after its FEC parity is added: a raw payload arrives with flipped spikes, an
entropy chunk that fails its check runs as silence (shared/channel.py has the channel models).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import numpy as np

from spikebottlenet.shared.channel import parse_channel
from spikebottlenet.v1 import split_inference_pb2 as pb

Message = TypeVar("Message", pb.SpikeFrame, pb.SpikeStep)


class LossyChannel:
    def __init__(self, spec: str | None) -> None:
        """``spec``: bsc:BER, erasure:P or gilbert:P_GB,P_BG,BER_BAD[,BER_GOOD]; None: no channel, messages arrive
        as sent."""
        self.channel = None if spec is None else parse_channel(spec)
        self._noise = np.random.default_rng()

    async def deliver(self, message: Message) -> Message:
        """``message`` as the channel delivers it (a copy, its payload damaged), or as it is without one."""
        if self.channel is None:
            return message
        damaged = type(message)()
        damaged.CopyFrom(message)
        # off the event loop: a bursty channel walks its states bit by bit
        delivery = await asyncio.get_running_loop().run_in_executor(
            None, self.channel.apply, message.payload, self._noise
        )
        damaged.payload = delivery.payload
        damaged.lost_bytes[:] = delivery.lost  # what the link layer knows it lost, for the edge's FEC
        return damaged
