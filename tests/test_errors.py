"""One base for the errors meant for users (shared/errors.py): the command line says them in one line and exits 1,
while any other exception, a bug, keeps its traceback.

The classes are found in the source with ``ast``, as tests/test_layering.py finds imports, so that a new error
class cannot slip past by living in a module no test imports.
"""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import pytest

from spikebottlenet.sbn import predict
from spikebottlenet.sbn.cli import main
from spikebottlenet.shared.checkpoint_metadata import DEFAULT_MODEL_DIR
from tests.test_layering import modules

BASE = "SpikeBottleNetError"
# Exceptions that never reach a user, each with why; every other exception class in the package derives from BASE.
INTERNAL = {
    "spikebottlenet.edge.micro_batcher.WorkerStopped": (
        "the edge's own shutdown reaching a frame still queued: the server answers that call UNAVAILABLE"
    ),
    "spikebottlenet.edge.ray_serve.StreamRefused": (
        "ends an InferStream call whose gRPC status is already set on its context, which is all the caller sees"
    ),
}


def defined_classes() -> dict[str, list[str]]:
    """Every class in the installed package, by dotted name: the names of its bases as written (``grpc.RpcError``
    -> ``RpcError``)."""
    found = {}
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                found[f"{module}.{node.name}"] = [ast.unparse(base).rpartition(".")[2] for base in node.bases]
    return found


def ancestors(name: str, classes: dict[str, list[str]]) -> set[str]:
    """The base names of ``name`` (a class's short name), the package's own classes followed up to the built-ins."""
    by_short: dict[str, list[str]] = {}  # two classes of one name (in two modules): the bases of both
    for dotted, bases in classes.items():
        by_short.setdefault(dotted.rpartition(".")[2], []).extend(bases)
    seen, todo = set(), list(by_short.get(name, []))
    while todo:
        base = todo.pop()
        if base not in seen:
            seen.add(base)
            todo += by_short.get(base, [])
    return seen


def exception_classes() -> dict[str, set[str]]:
    """The package's exception classes (those with a built-in exception among their ancestors), with ancestors."""
    classes = defined_classes()
    lineage = {dotted: ancestors(dotted.rpartition(".")[2], classes) for dotted in classes}
    return {
        dotted: names
        for dotted, names in lineage.items()
        if any(
            isinstance(getattr(builtins, n, None), type) and issubclass(getattr(builtins, n), BaseException)
            for n in names
        )
    }


def test_every_exception_class_for_users_derives_from_the_one_base() -> None:
    exceptions = exception_classes()
    assert len(exceptions) > 30  # the search finds them: CheckpointError, ImageError, EdgeError and the rest
    outside = sorted(
        dotted
        for dotted, names in exceptions.items()
        if BASE not in names and not dotted.endswith(f".{BASE}") and dotted not in INTERNAL
    )
    assert not outside, f"derive these from {BASE}, or list them in INTERNAL with the reason: {outside}"
    for dotted in INTERNAL:  # the list stays true: each is there, and not a user's error after all
        assert dotted in exceptions and BASE not in exceptions[dotted], dotted


def test_the_one_base_is_found_as_an_ancestor_of_a_user_error() -> None:
    # the ancestor search itself, on classes whose lineage is known: EdgeTimeout -> EdgeError -> SpikeBottleNetError
    exceptions = exception_classes()
    assert {"EdgeError", BASE, "Exception"} <= exceptions["spikebottlenet.device.edge_client.EdgeTimeout"]
    assert {BASE, "ValueError"} <= exceptions["spikebottlenet.shared.checkpoint_metadata.CheckpointError"]
    assert BASE not in exceptions["spikebottlenet.edge.micro_batcher.WorkerStopped"]


def sbn(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m spikebottlenet ARGV``, run to its end."""
    return subprocess.run([sys.executable, "-m", "spikebottlenet", *argv], capture_output=True, text=True, timeout=300)


def test_a_missing_checkpoint_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    image = tmp_path / "digit.png"
    image.write_bytes(b"not read: the checkpoint is refused first")
    done = sbn("predict", str(image), "--checkpoint", "/nonexistent.safetensors")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["sbn predict: error: checkpoint /nonexistent.safetensors does not exist"]


def test_a_missing_file_the_user_named_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.png"
    done = sbn("predict", str(missing), "--checkpoint", str(DEFAULT_MODEL_DIR / "mnist_rb8.safetensors"))
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("sbn predict: error: ") and "No such file or directory" in line and str(missing) in line


@pytest.mark.parametrize(
    "bug",
    [
        ZeroDivisionError("division by zero"),
        RuntimeError("an invariant broke"),
        ValueError("a plain ValueError is a bug too"),
        KeyError("key"),
    ],
)
def test_an_unexpected_exception_propagates_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bug: Exception
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise bug

    monkeypatch.setattr(predict, "load_checkpoint", broken)
    with pytest.raises(type(bug)) as raised:
        main(["predict", str(tmp_path / "digit.png"), "--checkpoint", str(DEFAULT_MODEL_DIR / "mnist_rb8.safetensors")])
    assert raised.value is bug
    assert any(entry.name == "broken" for entry in raised.traceback)  # raised where it happened, not re-raised
    assert capsys.readouterr().err == ""  # nothing said as if it were the user's error
