# The Osiris core as a Python package. Called from the flake's overlay with
# python3Packages.callPackage, so every plugin and the service's
# withPackages environment share one interpreter.
{
  lib,
  buildPythonPackage,
  hatchling,
  pluggy,
  pydantic,
  click,
  aiohttp,
  prometheus-client,
  pyyaml,
  cryptography,
  rfc8785,
  jsonschema,
  jinja2,
  argon2-cffi,
  weasyprint,
  zstandard,
}:

buildPythonPackage {
  pname = "osiris-agent";
  version = "0.1.0";
  pyproject = true;

  # Only what the wheel is built from: editing tests or docs does not
  # change the derivation (and rebuild every appliance image).
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
    pluggy
    pydantic
    click
    aiohttp
    prometheus-client
    pyyaml
    # The evidence log: Ed25519 signatures, RFC 8785 canonical JSON,
    # Zstandard-compressed segments.
    cryptography
    rfc8785
    zstandard
    # Healing: runbook parameters are checked against their JSON Schema.
    jsonschema
    # The status page and the compliance report (HTML and, through
    # WeasyPrint with nixpkgs' Pango, PDF); argon2id for the page's accounts.
    jinja2
    argon2-cffi
    weasyprint
  ];

  # The unit tests need the lab and run in the uv workspace (CI); here we
  # check that the package and its dependencies import.
  pythonImportsCheck = [ "osiris" ];

  meta = {
    description = "Osiris compliance appliance agent: plugin manager, engine, state, CLI";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "osiris";
  };
}
