"""Generate the protobuf and gRPC modules from agent.proto when the package
is built (a wheel, an editable install, or the Nix derivation), with
grpcio-tools' bundled protoc. Generated code is never committed."""

from __future__ import annotations

from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "osiris_endpoint_proto"
GENERATED = ("agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py")


class ProtoBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        from grpc_tools import protoc

        src = Path(self.root) / "src"
        proto = src / PACKAGE / "agent.proto"
        include = Path(protoc.__file__).parent / "_proto"
        args = ["grpc_tools.protoc", f"-I{src}", f"-I{include}", f"--python_out={src}", f"--pyi_out={src}",
                f"--grpc_python_out={src}", str(proto)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        # The files are ignored by git, and so by hatchling's file selection:
        # name them explicitly so that a wheel carries them.
        for name in GENERATED:
            build_data["force_include"][str(src / PACKAGE / name)] = f"{PACKAGE}/{name}"
