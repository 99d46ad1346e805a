"""Settings come from SBN_DEVICE_* variables: the edge channel's TLS, the API key, the bound on edge calls."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from spikebottlenet.device.app import add_arguments
from spikebottlenet.device.settings import DeviceSettings
from spikebottlenet.edge.settings import EdgeSettings
from spikebottlenet.shared.batching import BatchPolicy
from spikebottlenet.shared.settings import settings_from_args


def settings(*argv: str) -> DeviceSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(DeviceSettings, parser.parse_args(argv))


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "x.pem"
    path.write_text("PEM")
    return path


def test_plaintext_no_key_and_the_edges_default_slots_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DeviceSettings.model_fields:
        monkeypatch.delenv(f"SBN_DEVICE_{name.upper()}", raising=False)
    s = settings()
    assert (s.tls_ca, s.tls_cert, s.tls_key, s.tls_server_name, s.api_key, s.max_edge_calls) == (
        None,
        None,
        None,
        None,
        None,
        EdgeSettings.model_fields["max_concurrency"].default,
    )
    assert (s.arch, s.split_point, s.checkpoint, s.models) == ("spiking_resnet50", 8, [], "all")


def test_the_arch_comes_from_the_environment_and_bounds_the_split_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBN_DEVICE_ARCH", "mobilenetv2")
    monkeypatch.setenv("SBN_DEVICE_SPLIT_POINT", "17")
    assert (settings().arch, settings().split_point) == ("spiking_mobilenetv2", 17)
    with pytest.raises(SystemExit, match="spiking_resnet50 has no split point 17"):
        settings("--arch", "spiking_resnet50")


def test_tls_and_the_api_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / name).write_text("PEM")
        monkeypatch.setenv(f"SBN_DEVICE_TLS_{name.upper()}", str(tmp_path / name))
    monkeypatch.setenv("SBN_DEVICE_TLS_SERVER_NAME", "edge.internal")
    monkeypatch.setenv("SBN_DEVICE_API_KEY", "k3y")
    s = settings()
    assert (s.tls_ca, s.tls_cert, s.tls_key, s.tls_server_name) == (
        tmp_path / "ca",
        tmp_path / "cert",
        tmp_path / "key",
        "edge.internal",
    )
    assert s.api_key is not None and s.api_key.get_secret_value() == "k3y"
    assert "k3y" not in repr(s) and "k3y" not in str(s)  # kept out of logs and tracebacks


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--tls-ca", "--tls-cert"], "tls_cert and tls_key go together"),
        (["--tls-ca", "--tls-key"], "tls_cert and tls_key go together"),
        (["--tls-cert", "--tls-key"], "need tls_ca"),
    ],
    ids=["cert without key", "key without cert", "client certificate without TLS"],
)
def test_incomplete_tls_settings_exit_naming_the_problem(pem: Path, flags: list[str], words: str) -> None:
    with pytest.raises(SystemExit, match=words):
        settings(*(arg for flag in flags for arg in (flag, str(pem))))


def test_a_server_name_without_tls_exits() -> None:
    with pytest.raises(SystemExit, match="need tls_ca"):
        settings("--tls-server-name", "edge.internal")


@pytest.mark.parametrize("argv", [["--api-key", ""], ["--max-edge-calls", "0"]])
def test_an_invalid_value_exits_naming_the_setting(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match=argv[0][2:].replace("-", "_")):
        settings(*argv)


def test_the_renamed_batching_variables_still_work_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBN_DEVICE_HEAD_BATCH_MAX_IMAGES", "5")
    monkeypatch.setenv("SBN_DEVICE_HEAD_BATCH_MAX_WAIT_MS", "7.5")
    with pytest.warns(FutureWarning) as warned:
        old = DeviceSettings()
    assert sorted(str(w.message) for w in warned) == [
        "SBN_DEVICE_HEAD_BATCH_MAX_IMAGES is deprecated and will be removed in the next release: set "
        "SBN_DEVICE_BATCH_MAX_IMAGES instead",
        "SBN_DEVICE_HEAD_BATCH_MAX_WAIT_MS is deprecated and will be removed in the next release: set "
        "SBN_DEVICE_BATCH_MAX_WAIT_MS instead",
    ]
    assert (old.batch_max_images, old.batch_max_wait_ms) == (5, 7.5)
    assert old.batch_policy == BatchPolicy(max_images=5, max_wait_s=0.0075)
    # the new name wins over the old one, and a flag over both
    monkeypatch.setenv("SBN_DEVICE_BATCH_MAX_IMAGES", "9")
    with pytest.warns(FutureWarning):
        assert DeviceSettings().batch_max_images == 9
    with pytest.warns(FutureWarning):
        assert settings("--batch-max-images", "3").batch_max_images == 3


def test_both_halves_name_their_batching_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBN_DEVICE_BATCH_MAX_IMAGES", "4")
    monkeypatch.setenv("SBN_EDGE_BATCH_MAX_IMAGES", "6")
    monkeypatch.setenv("SBN_EDGE_BATCH_MAX_WAIT_MS", "0")
    assert DeviceSettings().batch_policy == BatchPolicy(max_images=4, max_wait_s=0.002)
    assert EdgeSettings().batch_policy == BatchPolicy(max_images=6, max_wait_s=0.0)
