#!/usr/bin/env python3
"""Generates quotad/v1 (protobuf messages and gRPC stubs) from ../proto, or checks the committed ones match.

    python stubs.py          # regenerate src/quotad/v1/*_pb2*.py{,i}
    python stubs.py --check  # exit 1 if they differ from what ../proto generates

Needs grpcio-tools==1.75.1 (its protobuf 6.31.1 gencode loads on any protobuf runtime >= 6.31.1, so the package
works on Python 3.9+); .ci/run runs --check in a venv of its own.
"""

import filecmp
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "proto")
OUT = os.path.join(HERE, "src", "quotad", "v1")
FILES = ["quota_pb2.py", "quota_pb2.pyi", "quota_pb2_grpc.py", "admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py"]
TOOLS = "1.75.1"


def generate(into: str) -> None:
    import grpc_tools
    from grpc_tools import protoc

    version = getattr(grpc_tools, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("grpcio-tools")
    if version != TOOLS:
        sys.exit(f"stubs.py needs grpcio-tools=={TOOLS} (found {version}): the committed stubs are its output")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={into}", f"--pyi_out={into}", f"--grpc_python_out={into}"]
    if protoc.main(args + ["quotad/v1/quota.proto", "quotad/v1/admin.proto"]) != 0:
        sys.exit("protoc failed")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        fresh = os.path.join(tmp, "quotad", "v1")
        if "--check" in sys.argv:
            _, differ, missing = filecmp.cmpfiles(fresh, OUT, FILES, shallow=False)
            if differ or missing:
                sys.exit(f"python/src/quotad/v1 is stale ({', '.join(differ + missing)}): run python/stubs.py")
            print(f"python stubs match proto/ ({len(FILES)} files)")
            return
        for name in FILES:
            with open(os.path.join(fresh, name), "rb") as src, open(os.path.join(OUT, name), "wb") as dst:
                dst.write(src.read())
        print(f"wrote {len(FILES)} files to {OUT}")


if __name__ == "__main__":
    main()
