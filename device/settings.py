"""Settings of ``sbn device``: environment variables ``SBN_DEVICE_<NAME>``, overridden by ``--<name>`` flags."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.energy import CountMode
from shared.settings import ModelSettings


class DeviceSettings(ModelSettings):
    model_config = SettingsConfigDict(env_prefix="SBN_DEVICE_")

    host: str = Field("127.0.0.1", description="HTTP address to listen on (0.0.0.0 for all interfaces)")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    edge_address: str = Field("127.0.0.1:50051", description="host:port of the edge's gRPC server")
    codec: Literal["raw", "sparse", "auto"] = Field(
        "raw", description="spike payload codec: raw (1 bit per spike), sparse, or auto (the smaller, per request)")
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="largest accepted request body (the multipart upload), in bytes")
    deadline_s: float = Field(5.0, gt=0, description="seconds the edge has to answer one request")
    energy_mode: CountMode = Field(
        CountMode.PAPER, description="energy accounting: paper (convs in RB1..RBk) or complete (also stem, "
                                     "shortcuts, encoder)")
