# An Osiris plugin: its own Python distribution and its own derivation.
# Copy this file for a new plugin, then add one line to `plugins` in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
}:

buildPythonPackage {
  pname = "osiris-appliance-selfcheck";
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

  pythonImportsCheck = [ "osiris_appliance_selfcheck" ];

  passthru = {
    # The marker services.osiris.plugins checks: only packages that say they
    # are Osiris plugins can be listed there.
    osirisPlugin = true;
    # The name the plugin registers under, i.e. its settings.plugins.<name>.
    osirisPluginName = "appliance-selfcheck";
  };

  meta = {
    description = "Osiris plugin: checks the appliance itself (disk, clock, state store)";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
