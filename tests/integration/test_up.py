"""``sbn up``: both halves as child processes, stopped together on SIGTERM or when either dies."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from spikebottlenet.sbn.bench import synthetic_png
from spikebottlenet.sbn.client import DEVICE_URL_ENV
from spikebottlenet.shared.processes import free_port, stop, wait_for_edge, wait_for_http
from spikebottlenet.v1 import split_inference_pb2 as pb
from spikebottlenet.v1 import split_inference_pb2_grpc as pb_grpc
from tests.stack import upload

REPO = Path(__file__).resolve().parents[2]
API_KEY = "up-test-key"


def _children(pid: int) -> dict[str, int]:
    """{"edge" | "device": pid} of a process's children (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[3].decode(): int(child) for child in children}


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def up(calibrated_checkpoint: Callable[..., Path]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A running ``sbn up`` (device ready) and the device's URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikebottlenet",
            "up",
            "--checkpoint",
            str(calibrated_checkpoint(8)),
            "--port",
            str(port),
            "--edge-port",
            str(free_port()),
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", process)
        yield process, url
    finally:
        stop(process)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the children through Linux /proc")
def test_sigterm_stops_both_children(up: tuple[subprocess.Popen[bytes], str]) -> None:
    process, url = up
    assert httpx.post(f"{url}/classify", files=upload(synthetic_png()), timeout=30).status_code == 200
    children = _children(process.pid)
    assert set(children) == {"edge", "device"}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert all(_gone(pid) for pid in children.values())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the children through Linux /proc")
def test_when_the_edge_dies_up_stops_the_device_and_fails(up: tuple[subprocess.Popen[bytes], str]) -> None:
    process, _ = up
    children = _children(process.pid)
    os.kill(children["edge"], signal.SIGKILL)
    assert process.wait(timeout=30) == 1
    assert _gone(children["device"])


def test_settings_from_the_environment_reach_both_children_and_a_flag_wins() -> None:
    """``SBN_SPLIT_POINT`` and ``SBN_EDGE_PORT`` from the environment; ``--port`` over ``SBN_DEVICE_PORT``."""
    port, edge_port, env_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SBN_SPLIT_POINT": "16",
        "SBN_EDGE_PORT": str(edge_port),
        "SBN_DEVICE_PORT": str(env_port),
        "SBN_DEVICE_API_KEY": API_KEY,
    }  # with it, /readyz names the edge the device was given
    key = {"X-API-Key": API_KEY}
    process = subprocess.Popen([sys.executable, "-m", "spikebottlenet", "up", "--port", str(port)], env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", process)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", headers=key, timeout=10).json()
        assert ready["edge"] == f"127.0.0.1:{edge_port}"
        assert (ready["split_point"], ready["split_point_name"]) == (16, "RB16")
        # the edge itself listens on the port from the environment and serves RB16 too
        wait_for_edge(f"127.0.0.1:{edge_port}", process, timeout_s=10)
        with grpc.insecure_channel(f"127.0.0.1:{edge_port}") as channel:
            info = pb_grpc.SplitInferenceStub(channel).GetModelInfo(pb.ModelInfoRequest(), timeout=10)
        assert (info.arch, info.split_point) == ("spiking_resnet50", 16)
        response = httpx.post(
            f"http://127.0.0.1:{port}/classify", files=upload(synthetic_png()), headers=key, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["split_point"] == 16
        with pytest.raises(httpx.ConnectError):  # SBN_DEVICE_PORT lost to --port
            httpx.get(f"http://127.0.0.1:{env_port}/healthz", timeout=5)
    finally:
        stop(process)


def _logged_line(log: Path, pattern: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> str:
    """The first line of ``log`` that matches ``pattern``, once the process has written it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if match := re.search(pattern, log.read_text(), re.MULTILINE):
            return match.group(0)
        assert process.poll() is None, f"sbn up exited with status {process.returncode}:\n{log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s:\n{log.read_text()}")


def test_up_prints_an_sbn_classify_command_that_reaches_it(
    calibrated_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """As after `make up PORT=...`: .venv/bin/sbn run from the folder that holds .venv, not on the PATH, and the
    device on a port other than sbn classify's default; the command it prints, run as it is, classifies."""
    venv = Path(sys.executable).parent.parent
    (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)  # this folder stands for the repository's
    env = {name: value for name, value in os.environ.items() if name != DEVICE_URL_ENV}
    env["PATH"] = os.pathsep.join(
        folder for folder in env.get("PATH", "").split(os.pathsep) if not (Path(folder) / "sbn").is_file()
    )  # no sbn to be found by name
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with log.open("wb") as stderr:  # sbn up logs to its standard error
        process = subprocess.Popen(
            [
                str(tmp_path / ".venv" / "bin" / "python"),
                "-m",
                "spikebottlenet",
                "up",
                "--checkpoint",
                str(calibrated_checkpoint(8)),
                "--port",
                str(port),
                "--edge-port",
                str(free_port()),
            ],
            cwd=tmp_path,
            env=env,
            stderr=stderr,
        )
    try:
        wait_for_http(f"{url}/readyz", process)
        command = _logged_line(log, rf"{DEVICE_URL_ENV}=\S+ .*classify image\.png$", process)
        assert command.startswith(f"{DEVICE_URL_ENV}={url} ")
        image = synthetic_png(seed=4)
        (tmp_path / "image.png").write_bytes(image)
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        expected = httpx.post(f"{url}/classify", files=upload(image), timeout=30).json()
        _, row = done.stdout.splitlines()  # the header, the image's row
        file, label, _, transmitted, _ = re.split(r"\s{2,}", row)
        assert (file, label.removesuffix(" (uncertain)"), int(transmitted)) == (
            "image.png",
            expected["label"],
            expected["transmitted_bytes"],
        )
    finally:
        stop(process)


def _make_up(*variables: str, env: dict[str, str] | None = None) -> str:
    """The command `make up VARIABLES...` runs, printed by make -n (the venv taken as up to date)."""
    done = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "up", *variables],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [command] = [line for line in done.stdout.splitlines() if "sbn up" in line]
    return command


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_up_passes_port_split_and_arch_only_when_given() -> None:
    plain = {key: value for key, value in os.environ.items() if key not in ("PORT", "EDGE_PORT", "SPLIT", "ARCH")}
    assert _make_up(env=plain) == ".venv/bin/sbn up"
    assert _make_up("PORT=18000", "SPLIT=16", env=plain) == ".venv/bin/sbn up --port 18000 --split-point 16"
    assert _make_up("ARCH=mobilenetv2", "EDGE_PORT=50052", env=plain) == (
        ".venv/bin/sbn up --edge-port 50052 --arch mobilenetv2"
    )
    # a PORT or ARCH the shell exports for something else is not taken for sbn up's
    assert _make_up(env={**plain, "PORT": "3000", "ARCH": "x86_64"}) == ".venv/bin/sbn up"
