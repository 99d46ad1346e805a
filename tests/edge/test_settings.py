"""Settings come from SBN_EDGE_* variables, and a flag given on the command line wins over its variable."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from spikebottlenet.edge.server import add_arguments
from spikebottlenet.edge.settings import EdgeSettings
from spikebottlenet.shared.settings import settings_from_args


def settings(*argv: str) -> EdgeSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(EdgeSettings, parser.parse_args(argv))


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EdgeSettings.model_fields:
        monkeypatch.delenv(f"SBN_EDGE_{name.upper()}", raising=False)
    s = settings()
    assert (s.host, s.port, s.split_point, s.threads, s.checkpoint, s.models) == ("127.0.0.1", 50051, 8, 1, [], "all")
    assert s.arch == "spiking_resnet50"
    assert (s.tls_cert, s.tls_key, s.tls_client_ca, s.inject_delay_s) == (None, None, None, 0.0)  # plaintext, no faults


def test_a_flag_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBN_EDGE_PORT", "6000")
    monkeypatch.setenv("SBN_EDGE_MAX_BATCH", "3")
    s = settings("--port", "7000")
    assert (s.port, s.max_batch) == (7000, 3)


@pytest.mark.parametrize("argv", [["--port", "http"], ["--split-point", "17"], ["--threads", "0"]])
def test_an_invalid_value_exits_naming_the_setting(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match=argv[0][2:].replace("-", "_")):
        settings(*argv)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--split-point", "17"], "spiking_resnet50 has no split point 17"),
        (["--arch", "mobilenetv2", "--split-point", "18"], "spiking_mobilenetv2 has no split point 18"),
        (["--arch", "vgg"], "arch"),
    ],
    ids=["ResNet has 16", "MobileNet has 17", "unknown backbone"],
)
def test_the_split_point_must_exist_in_the_arch(argv: list[str], words: str) -> None:
    with pytest.raises(SystemExit, match=words):
        settings(*argv)


def test_the_arch_accepts_an_alias_and_its_own_split_points(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings("--arch", "mobilenetv2", "--split-point", "17")
    assert (s.arch, s.split_point) == ("spiking_mobilenetv2", 17)
    monkeypatch.setenv("SBN_EDGE_ARCH", "resnet50")
    assert settings().arch == "spiking_resnet50"


def test_tls_and_fault_injection_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("cert", "key", "client_ca"):
        (tmp_path / name).write_text("PEM")
        monkeypatch.setenv(f"SBN_EDGE_TLS_{name.upper()}", str(tmp_path / name))
    monkeypatch.setenv("SBN_EDGE_INJECT_DELAY_S", "0.5")
    s = settings()
    assert (s.tls_cert, s.tls_key, s.tls_client_ca, s.inject_delay_s) == (
        tmp_path / "cert",
        tmp_path / "key",
        tmp_path / "client_ca",
        0.5,
    )


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--tls-cert"], "tls_cert and tls_key go together"),
        (["--tls-key"], "tls_cert and tls_key go together"),
        (["--tls-client-ca"], "tls_client_ca needs tls_cert and tls_key"),
    ],
    ids=["cert alone", "key alone", "client CA without TLS"],
)
def test_incomplete_tls_settings_exit_naming_the_problem(tmp_path: Path, flags: list[str], words: str) -> None:
    (tmp_path / "x.pem").write_text("PEM")
    with pytest.raises(SystemExit, match=words):
        settings(*(arg for flag in flags for arg in (flag, str(tmp_path / "x.pem"))))


def test_a_tls_file_that_does_not_exist_exits_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("PEM")
    with pytest.raises(SystemExit, match="tls_cert"):
        settings("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "key.pem"))


def test_several_checkpoints_from_repeated_flags_or_commas(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert settings("--checkpoint", str(a), "--checkpoint", str(b)).checkpoint_paths() == [a, b]
    monkeypatch.setenv("SBN_EDGE_CHECKPOINT", f"{a},{b}")
    assert settings().checkpoint_paths() == [a, b]
    monkeypatch.setenv("SBN_EDGE_CHECKPOINT", str(a))  # one path, as before
    assert settings().checkpoint_paths() == [a]


def test_models_all_serves_every_embedded_model_the_default_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SBN_EDGE_CHECKPOINT", raising=False)
    paths = settings("--models", "all", "--split-point", "16").checkpoint_paths()
    shipped = sorted((Path(__file__).parents[2] / "shared" / "models").glob("*.safetensors"))
    assert sorted(paths) == shipped
    assert paths[0].name == "mnist_rb16.safetensors"  # the default arch (ResNet) at the asked split point


def test_every_embedded_model_unless_one_is_asked_for_or_a_checkpoint_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("CHECKPOINT", "MODELS", "ARCH", "SPLIT_POINT"):
        monkeypatch.delenv(f"SBN_EDGE_{name}", raising=False)
    shipped = sorted((Path(__file__).parents[2] / "shared" / "models").glob("*.safetensors"))
    paths = settings().checkpoint_paths()
    assert sorted(paths) == shipped and paths[0].name == "mnist_rb8.safetensors"  # the default model first
    assert [path.name for path in settings("--models", "one").checkpoint_paths()] == ["mnist_rb8.safetensors"]
    monkeypatch.setenv("SBN_EDGE_MODELS", "one")
    assert [path.name for path in settings().checkpoint_paths()] == ["mnist_rb8.safetensors"]
    monkeypatch.delenv("SBN_EDGE_MODELS")
    own = tmp_path / "own.safetensors"  # whoever brings a model serves it alone, unless they ask for the rest
    assert settings("--checkpoint", str(own)).checkpoint_paths() == [own]
    with_all = settings("--checkpoint", str(own), "--models", "all").checkpoint_paths()
    assert with_all[0] == own and sorted(with_all[1:]) == shipped
