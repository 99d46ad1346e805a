"""Regenerate the gRPC stubs from proto/: ``python -m spikebottlenet.shared.rpc.generate``.

protoc writes them where the proto package says, spikebottlenet/v1/ under the repository root, which is
the installed package ``spikebottlenet.v1``: its absolute imports (``from spikebottlenet.v1 import ...``)
work as generated, and nothing in the files is touched.
``--check`` regenerates into a temporary folder and exits 1 if the committed stubs differ.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
OUT = ROOT
PROTOS = sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *map(str, PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS}")
    written = []
    for proto in PROTOS:
        package_dir = out / proto.parent.relative_to(PROTO_ROOT)
        for d in (package_dir, *package_dir.parents):  # every folder below `out` is a package
            if d == out:
                break
            (d / "__init__.py").touch()  # an existing one (spikebottlenet/__init__.py) keeps its text
        written += sorted(package_dir.glob(f"{proto.stem}_pb2*"))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are out of date")
    args = parser.parse_args()
    if not args.check:
        for path in generate(OUT):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            p.relative_to(tmp)
            for p in generate(Path(tmp))
            if not (OUT / p.relative_to(tmp)).is_file() or not filecmp.cmp(p, OUT / p.relative_to(tmp), shallow=False)
        ]
    for p in stale:
        print(f"out of date: {p}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
