# An Osiris plugin: its own Python distribution and its own derivation.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  aiohttp,
}:

buildPythonPackage {
  pname = "osiris-evidence-http";
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
  # The plugin imports the hook markers from the core.
  dependencies = [
    osiris-agent
    aiohttp
  ];

  pythonImportsCheck = [ "osiris_evidence_http" ];

  passthru = {
    # The marker services.osiris.plugins checks: only packages that say they
    # are Osiris plugins can be listed there.
    osirisPlugin = true;
    # The name the plugin registers under, i.e. its settings.plugins.<name>.
    osirisPluginName = "evidence-http";
  };

  meta = {
    description = "Osiris plugin: upload of signed evidence to the central service over HTTPS";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
