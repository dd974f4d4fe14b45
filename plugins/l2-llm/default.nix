# The l2-llm plugin: an L2 planner over an OpenAI-compatible chat API.
# Added to the flake's `plugins` set in flake.nix.
{
  lib,
  buildPythonPackage,
  hatchling,
  osiris-agent,
  aiohttp,
  jsonschema,
}:

buildPythonPackage {
  pname = "osiris-l2-llm";
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
    jsonschema
  ];

  pythonImportsCheck = [
    "osiris_l2_llm"
    "osiris_l2_llm.plugin"
  ];

  passthru = {
    osirisPlugin = true;
    osirisPluginName = "l2-llm";
  };

  meta = {
    description = "Osiris plugin: L2 planner choosing one candidate runbook through an OpenAI-compatible chat API";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
  };
}
