# The endpoints plugin: the appliance side of endpoint agents (its own CA,
# one-time enrolment tokens, mutual-TLS gRPC streams with acknowledged
# delivery). Its own Python distribution and derivation; listed in
# `plugins` in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  osiris-endpoint-proto,
  grpcio,
  protobuf,
  cryptography,
  pydantic,
  click,
}:

buildPythonPackage {
  pname = "osiris-endpoints";
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
    osiris-agent
    osiris-endpoint-proto
    grpcio
    protobuf
    cryptography
    pydantic
    click
  ];

  pythonImportsCheck = [ "osiris_endpoints" ];

  passthru = {
    osirisPlugin = true;
    osirisPluginName = "endpoints";
  };

  meta = {
    description = "Osiris plugin: endpoint agents over mutual-TLS gRPC with acknowledged delivery";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
