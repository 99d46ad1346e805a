"""``sbn up``: edge and device as two local child processes, without Docker.

    sbn up -> python -m spikebottlenet edge     gRPC on 127.0.0.1:50051   started first, waited on until SERVING
           -> python -m spikebottlenet device   HTTP on 127.0.0.1:8000    started once the edge is healthy

A setting comes from ``sbn up``'s flag if one is given, else from the environment, else from its
default. Only the flags given are passed on to the children, which inherit the environment and read
their own variables (SBN_EDGE_<NAME>, SBN_DEVICE_<NAME>); ``SBN_ARCH`` and ``SBN_SPLIT_POINT`` choose
the model of both halves, as in docker-compose.yml, unless a half's own variable is set. Two things
are wiring and always passed: the edge listens on 127.0.0.1, and the device calls it there.

Before starting anything it checks that the two ports are free and that both halves would serve the
same model, and says which one is not in one line. Once the device answers, it logs how to call it: a
curl command and the matching ``sbn classify`` one (``SBN_DEVICE_URL=<its URL> sbn classify ...``).
Ctrl-C or SIGTERM stops both, device first so no request it still holds loses its edge; if either
exits on its own, the other is stopped and ``sbn up`` exits with a failure status.

``local_stack`` is also how ``sbn bench``, the benchmarks and the tests run the two halves together; the
process helpers it uses are ``spikebottlenet.shared.processes``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from spikebottlenet.device.settings import DeviceSettings
from spikebottlenet.edge.settings import EdgeSettings
from spikebottlenet.sbn.client import DEVICE_URL_ENV
from spikebottlenet.shared.backbones import ARCH_CHOICES, DEFAULT_ARCH
from spikebottlenet.shared.codec import CODEC_CHOICES
from spikebottlenet.shared.errors import SpikeBottleNetError
from spikebottlenet.shared.ports import port_in_use
from spikebottlenet.shared.processes import POLL_S, ChildExited, spawn, stop_all, wait_for_edge, wait_for_http
from spikebottlenet.shared.settings import DEFAULT_SPLIT_POINT, ModelSettings

log = logging.getLogger("sbn.up")

EDGE_HOST = "127.0.0.1"  # sbn up's edge is local: the device calls it here
# Variables that choose the model of both halves (docker-compose.yml's names); a half's own
# SBN_EDGE_<NAME> / SBN_DEVICE_<NAME> wins over them.
SHARED_VARIABLES = ("ARCH", "SPLIT_POINT")


class StackError(SpikeBottleNetError, RuntimeError):
    """The stack cannot start as configured (a port taken, settings invalid or not matching); one line."""


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with SBN_ARCH / SBN_SPLIT_POINT copied to each half's own variable where that is unset."""
    env = dict(environ)
    for name in SHARED_VARIABLES:
        if value := environ.get(f"SBN_{name}"):  # empty counts as unset, as in docker-compose.yml
            for settings_cls in (EdgeSettings, DeviceSettings):
                env.setdefault(f"{settings_cls.model_config['env_prefix']}{name}", value)
    return env


H = TypeVar("H", bound=ModelSettings)


def half_settings(settings_cls: type[H], env: Mapping[str, str], flags: Mapping[str, Any]) -> H:
    """The settings a child started with ``flags`` (None: not passed) in ``env`` runs with: flag, else
    environment variable, else default; validated as the child validates them."""
    prefix = settings_cls.model_config["env_prefix"]
    # strings from the environment, the flags' values: the settings class validates and converts them all
    values: dict[str, Any] = {
        name: env[key] for name in settings_cls.model_fields if (key := f"{prefix}{name.upper()}") in env
    }
    values.update({name: value for name, value in flags.items() if value is not None})
    try:
        return settings_cls(**values)
    except ValidationError as e:
        problems = "; ".join(
            f"{name} ({prefix}{name.upper()}): {error['msg']}"
            if (name := ".".join(map(str, error["loc"])))
            else error["msg"]
            for error in e.errors()
        )
        raise StackError(f"invalid settings for the {prefix[len('SBN_') : -1].lower()}: {problems}") from None


def _flags(**values: Any) -> list[str]:
    """``--name value`` for each value given (not None)."""
    return [
        part
        for name, value in values.items()
        if value is not None
        for part in (f"--{name.replace('_', '-')}", str(value))
    ]


