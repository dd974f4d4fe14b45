# osiris-endpoint: the endpoint agent (meant for Windows; built here so the
# lab and tests run the same code on Linux against emulated hosts).
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-endpoint-proto,
  grpcio,
  protobuf,
  cryptography,
  click,
}:

buildPythonPackage {
  pname = "osiris-endpoint";
  version = "0.1.0";
  pyproject = true;

  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./pyproject.toml
      ./src
      (lib.fileset.maybeMissing ./README.md)
    ];
  };

  build-system = [ hatchling ];
  dependencies = [
    osiris-endpoint-proto
    grpcio
    protobuf
    cryptography
    click
  ];

  pythonImportsCheck = [ "osiris_endpoint" ];

  meta = {
    description = "Osiris endpoint agent: enrolment, durable queue, mutual-TLS gRPC stream to the appliance";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "osiris-endpoint";
  };
}
