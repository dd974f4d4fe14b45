# The escalate-email plugin: L3 escalation by e-mail (SMTP, STARTTLS).
# Added to the flake's `plugins` set in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
}:

buildPythonPackage {
  pname = "osiris-escalate-email";
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
  # Runtime: the standard library (smtplib) and the core.
  dependencies = [ osiris-agent ];

  pythonImportsCheck = [
    "osiris_escalate_email"
    "osiris_escalate_email.plugin"
  ];

  passthru = {
    osirisPlugin = true;
    osirisPluginName = "escalate-email";
  };

  meta = {
    description = "Osiris plugin: L3 escalation by e-mail over SMTP with STARTTLS";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
