"""Regenerate src/activekd/v1 from protos/ (``make protos``); ``--check`` fails if the checked-in copy is stale."""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "protos"
OUT_PKG = ROOT / "src" / "activekd" / "v1"


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every .proto into ``out_root`` (which mirrors src/); return generated files."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out_root / "activekd" / "v1"
    (pkg / "__init__.py").write_text(
        '"""Generated from protos/activekd/v1 by scripts/gen_protos.py; do not edit."""\n'
    )
    return sorted(p for p in pkg.iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
        if args.check:
            stale = [
                f.name
                for f in files
                if not (OUT_PKG / f.name).exists()
                or not filecmp.cmp(f, OUT_PKG / f.name, shallow=False)
            ]
            extra = sorted({p.name for p in OUT_PKG.glob("*_pb2*.py*")} - {f.name for f in files})
            if stale or extra:
                print(
                    f"generated code is stale: {stale + extra}; run `make protos`", file=sys.stderr
                )
                return 1
            print("generated code is up to date")
            return 0
        OUT_PKG.mkdir(parents=True, exist_ok=True)
        for old in OUT_PKG.glob("*_pb2*.py*"):
            old.unlink()
        for f in files:
            (OUT_PKG / f.name).write_bytes(f.read_bytes())
    print(f"wrote {len(files)} files to {OUT_PKG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
