"""An RB8 tail (batches up to 2), a valid frame for it, from the calibrated test checkpoint, and in-process servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from spikebottlenet.device.head_runner import HeadRunner
from spikebottlenet.edge.server import EdgeServer, create_server
from spikebottlenet.edge.tail_runner import TailRunner
from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.v1 import split_inference_pb2 as pb


@pytest.fixture(scope="module")
def checkpoint(calibrated_checkpoint: Callable[..., Path]) -> Path:
    return calibrated_checkpoint(8)


@pytest.fixture(scope="module")
def runner(checkpoint: Path) -> TailRunner:
    return TailRunner.load(checkpoint, max_batch=2)


@pytest.fixture(scope="module")
def frame(checkpoint: Path) -> pb.SpikeFrame:
    """The frame the device sends for ``synthetic_png()``."""
    return HeadRunner.load(checkpoint).run(synthetic_png()).frame


@pytest.fixture
def serve() -> Iterator[Callable[..., grpc.Channel]]:
    """``serve(runner, max_concurrency, **create_server_options)`` -> a channel to a started in-process edge, its
    asyncio server running on an event loop of its own, on a thread; servers, their inference workers and the
    channels are closed after the test."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="edge-loop", daemon=True)
    thread.start()
    servers: list[EdgeServer] = []
    channels: list[grpc.Channel] = []

    async def started(runner: TailRunner, max_concurrency: int, options: dict[str, object]) -> int:
        servers.append(edge := create_server(runner, max_concurrency, **options))
        port = edge.server.add_insecure_port("127.0.0.1:0")
        await edge.server.start()
        return port

    def start(runner: TailRunner, max_concurrency: int = 2, **options: object) -> grpc.Channel:
        port = asyncio.run_coroutine_threadsafe(started(runner, max_concurrency, options), loop).result(timeout=30)
        channels.append(channel := grpc.insecure_channel(f"127.0.0.1:{port}"))
        return channel

    yield start
    for channel in channels:
        channel.close()
    for edge in servers:
        asyncio.run_coroutine_threadsafe(edge.server.stop(None), loop).result(timeout=30)
        edge.servicer.close()
    asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)
    loop.close()
