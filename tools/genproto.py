"""Generates the Python stubs of protos/ into the repository root (`subtitler/`).

Reproducible: the output depends only on the .proto files and the pinned
grpcio-tools and mypy-protobuf versions. `--check` regenerates into a
temporary folder and fails if the committed stubs differ.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "subtitler"


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    # The mypy-protobuf plugins live beside this interpreter (the venv may not be on PATH).
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for folder in [out_dir / PACKAGE, *(p for p in (out_dir / PACKAGE).rglob("*") if p.is_dir())]:
        (folder / "__init__.py").write_text("")
    (out_dir / PACKAGE / "py.typed").write_text("")


def tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = tree(out / PACKAGE)
        target = ROOT / PACKAGE
        if options.check:
            current = tree(target) if target.exists() else {}
            stale = sorted(
                name
                for name in fresh.keys() | current.keys()
                if name not in fresh
                or name not in current
                or not filecmp.cmp(fresh[name], current[name], shallow=False)
            )
            if stale:
                print("generated stubs are stale; run `make proto`:", *stale, sep="\n  ", file=sys.stderr)
                return 1
            print(f"{len(fresh)} generated files up to date")
            return 0
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out / PACKAGE, target)
        print(f"generated {len(fresh)} files into {target.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
