# Evaluate modules/osiris.nix with the real nixpkgs lib (lib.evalModules)
# and stand-ins for the NixOS options it sets and the packages it uses, and
# render osiris-agent.service as a unit file. nixpkgs' lib/ alone is the
# repository nix-community/nixpkgs.lib; it is not in this repository: pass
# its checkout (tools/check-nix.sh and tests/test_nixos_module.py take it
# from NIXPKGS_LIB and skip this without it).
#
#   nix-instantiate --store dummy:// --eval --strict --json tools/eval-module.nix \
#     --argstr nixpkgsLib /abs/path/to/nixpkgs.lib --arg host ./host.nix
#
# Prints { failedAssertions } when any assertion fails, else also
# { unit, serviceConfig, unitConfig, tmpfiles, warnings, settings }.
{
  nixpkgsLib, # absolute path of the checkout, as a string
  host ? { }, # a host's module: what it sets besides the defaults
}:
let
  lib = import (nixpkgsLib + "/lib");
  inherit (lib) mkOption types;

  # NixOS's unit option type (nixos/lib/systemd-unit-options.nix): lists
  # from several definitions are concatenated, anything else must agree,
  # so a second plain definition of Restart= is a conflict unless one side
  # has a lower priority (mkDefault).
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (def: lib.toList def.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  service = types.submodule {
    freeformType = types.lazyAttrsOf types.raw;
    options = {
      description = mkOption { type = types.str; default = ""; };
      environment = mkOption { type = types.attrsOf types.str; default = { }; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; };
      after = mkOption { type = types.listOf types.str; default = [ ]; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  # The NixOS options the module sets; the rest of the system is free-form.
  nixos = {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };
      systemd.services = mkOption { type = types.attrsOf service; default = { }; };
      systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
    };
    config._module.freeformType = types.lazyAttrsOf types.raw;
  };

  fakeDrv = name: extra: {
    type = "derivation";
    inherit name;
    outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
  } // extra;
  python = fakeDrv "python3" { withPackages = _: fakeDrv "python3-env" { }; };
  # pkgs.formats.json's value type (pkgs/pkgs-lib/formats.nix), and a
  # generate that names a store path without writing one.
  jsonValue = types.nullOr (
    types.oneOf [
      types.bool
      types.int
      types.float
      types.str
      types.path
      (types.attrsOf jsonValue)
      (types.listOf jsonValue)
    ]
  ) // { description = "JSON value"; };
  pkgs = {
    formats.json = _: {
      type = jsonValue;
      generate = name: _: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    };
    osiris-agent = fakeDrv "osiris-agent" { pythonModule = python; };
  };

  eval = lib.evalModules {
    modules = [
      nixos
      { _module.args.pkgs = pkgs; }
      ../modules/osiris.nix
      host
    ];
  };
  inherit (eval) config;
  unit = config.systemd.services.osiris-agent;

  # As NixOS writes a section: one line per list element, booleans as
  # true/false, names in attribute order.
  value = v: if v == true then "true" else if v == false then "false" else toString v;
  section =
    attrs:
    lib.concatStrings (
      lib.mapAttrsToList (k: v: lib.concatMapStrings (x: "${k}=${value x}\n") (lib.toList v)) attrs
    );
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
in
# As in NixOS, a failed assertion stops the evaluation of the system.
if failedAssertions != [ ] then
  { inherit failedAssertions; }
else
{
  inherit failedAssertions;
  inherit (config) warnings;
  inherit (config.services.osiris) settings;
  tmpfiles = config.systemd.tmpfiles.rules;
  firewall = lib.attrByPath [ "networking" "firewall" "allowedTCPPorts" ] [ ] config;
  inherit (unit) serviceConfig unitConfig;
  unit = ''
    [Unit]
    Description=${unit.description}
    ${section { After = unit.after; Wants = unit.wants; }}${section unit.unitConfig}
    [Service]
    ${lib.concatStrings (lib.mapAttrsToList (k: v: "Environment=\"${k}=${v}\"\n") unit.environment)}${section unit.serviceConfig}
    [Install]
    ${section { WantedBy = unit.wantedBy; }}'';
}
