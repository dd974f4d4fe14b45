# osiris-release: the MSP's release command (docs/updates.md). It signs a
# static TUF repository (python-tuf's Metadata API) that any HTTPS server
# serves to the appliances' update-ab plugin.
{
  lib,
  buildPythonPackage,
  hatchling,
  tuf,
  securesystemslib,
  cryptography,
  click,
  zstandard,
}:

buildPythonPackage {
  pname = "osiris-release";
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
    tuf
    securesystemslib
    cryptography
    click
    zstandard
  ];

  pythonImportsCheck = [ "osiris_release" ];

  meta = {
    description = "Osiris releases: a TUF repository of appliance releases as plain files";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "osiris-release";
  };
}
