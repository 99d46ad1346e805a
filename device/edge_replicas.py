"""The edge replicas behind the device's gRPC target, and how many of them answer.

The device's one channel balances its calls over every address its target names, with gRPC's client-side
``round_robin`` policy (device/edge_client.py):

    host:port, dns:///host:port    every address the name resolves to (Compose: one per ``--scale edge=N`` replica)
    ipv4:a:port,b:port             exactly those addresses (no DNS)

A channel hides its subchannels, so ``/readyz`` asks each address on a channel of its own: resolved now, as
the channel would resolve it, and probed with GetModelInfo within the probe timeout.
"""

from __future__ import annotations

import asyncio
import socket

import grpc

from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc


class TargetError(SpikeBottleNetError, ValueError):
    """A target that names no address this module can list."""


def _host_port(address: str, target: str) -> tuple[str, str]:
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise TargetError(f"edge target {target!r}: {address!r} is not host:port")
    return host.strip("[]"), port


async def resolve(target: str) -> list[str]:
    """The host:port addresses ``target`` stands for now; raises TargetError for a target of another scheme, or
    a name that does not resolve."""
    if target.startswith(("ipv4:", "ipv6:")):
        addresses = target.split(":", 1)[1].split(",")
        return [":".join(_host_port(a, target)) for a in addresses]
    name = target.removeprefix("dns:///").removeprefix("dns:")
    if ":/" in name:
        raise TargetError(
            f"edge target {target!r}: only host:port, dns:///host:port and ipv4:/ipv6: address lists can be listed"
        )
    host, port = _host_port(name, target)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise TargetError(f"edge target {target!r}: {host} does not resolve ({e})") from None
    ips = dict.fromkeys(str(info[4][0]) for info in infos)  # in resolver order, without repeats
    return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips]


async def answering(
    addresses: list[str],
    timeout_s: float,
    credentials: grpc.ChannelCredentials | None = None,
    options: list[tuple[str, str]] | None = None,
) -> list[str]:
    """The addresses among ``addresses`` whose edge answers GetModelInfo within ``timeout_s``."""

    async def probe(address: str) -> bool:
        channel = (
            grpc.aio.insecure_channel(address, options=options)
            if credentials is None
            else grpc.aio.secure_channel(address, credentials, options=options)
        )
        try:
            await pb_grpc.SplitInferenceStub(channel).GetModelInfo(pb.ModelInfoRequest(), timeout=timeout_s)
            return True
        except grpc.aio.AioRpcError:
            return False
        finally:
            await channel.close()

    results = await asyncio.gather(*(probe(address) for address in addresses))
    return [address for address, ok in zip(addresses, results, strict=True) if ok]
