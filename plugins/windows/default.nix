# The windows plugin: the WinRM executor (pywinrm) and core Windows checks.
# Its own Python distribution and derivation; listed in `plugins` in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  pywinrm,
  pyspnego,
  requests,
  pydantic,
}:

buildPythonPackage {
  pname = "osiris-windows";
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
  # pywinrm is the WinRM client; pyspnego gives it NTLM with message
  # encryption (through requests-ntlm, a dependency of pywinrm).
  dependencies = [
    osiris-agent
    pywinrm
    pyspnego
    requests
    pydantic
  ];

  pythonImportsCheck = [ "osiris_windows" ];

  passthru = {
    # The marker services.osiris.plugins checks: only packages that say they
    # are Osiris plugins can be listed there.
    osirisPlugin = true;
    # The name the plugin registers under, i.e. its settings.plugins.<name>.
    osirisPluginName = "windows";
  };

  meta = {
    description = "Osiris plugin: windows executor over WinRM (one batched PowerShell script per host) and core checks";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
