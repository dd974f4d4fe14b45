# The windows-baseline plugin: HIPAA-mapped Windows checks and runbooks.
# Its own Python distribution and derivation; listed in `plugins` in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  osiris-windows,
}:

buildPythonPackage {
  pname = "osiris-windows-baseline";
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
  # Checks and runbooks are data for the windows executor (plugin `windows`).
  # The module osiris_windows_baseline.lab holds lab emulations: test
  # equipment, imported only by osiris-lab, which is not a dependency here.
  dependencies = [
    osiris-agent
    osiris-windows
  ];

  pythonImportsCheck = [ "osiris_windows_baseline.plugin" ];

  passthru = {
    # The marker services.osiris.plugins checks: only packages that say they
    # are Osiris plugins can be listed there.
    osirisPlugin = true;
    # The name the plugin registers under, i.e. its settings.plugins.<name>.
    osirisPluginName = "windows-baseline";
  };

  meta = {
    description = "Osiris plugin: Windows HIPAA baseline checks, runbooks and default healing rules";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
