"""The addresses an edge target stands for, as /readyz lists them."""

from __future__ import annotations

import asyncio

import pytest

from spikebottlenet.device.edge_replicas import TargetError, resolve


def test_an_address_list_is_taken_as_it_is() -> None:
    assert asyncio.run(resolve("ipv4:127.0.0.1:50051,127.0.0.2:50052")) == ["127.0.0.1:50051", "127.0.0.2:50052"]


@pytest.mark.parametrize("target", ["localhost:50051", "dns:///localhost:50051", "dns:localhost:50051"])
def test_a_name_stands_for_every_address_it_resolves_to(target: str) -> None:
    addresses = asyncio.run(resolve(target))
    assert "127.0.0.1:50051" in addresses and len(addresses) == len(set(addresses))
    assert all(a.endswith(":50051") for a in addresses)


@pytest.mark.parametrize(
    "target", ["unix:///tmp/edge.sock", "localhost", "ipv4:127.0.0.1", "dns:///:50051", "no-such-host.invalid:50051"]
)
def test_a_target_that_cannot_be_listed_says_so(target: str) -> None:
    with pytest.raises(TargetError, match=target.split(":")[0] if target != "dns:///:50051" else "host:port"):
        asyncio.run(resolve(target))
