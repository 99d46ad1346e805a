"""Running the edge and the device for tests, on 127.0.0.1.

    edge = start_edge(checkpoint)                             # `python -m spikebottlenet edge` on a free port
    wait_for_edge(edge.address, edge.process)
    with device_client(checkpoint, edge.address) as client:   # create_app() under uvicorn, in-process
        client.post("/classify", files=upload(synthetic_png()))

The in-process device is a real uvicorn server on a thread, so tests speak HTTP to it exactly as
to a ``sbn device`` process, while starting it costs no interpreter and no torch import.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from spikebottlenet.device.app import create_app
from spikebottlenet.device.http_server import server_options
from spikebottlenet.device.settings import DeviceSettings
from spikebottlenet.shared.checkpoint import load_checkpoint
from spikebottlenet.shared.preprocess import load_image
from spikebottlenet.shared.processes import free_port, spawn, stop, wait_for_http
from spikebottlenet.shared.torch_runtime import configure_torch_threads
from spikebottlenet.v1 import split_inference_pb2 as pb


@dataclass
class EdgeProcess:
    address: str
    process: subprocess.Popen[bytes]


def start_edge(checkpoint: Path, port: int | None = None, *flags: str) -> EdgeProcess:
    """``python -m spikebottlenet edge`` on 127.0.0.1; not yet waited on."""
    port = free_port() if port is None else port
    process = spawn("edge", "--checkpoint", str(checkpoint), "--host", "127.0.0.1", "--port", str(port), *flags)
    return EdgeProcess(f"127.0.0.1:{port}", process)


@contextmanager
def device_process(
    checkpoint: Path, edge_address: str, *flags: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``python -m spikebottlenet device`` on 127.0.0.1 and a free port (its access log to /dev/null); yields its URL
    once /healthz answers, and on leaving stops it, which must end cleanly."""
    with device_process_and_pid(checkpoint, edge_address, *flags, env=env) as (url, _):
        yield url


@contextmanager
def device_process_and_pid(
    checkpoint: Path, edge_address: str, *flags: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """``device_process``, yielding its process id too."""
    port = free_port()
    process = spawn(
        "device",
        "--checkpoint",
        str(checkpoint),
        "--port",
        str(port),
        "--edge-address",
        edge_address,
        *flags,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process)
        yield url, process.pid
    finally:
        assert stop(process) in (0, -signal.SIGTERM)


@contextmanager
def device_client(
    checkpoint: Path | list[Path], edge_address: str, server: type[uvicorn.Server] = uvicorn.Server, **settings: Any
) -> Iterator[httpx.Client]:
    """``create_app(DeviceSettings(...))`` served by uvicorn on a thread (``server``: `sbn device`'s own,
    device.http_server.DeviceServer, is not uvicorn's); a client for it."""
    device_settings = DeviceSettings(checkpoint=checkpoint, edge_address=edge_address, port=free_port(), **settings)
    # as `sbn device` does before it builds the app: with torch's default of one thread per core, the head's
    # worker thread would get a second OpenMP team competing with this process's main one
    configure_torch_threads(device_settings.threads)
    app = create_app(device_settings)
    # served as `sbn device` serves it: its HTTP protocol and limits
    running = server(uvicorn.Config(app, log_level="warning", **server_options(device_settings)))
    thread = threading.Thread(target=running.run, name="device", daemon=True)
    thread.start()
    while not running.started:
        if not thread.is_alive():
            raise RuntimeError("the device app failed to start (see the log above)")
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{device_settings.port}", timeout=30) as client:
            yield client
    finally:
        running.should_exit = True
        thread.join(timeout=10)


def upload(data: bytes, filename: str = "image.png", content_type: str = "image/png") -> dict[str, tuple]:
    """``files=`` for a multipart POST /classify."""
    return {"file": (filename, data, content_type)}


def altered(frame: pb.SpikeFrame, **fields: object) -> pb.SpikeFrame:
    """A copy of ``frame`` with some fields replaced (``shape`` by a list)."""
    copy = pb.SpikeFrame()
    copy.CopyFrom(frame)
    for name, value in fields.items():
        if name == "shape":
            del copy.shape[:]
            copy.shape.extend(value)
        else:
            setattr(copy, name, value)
    return copy


def monolithic_logits(checkpoint: Path, image: bytes) -> torch.Tensor:
    """The reference: the whole model's forward, ``model(x)``, in this process; [num_classes]."""
    loaded = load_checkpoint(checkpoint, "full")
    with torch.inference_mode():
        return loaded.model(torch.from_numpy(load_image(image, loaded.config)).unsqueeze(0))[0]


def scraped(url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus endpoint's samples called ``name`` whose labels include ``labels``
    (``sbn_edge_frames_total``, code="OK": OK frames of every model), read with prometheus_client's parser."""
    text = httpx.get(url, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
