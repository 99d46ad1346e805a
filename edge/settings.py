"""Settings of ``sbn edge``: environment variables ``SBN_EDGE_<NAME>``, overridden by ``--<name>`` flags."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelSettings


class EdgeSettings(ModelSettings):
    model_config = SettingsConfigDict(env_prefix="SBN_EDGE_")

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 or [::] for all interfaces)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: any free port)")
    max_concurrency: int = Field(
        8, ge=1, description="RPCs handled at once; more are refused with RESOURCE_EXHAUSTED instead of queueing")
    max_batch: int = Field(8, ge=1, description="largest batch (B) a frame may carry; also bounds the message size")
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="on SIGTERM/SIGINT, seconds in-flight RPCs get to finish before they are cancelled")
