"""Generate Python code + typed stubs from proto/ into libs/dwf (the one command: make protos).

``--check`` regenerates into a temporary directory and fails if libs/dwf differs, so stale
generated code cannot land.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "libs" / "dwf"
WKT_INCLUDE = Path(grpc_tools.__file__).parent / "_proto"


def generate(out: Path) -> None:
    # protoc finds the mypy plugins on PATH; they live next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not files:
        sys.exit("no .proto files under proto/")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{WKT_INCLUDE}",
        f"--python_out={out.parent}",
        f"--grpc_python_out={out.parent}",
        f"--mypy_out={out.parent}",
        f"--mypy_grpc_out={out.parent}",
        *files,
    ]
    # A child process: the mypy plugins chatter on stderr, shown only when protoc fails.
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"protoc failed:\n{result.stdout}{result.stderr}")
    # Make every generated directory a regular package (mypy and setuptools want them).
    for directory in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        if directory.name != "__pycache__":
            (directory / "__init__.py").touch()
    (out / "py.typed").touch()


def _tree(path: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(path)): p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "dwf"
        generate(fresh)
        want, have = _tree(fresh), _tree(OUT) if OUT.exists() else {}
        stale = sorted(
            name
            for name in want.keys() | have.keys()
            if name not in want
            or name not in have
            or not filecmp.cmp(want[name], have[name], shallow=False)
        )
    if stale:
        print("generated code in libs/dwf is stale; run `make protos`:", *stale, sep="\n  ")
        return 1
    print("generated code in libs/dwf is current")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        return check()
    if OUT.exists():
        shutil.rmtree(OUT)
    generate(OUT)
    print(f"generated {len(_tree(OUT))} files in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
