# An Osiris plugin: its own Python distribution and its own derivation.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
}:

buildPythonPackage {
  pname = "osiris-evidence-local";
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
  dependencies = [ osiris-agent ];

  pythonImportsCheck = [ "osiris_evidence_local" ];

  passthru = {
    # The marker services.osiris.plugins checks: only packages that say they
    # are Osiris plugins can be listed there.
    osirisPlugin = true;
    # The name the plugin registers under, i.e. its settings.plugins.<name>.
    osirisPluginName = "evidence-local";
  };

  meta = {
    description = "Osiris plugin: write-once directory store for signed evidence bundles and checkpoints";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
