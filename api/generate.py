"""Regenerate the Python modules of api/ from its .proto files.

Run `python -m api.generate` from the repository root. With `--check DIR` the modules are
written under DIR instead, so a test can compare them with the committed ones.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
API = ROOT / "api"


def proto_files() -> list[pathlib.Path]:
    return sorted(API.rglob("*.proto"))


def generate(out_dir: pathlib.Path) -> None:
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(base: pathlib.Path) -> list[pathlib.Path]:
    found = [*base.rglob("*_pb2.py"), *base.rglob("*_pb2.pyi"), *base.rglob("*_pb2_grpc.py")]
    return sorted(p.relative_to(base) for p in found if ".venv" not in p.parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    ns = parser.parse_args(argv)
    generate(ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
