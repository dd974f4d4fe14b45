# The update-ab plugin: updates from TUF-signed releases (python-tuf's
# ngclient) written in one streamed pass into the inactive A/B slot, with
# systemd-boot's boot counting and rollback. Listed in `plugins` in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  tuf,
  urllib3,
  zstandard,
}:

buildPythonPackage {
  pname = "osiris-update-ab";
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
    tuf
    urllib3
    zstandard
  ];

  pythonImportsCheck = [ "osiris_update_ab" ];

  passthru = {
    # The marker services.osiris.plugins checks: only packages that say they
    # are Osiris plugins can be listed there.
    osirisPlugin = true;
    # The name the plugin registers under, i.e. its settings.plugins.<name>.
    osirisPluginName = "update-ab";
  };

  meta = {
    description = "Osiris plugin: updates from TUF-signed releases into the inactive A/B slot";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
