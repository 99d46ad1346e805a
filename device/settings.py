"""Settings of ``sbn device``: environment variables ``SBN_DEVICE_<NAME>``, overridden by ``--<name>`` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from spikebottlenet.device.planner import Objective
from spikebottlenet.shared.channel import parse_channel
from spikebottlenet.shared.energy import CountMode
from spikebottlenet.shared.errors import ConfigError
from spikebottlenet.shared.fec import check_parity
from spikebottlenet.shared.onnx_head import read_exported_head
from spikebottlenet.shared.preprocess import MAX_DECODED_BYTES
from spikebottlenet.shared.radio import DEFAULT_LINK, LINK_PROFILES, LinkProfile, link_profile
from spikebottlenet.shared.rpc.wire import MIN_PING_INTERVAL_S
from spikebottlenet.shared.settings import ModelSettings


class DeviceSettings(ModelSettings):
    model_config = SettingsConfigDict(env_prefix="SBN_DEVICE_")
    renamed_variables = {
        "SBN_DEVICE_HEAD_BATCH_MAX_IMAGES": "batch_max_images",
        "SBN_DEVICE_HEAD_BATCH_MAX_WAIT_MS": "batch_max_wait_ms",
    }

    host: str = Field("127.0.0.1", description="HTTP address to listen on (0.0.0.0 for all interfaces)")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    edge_address: str = Field(
        "127.0.0.1:50051",
        description="the edge's gRPC target: host:port or dns:///host:port (every address the "
        "name resolves to, e.g. each replica of a Compose service, calls taking turns "
        "over them: round robin), or ipv4:a:port,b:port for a fixed list",
    )
    runtime: Literal["torch", "onnx"] = Field(
        "torch",
        description="what runs the head: torch, or onnx: onnxruntime on the CPU, with no torch installed, serving "
        "heads exported by `sbn export onnx` (checkpoint: .onnx files, else onnx_heads; no streaming)",
    )
    onnx_heads: Path | None = Field(
        None,
        description="runtime onnx with checkpoint unset: a folder of exported heads (*.onnx), served as the "
        "embedded demo models are (models, arch and split_point apply)",
    )
    codec: Literal["raw", "sparse", "entropy", "auto"] = Field(
        "raw",
        description="spike payload codec: raw (1 bit per spike), sparse, entropy (range-coded under the "
        "checkpoint's fitted context model), or auto (the smallest the model offers, per request)",
    )
    entropy_chunks: int = Field(
        1,
        ge=1,
        le=255,
        description="the entropy codec cuts each frame into this many independently decodable chunks, "
        "each with its own check (a CRC-16 or CRC-32), so that a damaged byte on a lossy link erases one chunk "
        "(its spikes run as silence) rather than the frame; up to C' chunks are groups "
        "of channels, a multiple of C' also cuts channels into bands of rows. 1: fewest "
        "bytes",
    )
    fec_parity_bytes: int = Field(
        0,
        ge=0,
        le=64,
        description="Reed-Solomon parity bytes per 255-byte block around every payload (even, "
        "8..64; p corrects p/2 damaged bytes, or p reported lost, per block at p/(255-p) overhead; "
        "shared/fec.py). 0: none",
    )
    stream: bool = Field(
        False,
        description="send each request's spikes one time step per message as the head makes them "
        "(InferStream), the edge answering each with the running logits; /classify's stream= "
        "overrides it",
    )
    early_exit: float | None = Field(
        None,
        gt=0,
        le=1,
        description="stream, and stop at the first time step whose running logits give a class at "
        "least this softmax probability (fewer steps computed and sent); /classify's "
        "early_exit= overrides it. Default: off",
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="largest accepted request body (the multipart upload), in bytes"
    )
    max_decoded_bytes: int = Field(
        MAX_DECODED_BYTES,
        ge=1,
        description="largest image accepted, as its decoded size judged from its header "
        "before a pixel is decoded: width x height x bytes per pixel of its mode, "
        "at least 3 (every upload becomes 8-bit RGB at full size before it is "
        "scaled to the model's input); more: 413. Default 64 MiB: 4096 x 4096 "
        "at 4 bytes a pixel, far more than a 32 x 32 model needs",
    )
    max_arriving_uploads: int = Field(
        64,
        ge=1,
        description="requests whose body is still arriving at once; one more makes room by dropping the one "
        "that has been arriving longest (503, its connection closed). A normal upload arrives "
        "in milliseconds, so under a flood of slow senders the ones dropped are theirs; each "
        "also ends at its deadline",
    )
    limit_concurrency: int = Field(
        1000,
        ge=1,
        description="uvicorn's backstop above the other limits: with this many connections open or "
        "requests in flight, a new request gets uvicorn's own 503 (in plain text)",
    )
    timeout_keep_alive_s: int = Field(
        5,
        ge=1,
        description="an idle connection (nothing sent since it opened, or since its last answer) is closed "
        "after this many seconds (uvicorn's timeout_keep_alive)",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="most bytes of an unfinished request line and headers held while the "
        "rest arrives (h11's max incomplete event size); past it: 400",
    )
    max_batch: int = Field(
        32,
        ge=1,
        description="most images one POST /classify/batch may carry (more: 413); they cross to the edge in "
        "one frame, so at most the edge's max_batch (its default: 32)",
    )
    deadline_s: float = Field(
        5.0,
        gt=0,
        description="seconds one request may take from its first byte's arrival to the answer: receiving "
        "its headers and upload (not arrived by then: 408, connection closed), "
        "waiting for the head, the head, waiting for a free edge call and the edge's answer "
        "(which gets what is left as its gRPC deadline); past it, 504",
    )
    max_edge_calls: int = Field(
        32,
        ge=1,
        description="frames in flight to the edge at once; more wait for a free call within their deadline. "
        "At most the edge's max_concurrency (its default: 32), shared out among the devices of "
        "one edge, so that the edge never refuses this device as busy",
    )
    edge_keepalive_s: float = Field(
        0.5,
        ge=0,
        description="an edge connection that has sent nothing for this long while calls are open on it is "
        "pinged, to find a hung edge replica (stopped, frozen, cut off): its frames go to "
        "another replica instead. sbn edge accepts pings this often; 0 (no pings) for an edge "
        "that does not (sbn serve-ray: Serve's proxy closes the connection)",
    )
    edge_keepalive_timeout_s: float = Field(
        1.0,
        gt=0,
        description="a ping unanswered for this long closes the connection: its frames fail over to "
        "another replica (or fail, 503, with none left), and it takes no more frames until "
        "the edge answers again",
    )
    head_queue_limit: int = Field(
        64,
        ge=1,
        description="requests that may wait for each head at once, their uploads being decoded or "
        "queued, and streamed requests that may be open at once (they never queue); one more "
        "is refused with 503 and Retry-After, so a burst's parsed uploads do not pile up in "
        "front of a head",
    )
    energy_mode: CountMode = Field(
        CountMode.PAPER,
        description="energy accounting: paper (the convs inside the blocks up to the split point) "
        "or complete (also stem, shortcuts, encoder)",
    )
    link: str = Field(
        DEFAULT_LINK,
        description=f"the uplink's radio ({', '.join(LINK_PROFILES)}: BottleNet's measured power "
        "model and rate): the transmit energy in each answer, and split_point=auto's "
        "prior until the device has measured its link",
    )
    link_rate_mbps: float | None = Field(
        None, gt=0, description="a custom uplink rate for the link's prior (default: the profile's)"
    )
    link_rtt_ms: float | None = Field(
        None, ge=0, description="a custom round trip for the link's prior (default: the profile's)"
    )
    objective: Objective = Field(
        Objective.LATENCY,
        description="what split_point=auto minimizes: latency, energy (device compute + "
        "radio), or mix (latency_weight of latency, the rest energy)",
    )
    latency_weight: float = Field(0.5, ge=0, le=1, description="the mix objective's weight of latency, 0..1")
    max_accuracy_drop: float | None = Field(
        3.0,
        ge=0,
        description="split_point=auto only picks models whose checkpoint records an accuracy drop of at "
        "most this many points (the paper's rule); unset: any model",
    )
    channel: str | None = Field(
        None,
        description="experiments only: every frame's payload crosses this lossy channel on its way to the edge "
        "(bsc:BER, erasure:P or gilbert:P_GB,P_BG,BER_BAD[,BER_GOOD]; shared/channel.py), after "
        "its FEC parity. A raw payload arrives with flipped spikes; an entropy chunk that fails its "
        "CRC runs as silence (a frame with none intact: 502). Default: off",
    )
    api_key: SecretStr | None = Field(
        None,
        min_length=1,
        description="if set, POST /classify and GET /metrics need it in the X-API-Key header "
        "(set it in the environment: a flag shows in the process list)",
    )
    tls_ca: FilePath | None = Field(
        None,
        description="CA certificate(s) (PEM) the edge's certificate must be signed by; set, the device speaks "
        "TLS to the edge (default: plaintext)",
    )
    tls_cert: FilePath | None = Field(
        None, description="client certificate chain (PEM) for an edge that requires one (mutual TLS); needs tls_key"
    )
    tls_key: FilePath | None = Field(None, description="private key (PEM) of tls_cert")
    tls_server_name: str | None = Field(
        None, description="name the edge's certificate must carry, when not the host of edge_address (e.g. an IP)"
    )

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, spec: str | None) -> str | None:
        if spec is not None:
            parse_channel(spec)  # ValueError naming the forms
        return spec

    @field_validator("fec_parity_bytes")
    @classmethod
    def _even_parity(cls, parity: int) -> int:
        check_parity(parity)  # ValueError naming the range
        return parity

    @field_validator("link")
    @classmethod
    def _known_link(cls, name: str) -> str:
        return link_profile(name).name  # ValueError naming the profiles

    @field_validator("edge_keepalive_s")
    @classmethod
    def _edge_accepts_pings_this_often(cls, interval_s: float) -> float:
        if 0 < interval_s < MIN_PING_INTERVAL_S:
            raise ValueError(
                f"edge_keepalive_s is 0 (no pings) or at least {MIN_PING_INTERVAL_S:g} s: an edge takes "
                f"pings more often as abuse and closes the connection"
            )
        return interval_s

    def prior_link(self) -> LinkProfile:
        """The configured link: the profile, with the custom rate and round trip if set."""
        return link_profile(self.link, self.link_rate_mbps, self.link_rtt_ms)

    @model_validator(mode="after")
    def _runtime_serves_its_heads(self) -> DeviceSettings:
        if self.runtime == "torch":
            return self
        if self.checkpoint and any(path.suffix != ".onnx" for path in self.checkpoint):
            raise ValueError(
                "the onnx runtime serves heads exported by `sbn export onnx --checkpoint X --out X.onnx`, "
                f"not {', '.join(str(p) for p in self.checkpoint if p.suffix != '.onnx')}"
            )
        if not self.checkpoint and self.onnx_heads is None:
            raise ValueError(
                "the onnx runtime needs its heads: set checkpoint to .onnx files, or onnx_heads to a folder"
            )
        if self.stream or self.early_exit is not None:
            raise ValueError("stream and early_exit need the torch runtime: the ONNX head runs all its steps at once")
        return self

    def checkpoint_paths(self) -> list[Path]:
        """Every checkpoint (runtime onnx: exported head) to serve, the default model's first."""
        if self.runtime == "torch" or self.checkpoint:
            return super().checkpoint_paths()
        assert self.onnx_heads is not None  # _runtime_serves_its_heads
        heads = sorted(
            (read_exported_head(path).checkpoint for path in self.onnx_heads.glob("*.onnx")),
            key=lambda head: (head.config.backbone.arch, head.config.split_point.index),
        )
        default = [
            h for h in heads if (h.config.backbone.arch, h.config.split_point.index) == (self.arch, self.split_point)
        ]
        if not default:
            available = ", ".join(f"{h.config.backbone.arch} {h.config.split_point.name}" for h in heads)
            raise ConfigError(
                f"no exported head for {self.arch} at split point {self.split_point} in {self.onnx_heads} "
                f"(it has: {available or 'none'})"
            )
        others = [h.path for h in heads if h is not default[0]] if self.models == "all" else []
        return [default[0].path, *others]

    @model_validator(mode="after")
    def _tls_complete(self) -> DeviceSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for a client certificate, or neither")
        if self.tls_ca is None and (self.tls_cert is not None or self.tls_server_name is not None):
            raise ValueError("tls_cert, tls_key and tls_server_name need tls_ca: they only apply to TLS")
        return self
