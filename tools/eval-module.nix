# Evaluate the Osiris NixOS modules (modules/osiris.nix, the health gate and
# the image module) with the real nixpkgs lib (lib.evalModules) and
# stand-ins for the NixOS options they set and the packages they use, and
# render their systemd services as unit files. nixpkgs' lib/ alone is the
# repository nix-community/nixpkgs.lib; it is not in this repository: pass
# its checkout (tools/check-nix.sh and tests/test_nixos_module.py take it
# from NIXPKGS_LIB and skip this without it).
#
#   nix-instantiate --store dummy:// --eval --strict --json tools/eval-module.nix \
#     --argstr nixpkgsLib /abs/path/to/nixpkgs.lib --arg host ./host.nix
#
# Prints { failedAssertions } when any assertion fails, else also
# { unit, units, serviceConfig, unitConfig, tmpfiles, warnings, settings, firewall, image }:
# `unit` is osiris-agent.service, `units` every service by name, `image`
# what the image module hands to nixpkgs (image.repart, the UKI, the
# initrd's repart and LUKS, file systems, kernel parameters).
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

  # Everything else the modules set, merged as NixOS merges its options:
  # attribute sets recursively, lists concatenated, anything else must
  # agree (mkDefault/mkForce honoured at every level).
  deep = lib.mkOptionType {
    name = "NixOS option stand-in";
    merge =
      loc: defs:
      let
        values = map (d: d.value) defs;
      in
      if lib.all (v: lib.isAttrs v && !lib.isDerivation v) values then
        (types.attrsOf deep).merge loc defs
      else if lib.all lib.isList values then
        lib.concatMap (d: d.value) defs
      else
        lib.mergeEqualOption loc defs;
  };
  freeform = types.submodule { freeformType = types.lazyAttrsOf deep; };
  freeformWith =
    options:
    types.submodule {
      freeformType = types.lazyAttrsOf deep;
      inherit options;
    };

  service = types.submodule {
    freeformType = types.lazyAttrsOf types.raw;
    options = {
      description = mkOption { type = types.str; default = ""; };
      environment = mkOption { type = types.attrsOf types.str; default = { }; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      requiredBy = mkOption { type = types.listOf types.str; default = [ ]; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; };
      requires = mkOption { type = types.listOf types.str; default = [ ]; };
      after = mkOption { type = types.listOf types.str; default = [ ]; };
      before = mkOption { type = types.listOf types.str; default = [ ]; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  fakeDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    }
    // extra;

  # The NixOS options the modules set. Typed where the module system's
  # merge or a default matters (units, assertions, the UKI's name); the rest
  # of the system is free-form.
  nixos =
    { config, ... }:
    {
      options = {
        assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
        warnings = mkOption { type = types.listOf types.str; default = [ ]; };
        systemd = mkOption {
          type = freeformWith {
            services = mkOption { type = types.attrsOf service; default = { }; };
            tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
            package = mkOption { type = types.package; default = fakeDrv "systemd" { }; };
          };
          default = { };
        };
        # nixos/modules/misc/version.nix and nixos/modules/system/boot/uki.nix:
        # the UKI's file name, as nixpkgs derives it.
        system = mkOption {
          type = freeformWith {
            image.id = mkOption { type = types.nullOr types.str; default = null; };
            image.version = mkOption { type = types.nullOr types.str; default = null; };
            boot.loader.ukiFile = mkOption { type = types.str; readOnly = true; };
          };
          default = { };
        };
        boot = mkOption {
          type = freeformWith {
            uki.name = mkOption { type = types.str; default = if config.system.image.id != null then config.system.image.id else "nixos"; };
            uki.version = mkOption { type = types.nullOr types.str; default = config.system.image.version; };
            uki.tries = mkOption { type = types.nullOr types.ints.unsigned; default = null; };
          };
          default = { };
        };
      };
      config = {
        _module.freeformType = types.lazyAttrsOf deep;
        system.boot.loader.ukiFile =
          let
            u = config.boot.uki;
          in
          u.name
          + lib.optionalString (u.version != null) "_${u.version}"
          + lib.optionalString (u.tries != null) "+${toString u.tries}"
          + ".efi";
        system.build.toplevel = fakeDrv "nixos-system-osiris" { };
        system.build.uki = fakeDrv "osiris-uki" { };
      };
    };

  python = fakeDrv "python3" { withPackages = _: fakeDrv "python3-env" { }; };
  # pkgs.formats.json's value type (pkgs/pkgs-lib/formats.nix), and a
  # generate that names a store path without writing one.
  jsonValue =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        (types.attrsOf jsonValue)
        (types.listOf jsonValue)
      ]
    )
    // {
      description = "JSON value";
    };
  pkgs = {
    formats.json = _: {
      type = jsonValue;
      generate = name: _: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    };
    osiris-agent = fakeDrv "osiris-agent" { pythonModule = python; };
    # Every plugin of the flake, as overlays.default adds them (hosts/ use them).
    osirisPlugins = lib.genAttrs [
      "appliance-selfcheck"
      "windows"
      "windows-baseline"
      "endpoints"
      "evidence-local"
      "evidence-http"
      "evidence-ots"
      "escalate-webhook"
      "escalate-email"
      "l2-llm"
      "update-ab"
    ] (name: fakeDrv "osiris-${name}" {
      pythonModule = python;
      passthru = {
        osirisPlugin = true;
        osirisPluginName = name;
      };
    });
    stdenv.hostPlatform = {
      linuxArch = "x86_64";
      efiArch = "x64";
    };
    writeText = name: _: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    writeShellScript = name: _: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    writeShellScriptBin = name: _: fakeDrv name { };
    writeShellApplication = { name, ... }: fakeDrv name { };
    coreutils = fakeDrv "coreutils" { };
    diffutils = fakeDrv "diffutils" { };
    gawk = fakeDrv "gawk" { };
    util-linux = fakeDrv "util-linux" { };
    systemd = fakeDrv "systemd" { };
  };

  eval = lib.evalModules {
    modules = [
      nixos
      { _module.args.pkgs = pkgs; }
      ../modules/osiris.nix
      ../modules/osiris-health-gate.nix
      ../modules/osiris-image.nix
      ../modules/osiris-update.nix
      host
    ];
  };
  inherit (eval) config;
  agent = config.systemd.services.osiris-agent or { };

  # As NixOS writes a section: one line per list element, booleans as
  # true/false, names in attribute order.
  value =
    v:
    if v == true then
      "true"
    else if v == false then
      "false"
    else
      toString v;
  section =
    attrs:
    lib.concatStrings (
      lib.mapAttrsToList (k: v: lib.concatMapStrings (x: "${k}=${value x}\n") (lib.toList v)) attrs
    );
  render = s: ''
    [Unit]
    Description=${s.description}
    ${
      section {
        After = s.after;
        Before = s.before;
        Wants = s.wants;
        Requires = s.requires;
      }
    }${section s.unitConfig}
    [Service]
    ${lib.concatStrings (lib.mapAttrsToList (k: v: "Environment=\"${k}=${v}\"\n") s.environment)}${section s.serviceConfig}
    [Install]
    ${
      section {
        WantedBy = s.wantedBy;
        RequiredBy = s.requiredBy;
      }
    }'';
  # A .path or .timer unit: its own section, then [Install].
  renderOther =
    kind: s:
    ''
      [Unit]
      Description=${s.description or ""}
      ${section (s.unitConfig or { })}
      [${kind}]
      ${section (s."${lib.toLower kind}Config" or { })}
      [Install]
      ${section { WantedBy = s.wantedBy or [ ]; }}'';
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  attr = path: lib.attrByPath path null config;
in
# As in NixOS, a failed assertion stops the evaluation of the system.
if failedAssertions != [ ] then
  { inherit failedAssertions; }