def _model(settings: ModelSettings) -> str:
    if settings.models == "all":
        return f"every embedded demo model (default: {settings.arch} at split point {settings.split_point})"
    if settings.checkpoint:
        return ", ".join(map(str, settings.checkpoint))
    return f"the embedded {settings.arch} demo model at split point {settings.split_point}"


@dataclass(frozen=True)
class StackPlan:
    """What ``start_stack`` starts: each half's resolved settings, its flags and its environment."""

    edge: EdgeSettings
    device: DeviceSettings
    edge_flags: list[str]
    device_flags: list[str]
    env: dict[str, str]

    @property
    def edge_address(self) -> str:
        return f"{EDGE_HOST}:{self.edge.port}"

    @property
    def device_url(self) -> str:
        """Where the device answers on this machine (a wildcard address is reached on loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(
            self.device.host, self.device.host
        )
        return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{self.device.port}"


def plan_stack(
    checkpoint: Path | None = None,
    split_point: int | None = None,
    host: str | None = None,
    port: int | None = None,
    edge_port: int | None = None,
    device_flags: Sequence[str] = (),
    arch: str | None = None,
    environ: Mapping[str, str] | None = None,
    models: str | None = None,
) -> StackPlan:
    """The two children's flags and environment for these arguments (None: not given, so the
    environment, else the default, decides); raises StackError if the halves would not fit together."""
    env = child_environment(os.environ if environ is None else environ)
    model = {"checkpoint": checkpoint, "arch": arch, "split_point": split_point, "models": models}
    edge = half_settings(EdgeSettings, env, {**model, "host": EDGE_HOST, "port": edge_port})
    if edge.port == 0:
        raise StackError("sbn up needs a fixed edge port, not 0: set --edge-port or SBN_EDGE_PORT")
    edge_address = f"{EDGE_HOST}:{edge.port}"
    device = half_settings(DeviceSettings, env, {**model, "host": host, "port": port, "edge_address": edge_address})
    if device.port == 0:
        raise StackError("sbn up needs a fixed device port, not 0: set --port or SBN_DEVICE_PORT")
    if _model(edge) != _model(device):
        raise StackError(
            f"the edge would serve {_model(edge)} but the device {_model(device)}: set SBN_ARCH and "
            "SBN_SPLIT_POINT (or --arch, --split-point, --checkpoint) for both, not a half's own "
            "SBN_EDGE_* or SBN_DEVICE_* alone"
        )
    model_flags = _flags(**model)
    return StackPlan(
        edge,
        device,
        edge_flags=["--host", EDGE_HOST, *_flags(port=edge_port), *model_flags],
        device_flags=[*_flags(host=host, port=port), "--edge-address", edge_address, *model_flags, *device_flags],
        env=env,
    )


def check_ports(plan: StackPlan) -> None:
    """StackError naming the first port another process already holds."""
    ports = [
        (plan.edge.port, "the edge's gRPC", plan.edge.host, "--edge-port or SBN_EDGE_PORT"),
        (plan.device.port, "the device's HTTP", plan.device.host, "--port or SBN_DEVICE_PORT"),
    ]
    if metrics_port := getattr(plan.edge, "metrics_port", None):  # set only through the environment
        ports.append((metrics_port, "the edge's metrics", plan.edge.host, "SBN_EDGE_METRICS_PORT"))
    for port, service, host, how in ports:
        if port_in_use(host, port):
            raise StackError(
                f"port {port} ({service} port, on {host}) is already in use; free it or choose another with {how}"
            )


@contextmanager
def start_stack(plan: StackPlan, stdout: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The edge, then, once it is healthy, the device; both stopped on leaving, device first.

    Checks the ports first (StackError), and yields [edge, device] when the device answers /healthz.
    ``stdout``: where the children's standard output goes (see ``spawn``); default: this process's.
    """
    check_ports(plan)
    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(edge := spawn("edge", *plan.edge_flags, env=plan.env, stdout=stdout))
        wait_for_edge(plan.edge_address, edge)
        children.append(device := spawn("device", *plan.device_flags, env=plan.env, stdout=stdout))
        wait_for_http(f"{plan.device_url}/healthz", device)
        yield children
    finally:
        stop_all(children)


