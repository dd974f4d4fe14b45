# services.osiris: the Osiris compliance agent as a NixOS service.
#
# Usable outside this flake: it refers to packages only through `pkgs`, so a
# host applies the flake's `overlays.default` (which adds pkgs.osiris-agent
# and pkgs.osirisPlugins.<name>) or sets services.osiris.package itself.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkEnableOption
    mkIf
    mkOption
    mkPackageOption
    types
    ;

  cfg = config.services.osiris;
  settingsFormat = pkgs.formats.json { };

  # Same rule as the agent's config model (osiris/config.py, _NAME), so a bad
  # name fails at evaluation instead of at start-up on the appliance.
  namePattern = "[A-Za-z0-9][A-Za-z0-9._-]{0,62}";
  defaultStateDir = "/var/lib/osiris";
  configPath = "/etc/osiris/config.json";

  configFile = settingsFormat.generate "osiris.json" cfg.settings;

  # One interpreter with the core and every enabled plugin, so pluggy finds
  # the plugins through their `osiris` entry points and nothing else.
  env = cfg.package.pythonModule.withPackages (_: [ cfg.package ] ++ cfg.plugins);

  # A plugin is a Python package that carries the marker attribute; checking
  # it catches `plugins = [ pkgs.python3Packages.requests ]` at evaluation.
  pluginType =
    types.addCheck types.package (p: p.passthru.osirisPlugin or false)
    // {
      name = "osiris-plugin";
      description = "Osiris plugin package (passthru.osirisPlugin = true)";
    };

  credentialPaths = lib.mapAttrsToList (name: path: { inherit name path; }) cfg.credentials;

  # Every path the settings name that the agent writes. Under
  # ProtectSystem=strict nothing else is writable, so each becomes a
  # ReadWritePaths= entry. `own`: the agent's own directory, created by
  # tmpfiles (with `mode`) and mounted before the agent starts. Otherwise the
  # path is somebody else's (a sink's mount point, a key file): writable if
  # it exists ("-" prefix), and its absence is that plugin's error, not a
  # failed start of the whole agent.
  setting = path: default: lib.attrByPath path default cfg.settings;
  writablePaths = lib.filter (w: w.path != null) (
    [
      {
        option = "settings.state_dir";
        path = if cfg.settings.state_dir != defaultStateDir then cfg.settings.state_dir else null;
        own = true;
        mode = "0750";
      }
      {
        # The evidence log (docs/evidence.md): 0600 files in a 0700 directory.
        option = "settings.evidence.directory";
        path = setting [ "evidence" "directory" ] null;
        own = true;
        mode = "0700";
      }
      {
        # evidence-local's store: a mount point, created only with `create = true`.
        option = "settings.plugins.evidence-local.path";
        path = setting [ "plugins" "evidence-local" "path" ] null;
        own = setting [ "plugins" "evidence-local" "create" ] false == true;
        mode = "0750";
      }
    ]
    # The permissions runbook of appliance-selfcheck corrects these files' modes.
    ++ lib.imap0 (i: path: {
      option = "settings.plugins.appliance-selfcheck.key_paths.${toString i}";
      inherit path;
      own = false;
    }) (setting [ "plugins" "appliance-selfcheck" "key_paths" ] [ ])
  );
  ownPaths = map (w: w.path) (lib.filter (w: w.own) writablePaths);
  # One directive line holds a space-separated list: no whitespace in a path.
  usablePath =
    p:
    builtins.isString p
    && builtins.match "/[^[:space:]]*" p != null
    && !(lib.hasPrefix "${builtins.storeDir}/" p);
  # A Nix path literal is shown, not copied into the store.
  shown = p: if builtins.isPath p then toString p else builtins.toJSON p;
