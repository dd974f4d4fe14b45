# An Osiris plugin: its own Python distribution and its own derivation.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  opentimestamps,
  bitcoinlib,
  click,
}:

buildPythonPackage {
  pname = "osiris-evidence-ots";
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
    opentimestamps
    bitcoinlib
    click
  ];

  pythonImportsCheck = [ "osiris_evidence_ots" ];

  passthru = {
    # The marker services.osiris.plugins checks: only packages that say they
    # are Osiris plugins can be listed there.
    osirisPlugin = true;
    # The name the plugin registers under, i.e. its settings.plugins.<name>.
    osirisPluginName = "evidence-ots";
  };

  meta = {
    description = "Osiris plugin: OpenTimestamps anchoring of evidence checkpoints";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