else
  {
    inherit failedAssertions;
    inherit (config) warnings;
    settings = if config.services.osiris.enable then config.services.osiris.settings else null;
    tmpfiles = config.systemd.tmpfiles.rules;
    firewall =
      if config.services.osiris.enable then
        lib.attrByPath [ "networking" "firewall" "allowedTCPPorts" ] [ ] config
      else
        [ ];
    serviceConfig = agent.serviceConfig or null;
    unitConfig = agent.unitConfig or null;
    unit = if config.systemd.services ? osiris-agent then render agent else null;
    units = lib.mapAttrs (_: render) config.systemd.services;
    # .path and .timer units by name (osiris-update's triggers).
    pathUnits = lib.mapAttrs (_: renderOther "Path") (config.systemd.paths or { });
    timerUnits = lib.mapAttrs (_: renderOther "Timer") (config.systemd.timers or { });
    image = if !config.osiris.image.enable then null else {
      uki = {
        inherit (config.boot.uki) name version tries;
        file = config.system.boot.loader.ukiFile;
      };
      repart = attr [ "image" "repart" ];
      initrdRepart = attr [ "boot" "initrd" "systemd" "repart" ];
      dataPartitions = attr [ "systemd" "repart" "partitions" ];
      luks = attr [ "boot" "initrd" "luks" "devices" ];
      fileSystems = attr [ "fileSystems" ];
      kernelParams = attr [ "boot" "kernelParams" ];
      osRelease = config.system.image;
    };
    # iso/installer.nix, when the host imports it.
    installer = if config ? osiris && config.osiris ? installer then {
      isoContents = attr [ "isoImage" "contents" ];
      services = lib.attrNames config.systemd.services;
    } else null;
  }