in
{
  options.services.osiris = {
    enable = mkEnableOption "the Osiris compliance agent (osiris-agent.service)";

    package = mkPackageOption pkgs "osiris-agent" {
      extraDescription = ''
        Provided by the Osiris flake's `overlays.default`. Must be a Python
        package (it needs `pythonModule`), not a wrapped application.
      '';
    };

    plugins = mkOption {
      type = types.listOf pluginType;
      default = [ ];
      example = lib.literalExpression "[ pkgs.osirisPlugins.appliance-selfcheck ]";
      description = ''
        Osiris plugins to install into the agent's Python environment. Each
        is a Python package built against the same interpreter as
        {option}`services.osiris.package` that sets the marker attribute
        `passthru.osirisPlugin = true` (and `passthru.osirisPluginName`); the
        marker keeps arbitrary packages out of this list. A plugin's settings
        go under `settings.plugins.<name>`.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        Agent configuration, written as JSON to `${configPath}`. Any key the
        agent understands may be set (see docs/nixos.md); the agent rejects
        unknown keys at start-up. This file lands in the world-readable Nix
        store: reference secrets by name (e.g. `credential = "winrm-admin"`)
        and provide them through {option}`services.osiris.credentials`.
      '';
      example = lib.literalExpression ''
        {
          site = { id = "demo-practice"; name = "Demo Practice"; };
          targets = [
            { name = "dc1"; kind = "windows"; role = "dc";
              address = "dc1.practice.lan"; credential = "winrm-admin"; }
          ];
          plugins.appliance-selfcheck.min_free_percent = 10;
        }
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          site.id = mkOption {
            type = types.strMatching namePattern;
            example = "demo-practice";
            description = "Stable identifier of the practice this appliance looks after.";
          };
          state_dir = mkOption {
            type = types.str;
            default = defaultStateDir;
            description = ''
              Where the agent keeps its SQLite state and evidence log. The
              default is systemd's StateDirectory; another path is made
              writable (ReadWritePaths=) and created by tmpfiles, as are
              `evidence.directory` and the other paths the agent writes
              that the settings name (see docs/nixos.md).
            '';
          };
          agent.http = {
            listen = mkOption {
              type = types.str;
              default = "127.0.0.1";
              description = "Address of the local HTTP API (health, metrics, status page).";
            };
            port = mkOption {
              type = types.port;
              default = 8780;
              description = "Port of the local HTTP API.";
            };
          };
        };
      };
    };

    credentials = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = {
        winrm-admin = "/run/keys/osiris/winrm-admin";
      };
      description = ''
        Secrets by name: name -> absolute path of a file OUTSIDE the Nix store
        (deployed by agenix, sops-nix, or by hand). systemd reads each with
        `LoadCredential=name:path` as root at start and hands it to the
        agent, which reads `$CREDENTIALS_DIRECTORY/<name>`; the file itself
        can stay root-only. Use a string, not a Nix path literal: a path
        literal is copied into the store, where anyone can read it.
      '';
    };

    finalPackage = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      description = ''
        The Python environment with the agent and every plugin: what
        `osiris-agent.service` runs, and what other units that run `osiris`
        (the health gate, modules/osiris-health-gate.nix) must run too.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open {option}`settings.agent.http.port` in the firewall.";
    };

    checkPacks = mkOption {
      type = types.listOf types.path;
      default = [ ];
      example = lib.literalExpression "[ ./check-packs ./printers.yaml ]";
      description = ''
        The site's check packs for the windows-baseline plugin
        (docs/check-packs.md): YAML files, or directories whose `*.yaml`
        files are packs. A path literal is copied into the Nix store (packs
        hold no secrets), so a changed pack changes the config and restarts
        the agent. Written to `settings.plugins.windows-baseline.packs`;
        needs that plugin in {option}`services.osiris.plugins`.
      '';
    };

    endpoints.openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the endpoint agents' ports in the firewall: the mutual-TLS stream
        port and the enrolment port of the endpoints plugin
        (`settings.plugins.endpoints.port` and `.enrol_port`, 50051 and 50052
        by default; see docs/endpoints.md).
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions =
      map (c: {
        assertion = !(builtins.isPath c.path) && !(lib.hasPrefix "${builtins.storeDir}/" (toString c.path));
        message = ''
          services.osiris.credentials.${c.name} = ${toString c.path}: secrets must never be in
          the Nix store (it is world-readable and copied to every machine that builds the
          system), and a Nix path literal ends up there. Give an absolute path as a string,
          to a file deployed outside the store.
        '';
      }) credentialPaths
      ++ map (c: {
        assertion = builtins.match namePattern c.name != null;
        message = "services.osiris.credentials: name '${c.name}' must match ${namePattern}.";
      }) credentialPaths
      ++ map (w: {
        assertion = usablePath w.path;
        message = ''
          services.osiris.${w.option} = ${shown w.path}: expected an absolute path
          outside the Nix store, without whitespace. The agent writes there, and its sandbox
          (ProtectSystem=strict) makes only such paths writable (ReadWritePaths=).
        '';
      }) writablePaths
      ++ [
        {
          assertion =
            cfg.checkPacks == [ ]
            || lib.any (p: (p.passthru.osirisPluginName or "") == "windows-baseline") cfg.plugins;
          message = "services.osiris.checkPacks: the windows-baseline plugin, which loads them, is not in services.osiris.plugins.";
        }
      ]
      ++ map (p: {
        # withPackages would silently mix two interpreters' site-packages.
        assertion = toString (p.pythonModule or "") == toString cfg.package.pythonModule;
        message = "services.osiris.plugins: ${p.name} is not built for ${cfg.package.pythonModule.name}.";
      }) cfg.plugins;

    warnings =
      lib.optional (cfg.openFirewall && lib.hasPrefix "127." cfg.settings.agent.http.listen) ''
        services.osiris.openFirewall is set but the HTTP API listens on
        ${cfg.settings.agent.http.listen}; set settings.agent.http.listen too.
      ''
      ++ lib.optional (cfg.endpoints.openFirewall && setting [ "plugins" "endpoints" "enabled" ] false != true) ''
        services.osiris.endpoints.openFirewall is set but the endpoints plugin is not
        enabled; set settings.plugins.endpoints.enabled = true (and add the plugin).
      '';

    # "${p}" copies a path literal into the store; a string path stays as given.
    services.osiris.settings.plugins.windows-baseline.packs = mkIf (cfg.checkPacks != [ ]) (
      map (p: "${p}") cfg.checkPacks
    );

    users.users.osiris = {
      isSystemUser = true;
      group = "osiris";
      home = cfg.settings.state_dir;
      description = "Osiris compliance agent";
    };
    users.groups.osiris = { };

    # No secrets in here by construction (see `settings`), so world-readable is fine.
    environment.etc."osiris/config.json".source = configFile;

    # The same environment as the service, so `osiris plugins`, `osiris
    # report`... see the same plugins. OSIRIS_CONFIG points them at the file.
    services.osiris.finalPackage = env;
    environment.systemPackages = [ env ];
    environment.variables.OSIRIS_CONFIG = configPath;

    networking.firewall.allowedTCPPorts =
      lib.optional cfg.openFirewall cfg.settings.agent.http.port
      ++ lib.optionals cfg.endpoints.openFirewall [
        (setting [ "plugins" "endpoints" "port" ] 50051)
        (setting [ "plugins" "endpoints" "enrol_port" ] 50052)
      ];

    systemd.tmpfiles.rules = map (w: "d ${w.path} ${w.mode} osiris osiris - -") (
      lib.filter (w: w.own) writablePaths
    );

    systemd.services.osiris-agent = {
      description = "Osiris compliance agent";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # /etc/osiris/config.json is a symlink: without this, a new config
      # would only be read at the next reboot.
      restartTriggers = [ configFile ];

      environment = {
        OSIRIS_CONFIG = configPath;
        OSIRIS_STATE_DIR = cfg.settings.state_dir;
      };

      # The agent's own directories (on a data partition, say) are mounted
      # before it starts.
      unitConfig.RequiresMountsFor = ownPaths;

      serviceConfig = import ./osiris-hardening.nix // {
        Type = "notify";
        # Only the agent itself may send READY/WATCHDOG/STATUS.
        NotifyAccess = "main";
        # Defaults a host may tune (systemd.services.osiris-agent.serviceConfig).
        WatchdogSec = lib.mkDefault "60s";
        Restart = lib.mkDefault "on-failure";
        RestartSec = lib.mkDefault "5s";
        # A socket per host being observed (plugins.windows.max_concurrency,
        # up to 1024), HTTP API clients, sinks and SQLite files: far above
        # the soft limit of 1024 systemd gives by default.
        LimitNOFILE = lib.mkDefault 65536;
        # --config is an option of the `osiris` group, so it comes before `run`.
        ExecStart = "${env}/bin/osiris --config ${configPath} run";

        User = "osiris";
        Group = "osiris";
        # A fixed user, not DynamicUser: the state and evidence log must keep
        # one owner across reinstalls and A/B slot switches.
        DynamicUser = false;
        StateDirectory = "osiris";
        StateDirectoryMode = "0750";
        ReadWritePaths = map (w: if w.own then w.path else "-${w.path}") writablePaths;

        LoadCredential = map (c: "${c.name}:${toString c.path}") credentialPaths;
      };
    };
  };
}
