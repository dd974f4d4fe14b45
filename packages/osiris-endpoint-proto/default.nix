# The endpoint agent protocol (osiris.agent.v1): agent.proto, and the Python
# modules protoc generates from it while the wheel is built (hatch_build.py,
# grpcio-tools' protoc). Shared by the endpoints plugin and osiris-endpoint.
{
  lib,
  buildPythonPackage,
  hatchling,
  grpcio-tools,
  grpcio,
  protobuf,
}:

buildPythonPackage {
  pname = "osiris-endpoint-proto";
  version = "0.1.0";
  pyproject = true;

  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./pyproject.toml
      ./hatch_build.py
      ./src/osiris_endpoint_proto/__init__.py
      ./src/osiris_endpoint_proto/agent.proto
    ];
  };

  build-system = [
    hatchling
    grpcio-tools
  ];
  dependencies = [
    grpcio
    protobuf
  ];

  pythonImportsCheck = [ "osiris_endpoint_proto" ];

  meta = {
    description = "Osiris endpoint agent protocol: the proto and the gRPC code generated from it at build time";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
