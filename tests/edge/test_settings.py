"""Settings come from SBN_EDGE_* variables, and a flag given on the command line wins over its variable."""

from __future__ import annotations

import argparse

import pytest

from edge.server import add_arguments
from edge.settings import EdgeSettings
from shared.settings import settings_from_args


def settings(*argv: str) -> EdgeSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(EdgeSettings, parser.parse_args(argv))


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EdgeSettings.model_fields:
        monkeypatch.delenv(f"SBN_EDGE_{name.upper()}", raising=False)
    s = settings()
    assert (s.host, s.port, s.split_point, s.threads, s.checkpoint) == ("127.0.0.1", 50051, 8, 1, None)


def test_a_flag_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBN_EDGE_PORT", "6000")
    monkeypatch.setenv("SBN_EDGE_MAX_BATCH", "3")
    s = settings("--port", "7000")
    assert (s.port, s.max_batch) == (7000, 3)


@pytest.mark.parametrize("argv", [["--port", "http"], ["--split-point", "17"], ["--threads", "0"]])
def test_an_invalid_value_exits_naming_the_setting(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match=argv[0][2:].replace("-", "_")):
        settings(*argv)
