"""``docker compose up --scale edge=N`` with the project's own compose file and images: the device's calls spread
over every edge replica, and a replica added while serving gets calls too.

Needs a running Docker engine, Compose (``docker compose`` or ``docker-compose``) and the two images built
(``docker compose build``; building is not part of the test): skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.shared.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("spikebottlenet-edge:latest", "spikebottlenet-device:latest")
PROJECT = "sbnscaletest"


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def skip_reason() -> str | None:
    if shutil.which("docker") is None or compose_command() is None:
        return "needs docker and Compose"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "needs a running Docker engine"
    missing = [i for i in IMAGES if subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode]
    return f"needs the images built first (docker compose build): {', '.join(missing)}" if missing else None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """The compose project on a free host port, edges closing connections every 2 s and serving metrics inside
    their containers; torn down after the test."""
    port = free_port()
    override = tmp_path / "override.yml"
    override.write_text(
        json.dumps(
            {
                "services": {
                    "edge": {"environment": {"SBN_EDGE_MAX_CONNECTION_AGE_S": "2", "SBN_EDGE_METRICS_PORT": "9100"}},
                    "device": {"ports": [f"127.0.0.1:{port}:8000"]},
                }
            }
        )
    )
    # the project's ports entry publishes 8000 on the host; an override cannot drop it, so a file of our own
    # replaces it: the service definitions as they are, minus the published port
    base = (ROOT / "docker-compose.yml").read_text().replace('    ports:\n      - "8000:8000"\n', "")
    assert '"8000:8000"' not in base, "docker-compose.yml publishes the device's port differently now"
    (tmp_path / "docker-compose.yml").write_text(base)
    command = [
        *compose_command(),
        "-p",
        PROJECT,
        "--project-directory",
        str(ROOT),
        "-f",
        str(tmp_path / "docker-compose.yml"),
        "-f",
        str(override),
    ]
    try:
        yield command, f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([*command, "down", "--timeout", "5"], capture_output=True)


def up(command: list[str], replicas: int, *flags: str) -> None:
    subprocess.run(
        [*command, "up", "-d", "--no-build", "--scale", f"edge={replicas}", *flags],
        check=True,
        capture_output=True,
        timeout=300,
    )


def frames_per_edge(command: list[str]) -> list[float]:
    """Each edge container's own count of frames answered, from its metrics endpoint inside the container."""
    ids = subprocess.run([*command, "ps", "-q", "edge"], capture_output=True, text=True, check=True).stdout.split()
    read = (
        "import urllib.request as u; t = u.urlopen('http://127.0.0.1:9100/metrics').read().decode(); "
        "print(sum(float(l.rsplit(' ', 1)[1]) for l in t.splitlines() "
        "if l.startswith('sbn_edge_frames_total{') and 'code=\"OK\"' in l))"
    )
    return [
        float(
            subprocess.run(
                ["docker", "exec", i, "python", "-c", read], capture_output=True, text=True, check=True
            ).stdout
        )
        for i in ids
    ]


def wait_for_replicas(url: str, replicas: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).json().get("edge_replicas") == replicas:
                return
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        time.sleep(1)
    raise TimeoutError(f"the device did not see {replicas} edge replicas within {timeout_s:.0f} s")


def test_calls_spread_over_the_replicas_and_a_replica_added_while_serving_joins(stack: tuple[list[str], str]) -> None:
    command, url = stack
    up(command, 2)
    wait_for_replicas(url, 2)
    with httpx.Client(base_url=url, timeout=30) as client:
        for seed in range(30):
            assert (
                client.post("/classify", files={"file": ("d.png", synthetic_png(seed), "image/png")}).status_code == 200
            )
        assert all(frames >= 5 for frames in frames_per_edge(command))  # round robin over both
        up(command, 3, "--no-recreate")  # scale up while serving
        wait_for_replicas(url, 3)
        # the edges close connections every 2 s; the device re-resolves the name (at most every 5 s) and connects
        # to the new replica, which then takes its turns
        deadline, frames = time.monotonic() + 60, frames_per_edge(command)
        while not (len(frames) == 3 and all(f >= 1 for f in frames)) and time.monotonic() < deadline:
            for seed in range(10):
                assert (
                    client.post("/classify", files={"file": ("d.png", synthetic_png(seed), "image/png")}).status_code
                    == 200
                )
            frames = frames_per_edge(command)
    assert len(frames) == 3 and all(f >= 1 for f in frames), frames
