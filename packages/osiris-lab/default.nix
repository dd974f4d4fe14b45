# osiris-lab: the test estate (emulated Windows hosts speaking WS-Management).
# Test equipment, not part of the appliance image: no plugin or module
# depends on it; tests and demos do.
{
  lib,
  buildPythonPackage,
  hatchling,
  aiohttp,
  cryptography,
  pyspnego,
  osiris-endpoint,
}:

buildPythonPackage {
  pname = "osiris-lab";
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
    aiohttp
    cryptography
    pyspnego
    # Simulated endpoint agents are the real endpoint agent.
    osiris-endpoint
  ];

  pythonImportsCheck = [ "osiris_lab" ];

  meta = {
    description = "Osiris lab: emulated Windows hosts over real WinRM for tests, benchmarks and demos";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "osiris-lab";
  };
}
