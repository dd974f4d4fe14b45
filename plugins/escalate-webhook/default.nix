# The escalate-webhook plugin: L3 escalation as a signed JSON POST.
# Added to the flake's `plugins` set in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  aiohttp,
}:

buildPythonPackage {
  pname = "osiris-escalate-webhook";
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
    aiohttp
  ];

  pythonImportsCheck = [
    "osiris_escalate_webhook"
    "osiris_escalate_webhook.plugin"
  ];

  passthru = {
    osirisPlugin = true;
    osirisPluginName = "escalate-webhook";
  };

  meta = {
    description = "Osiris plugin: L3 escalation as a JSON POST signed with HMAC-SHA256";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