@contextmanager
def local_stack(
    checkpoint: Path | None = None,
    split_point: int | None = None,
    host: str | None = None,
    port: int | None = None,
    edge_port: int | None = None,
    device_flags: Sequence[str] = (),
    arch: str | None = None,
    stdout: int | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``start_stack(plan_stack(...), stdout)``: [edge, device], stopped on leaving; None leaves a setting to the
    environment, then to its default."""
    plan = plan_stack(checkpoint, split_point, host, port, edge_port, device_flags, arch)
    with start_stack(plan, stdout) as children:
        yield children


def classify_command(url: str, image: str = "image.png") -> str:
    """The ``sbn classify`` command line for the device at ``url``, for a shell in the current directory: the URL in
    DEVICE_URL_ENV (the variable to export for the commands after it) and this installation's ``sbn``."""
    return f"{DEVICE_URL_ENV}={shlex.quote(url)} {shlex.join([*_this_sbn(), 'classify', image])}"


def _this_sbn() -> list[str]:
    """How a shell in the current directory runs this installation's ``sbn``: by name where the PATH finds this very
    script, else by its path (``make up`` runs ``.venv/bin/sbn`` of a virtualenv that is rarely active)."""
    script = Path(sys.executable).parent / "sbn"  # the console script beside this interpreter
    if not script.is_file():  # not installed with its console script
        return [sys.executable, "-m", "spikebottlenet"]
    found = shutil.which("sbn")
    if found is not None and Path(found).resolve() == script.resolve():
        return ["sbn"]
    relative = os.path.relpath(script)
    return [relative if os.sep in relative and not relative.startswith(os.pardir) else str(script)]


def _default(settings_cls: type[ModelSettings], name: str) -> str:
    return f"{settings_cls.model_config['env_prefix']}{name.upper()}, else {settings_cls.model_fields[name].default}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No defaults here: a flag left out is not passed on, and each child reads its environment.
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint both halves serve (default: SBN_EDGE_CHECKPOINT / SBN_DEVICE_CHECKPOINT, "
        "else the embedded demo model for --arch and --split-point)",
    )
    parser.add_argument(
        "--arch",
        choices=ARCH_CHOICES,
        help=f"backbone of the embedded demo model (default: SBN_ARCH, else {DEFAULT_ARCH})",
    )
    parser.add_argument(
        "--split-point",
        type=int,
        metavar="K",
        help=f"split point of the embedded demo model (default: SBN_SPLIT_POINT, else "
        f"{DEFAULT_SPLIT_POINT}); `sbn models` lists them",
    )
    parser.add_argument(
        "--models",
        choices=["all", "one"],
        help="all: both halves also serve every embedded demo model, so /classify?split_point=K "
        "(or auto) picks among them; one: the default model only. The default model stays the "
        "one above (default: SBN_EDGE_MODELS / SBN_DEVICE_MODELS, else all, or one with "
        "--checkpoint)",
    )
    parser.add_argument("--host", help=f"HTTP address of the device (default: {_default(DeviceSettings, 'host')})")
    parser.add_argument(
        "--port", type=int, help=f"HTTP port of the device (default: {_default(DeviceSettings, 'port')})"
    )
    parser.add_argument(
        "--edge-port", type=int, help=f"gRPC port of the edge, on 127.0.0.1 (default: {_default(EdgeSettings, 'port')})"
    )
    parser.add_argument(
        "--codec", choices=CODEC_CHOICES, help="spike codec of the device (default: SBN_DEVICE_CODEC, else raw)"
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGTERM takes the same way out as Ctrl-C: KeyboardInterrupt, then the children are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        plan = plan_stack(
            args.checkpoint,
            args.split_point,
            args.host,
            args.port,
            args.edge_port,
            ["--codec", args.codec] if args.codec else [],
            args.arch,
            models=args.models,
        )
        with start_stack(plan) as children:
            url = plan.device_url
            log.info("up: try  curl -F file=@image.png %s/classify", url)
            log.info("up:  or  %s", classify_command(url))
            log.info("up: the web page is %s/, the docs %s/docs; Ctrl-C stops both", url, url)
            while all(child.poll() is None for child in children):
                time.sleep(POLL_S)
            for name, child in zip(("edge", "device"), children, strict=True):
                if child.returncode is not None:
                    log.error("%s exited with status %d; stopping", name, child.returncode)
            return 1
    except StackError as e:
        log.error("sbn up: %s", e)
        return 1
    except (ChildExited, TimeoutError) as e:
        log.error("%s; stopping", e)
        return 1
    except KeyboardInterrupt:
        log.info("stopped device and edge")
        return 0
