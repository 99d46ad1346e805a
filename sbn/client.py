"""A client of a running device: ``sbn classify IMAGE...`` and ``DeviceClient`` for Python code.

    sbn classify digit.png                          # POST /classify, a table: file, label, probability, bytes, latency
    sbn classify a.png b.png c.png --json           # POST /classify/batch (one frame for all three), the JSON answer
    sbn classify *.png --url http://host:8000 --api-key KEY
    SBN_DEVICE_URL=http://host:18000 sbn classify digit.png   # the URL from the environment (sbn up prints it)

    from spikebottlenet.sbn.client import DeviceClient, DeviceError
    with DeviceClient("http://127.0.0.1:8000") as device:
        result = device.classify("digit.png")                 # the POST /classify body, as a dict
        batch = device.classify_batch(["a.png", b"..."])      # the POST /classify/batch body, as a dict

Only httpx is needed (no torch): the answers are the device's JSON as dicts. An HTTP error status
raises ``DeviceError`` carrying the status and the device's ``detail``; a device that cannot be
reached raises ``DeviceUnreachable`` (a DeviceError without a status).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from spikebottlenet.shared.errors import SpikeBottleNetError

DEFAULT_URL = "http://127.0.0.1:8000"
DEVICE_URL_ENV = "SBN_DEVICE_URL"  # sbn classify's --url when it is not given
API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "SBN_API_KEY"

Image = str | os.PathLike[str] | bytes  # a file's path, or the image's bytes


class DeviceError(SpikeBottleNetError):
    """The device answered with an HTTP error (``status_code``, its JSON ``detail``), or could not be reached."""

    def __init__(self, status_code: int | None, detail: str, url: str) -> None:
        self.status_code = status_code
        self.detail = detail
        self.url = url
        super().__init__(f"{url}: HTTP {status_code}: {detail}" if status_code is not None else f"{url}: {detail}")


class DeviceUnreachable(DeviceError):
    """No HTTP answer: nothing listening, a timeout, a broken connection (``status_code`` is None)."""

    def __init__(self, detail: str, url: str) -> None:
        super().__init__(None, detail, url)


class DeviceClient:
    """A device's HTTP API over one ``httpx.Client``; close it, or use it as a context manager."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``api_key``: sent in the X-API-Key header (devices with SBN_DEVICE_API_KEY set require it)."""
        self.url = url.rstrip("/")
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, transport=transport)

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def classify(self, image: Image, *, logits: bool = False, filename: str | None = None) -> dict[str, Any]:
        """``POST /classify`` of one image: the classification (label, probability, top5, bytes, energy, ...)."""
        return self._post("/classify", [("file", _upload(image, filename))], logits)

    def classify_batch(self, images: Sequence[Image], *, logits: bool = False) -> dict[str, Any]:
        """``POST /classify/batch``: ``{"results": [one entry per image, in order], "batch": {...}}``.

        An entry is a classification, or ``{"index", "filename", "error"}`` for an image the device
        could not read; the other images are classified all the same.
        """
        if not images:
            raise ValueError("classify_batch needs at least one image")
        return self._post("/classify/batch", [("files", _upload(image)) for image in images], logits)

    def ready(self) -> dict[str, Any]:
        """``GET /readyz``: the model the device and the edge both serve (the edge's address only with the API key);
        DeviceError (503) if not ready."""
        return self._send("GET", "/readyz")

    def _post(self, path: str, files: list[tuple[str, tuple[str, bytes, str]]], logits: bool) -> dict[str, Any]:
        return self._send("POST", path, files=files, params={"logits": "true"} if logits else None)

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise DeviceUnreachable(f"no answer: {e or type(e).__name__}", f"{self.url}{path}") from e
        if response.is_error:
            raise DeviceError(response.status_code, _detail(response), f"{self.url}{path}")
        return response.json()


def _upload(image: Image, filename: str | None = None) -> tuple[str, bytes, str]:
    """A multipart file: (name, bytes, content type); a path is read here, bytes are sent as they are."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        name = filename or "image"
        data = bytes(image)
    else:
        path = Path(image)
        name = filename or path.name
        data = path.read_bytes()
    return name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"


def _detail(response: httpx.Response) -> str:
    """The device's ``{"detail": "..."}``, or the body as text when it is not that (a proxy's error page)."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason_phrase
    return detail if isinstance(detail, str) else json.dumps(detail)


# --- sbn classify ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="image files; one is sent to POST /classify, several to POST /classify/batch "
        "(one frame to the edge for all)",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get(DEVICE_URL_ENV) or DEFAULT_URL,  # empty counts as unset
        help=f"the device's base URL (default: ${DEVICE_URL_ENV}, if set, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"sent in the {API_KEY_HEADER} header (default: ${API_KEY_ENV}, if set)",
    )
    parser.add_argument("--json", action="store_true", help="print the device's JSON answer")
    parser.add_argument("--logits", action="store_true", help="ask for the raw logits too (shown with --json)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default: 30)")


def run(args: argparse.Namespace) -> int:
    """Exit status 0 if every image was classified, 1 otherwise (an HTTP error, or an image the device refused)."""
    try:
        with DeviceClient(args.url, args.api_key, args.timeout) as device:
            if len(args.images) == 1:
                answer = device.classify(args.images[0], logits=args.logits)
                entries = [{**answer, "index": 0}]
            else:
                answer = device.classify_batch(args.images, logits=args.logits)
                entries = answer["results"]
    except (DeviceError, OSError) as e:  # an HTTP error or no answer; an image file that cannot be read
        print(f"sbn classify: {e}", file=sys.stderr)
        if isinstance(e, DeviceUnreachable):
            print(
                f"sbn classify: is a device running there? Give its URL with --url or ${DEVICE_URL_ENV} "
                f"(sbn up prints the command)",
                file=sys.stderr,
            )
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(format_table(entries, [str(path) for path in args.images]))
        if "batch" in answer:
            print(batch_line(answer["batch"]))
    return 1 if any("error" in entry for entry in entries) else 0


def format_table(entries: list[dict[str, Any]], names: list[str]) -> str:
    """One aligned row per entry: file, label (marked when the answer is uncertain), probability, bytes
    (spike payload), latency (ms); an image the device could not read gets ``error: ...`` after its
    file name instead."""
    header = ("file", "label", "probability", "bytes", "latency ms")
    rows = [
        (
            names[entry["index"]],
            "(blank)" if entry.get("blank") else entry["label"] + (" (uncertain)" if entry.get("uncertain") else ""),
            "-" if entry.get("probability") is None else f"{entry['probability']:.4f}",
            str(entry["transmitted_bytes"]),
            f"{entry['latency_ms']['total']:.1f}",
        )
        for entry in entries
        if "error" not in entry
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    widths[0] = max(widths[0], *(len(names[entry["index"]]) for entry in entries))  # error rows too
    numbers = {2, 3, 4}

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if i in numbers else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    classified = iter(rows)
    lines = [line(header)]
    for entry in entries:
        if "error" in entry:
            lines.append(f"{names[entry['index']].ljust(widths[0])}  error: {entry['error']}")
        else:
            lines.append(line(next(classified)))
    return "\n".join(lines)


def batch_line(batch: dict[str, Any]) -> str:
    frames = f"{batch['frames']} frame" + ("" if batch["frames"] == 1 else "s")
    return (
        f"{batch['classified']} of {batch['images']} images classified in {frames}: "
        f"{batch['transmitted_bytes']} bytes of spikes, {batch['message_bytes']} bytes on the wire, "
        f"{batch['latency_ms']['total']:.1f} ms"
    )
