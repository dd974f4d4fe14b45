# osiris.update: the appliance updates itself from TUF-signed releases
# (docs/updates.md) with a privilege split.
#
# The agent stays in its sandbox (unprivileged, no devices). It asks for a
# check or an install by writing <stateDir>/request/request.json (the one
# directory there it may write; its update-ab backend asks for a check every
# checkInterval); osiris-update.path sees the file and starts
# osiris-update.service, which consumes it. That unit runs as root, alone: it fetches and verifies the release, writes the inactive
# slot of the disk and the new UKI on the ESP (the only device and the only
# paths it may write), and appends each step to <stateDir>/journal.jsonl,
# which the agent turns into signed evidence. It has no capability at all:
# root owns the disk's device node and the ESP, so none is needed.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkEnableOption mkIf mkOption types;

  cfg = config.osiris.update;
  osiris = config.services.osiris;
  imageOn = config.osiris.image.enable or false;

  stateDir = "/var/lib/osiris-update";
  requestDir = "${stateDir}/request";
  espDir = "/boot";
  settingsPath = "/etc/osiris/update.json";

  windowPattern = "([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]";
  hardwarePattern = "[a-z0-9][a-z0-9._-]{0,62}";

  # The update-ab plugin's settings: the root unit reads this file, the
  # agent's backend the same section of its config (plus runner = systemd).
  pluginSettings = {
    repository = cfg.repositoryUrl;
    # A root.json holds public keys only: it may be in the store.
    trusted_root = if cfg.trustedRoot == null then null else "${cfg.trustedRoot}";
    hardware = cfg.hardware;
    disk = cfg.disk;
    esp = espDir;
    state_dir = stateDir;
    check_interval = cfg.checkInterval;
    reboot_window = cfg.rebootWindow;
    tries = cfg.tries;
    runner = "systemd";
  };
  settingsFile = pkgs.writeText "osiris-update.json" (builtins.toJSON pluginSettings);

  # The device classes of an appliance's internal disk when no disk is named:
  # SATA (sd), NVMe (blkext), virtio (virtblk), eMMC (mmc).
  deviceAllow =
    if cfg.disk != null then
      [ "${cfg.disk} rw" ]
    else
      map (c: "block-${c} rw") [
        "sd"
        "blkext"
        "virtblk"
        "mmc"
      ];
in
{
  options.osiris.update = {
    enable = mkEnableOption ''
      updates from TUF-signed releases into the inactive A/B slot
      (osiris-update.service and .path; the update-ab plugin in the
      agent). Needs {option}`services.osiris.enable` and
      {option}`osiris.image.enable`
    '';

    repositoryUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://updates.example-msp.com/osiris/";
      description = "The release repository (TUF metadata and targets), over HTTPS.";
    };

    trustedRoot = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./keys/root.json";
      description = ''
        The repository's trusted root metadata (root.json), pinned in the
        image: the client trusts nothing else at first. It holds public keys
        only, so it is copied into the Nix store.
      '';
    };

    hardware = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "hp-t640";
      description = "The hardware model: only releases for it are installed.";
    };

    disk = mkOption {
      type = types.nullOr types.str;
      default = config.osiris.image.disk or null;
      defaultText = lib.literalExpression "config.osiris.image.disk";
      example = "/dev/disk/by-path/pci-0000:00:11.0-ata-1";
      description = ''
        The appliance's disk: the only device osiris-update.service may
        open (DeviceAllow=). null: the disk of the booted slot, and the unit
        may open internal disks of any kind (sd, nvme, virtio, mmc).
      '';
    };

    checkInterval = mkOption {
      type = types.ints.positive;
      default = 6 * 3600;
      description = "Seconds between the agent's checks for a newer release; at least 300.";
    };

    rebootWindow = mkOption {
      type = types.nullOr types.str;
      default = "02:00-04:00";
      example = "22:00-23:30";
      description = ''
        The daily maintenance window (local time, HH:MM-HH:MM) the reboot
        into a new version is scheduled in. null: never reboot by itself
        (`osiris update apply --reboot` or a person's reboot boots it).
      '';
    };

    tries = mkOption {
      type = types.ints.positive;
      default = config.osiris.image.tries or 3;
      defaultText = lib.literalExpression "config.osiris.image.tries";
      description = "Boots a new version gets before systemd-boot falls back (its UKI's +N counter).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = osiris.enable;
        message = "osiris.update.enable: expected services.osiris.enable = true (the agent asks for updates and records them as evidence).";
      }
      {
        assertion = imageOn;
        message = "osiris.update.enable: expected osiris.image.enable = true (an update writes the image's inactive A/B slot).";
      }
      {
        assertion = cfg.repositoryUrl != null && lib.hasPrefix "https://" cfg.repositoryUrl;
        message = "osiris.update.repositoryUrl = ${builtins.toJSON cfg.repositoryUrl}: expected an https:// URL of the release repository.";
      }
      {
        assertion = cfg.trustedRoot != null;
        message = "osiris.update.trustedRoot: expected the path of the repository's root.json (pinned in the image; public keys only).";
      }
      {
        assertion = cfg.hardware != null && builtins.match hardwarePattern cfg.hardware != null;
        message = "osiris.update.hardware = ${builtins.toJSON cfg.hardware}: expected the hardware model releases are made for, matching ${hardwarePattern}.";
      }
      {
        assertion = cfg.rebootWindow == null || builtins.match windowPattern cfg.rebootWindow != null;
        message = "osiris.update.rebootWindow = ${builtins.toJSON cfg.rebootWindow}: expected HH:MM-HH:MM (local time, e.g. \"02:00-04:00\") or null.";
      }
      {
        assertion = cfg.checkInterval >= 300;
        message = "osiris.update.checkInterval = ${toString cfg.checkInterval}: expected at least 300 seconds.";
      }
      {
        assertion = cfg.disk == null || builtins.match "/dev/[^[:space:]]+" cfg.disk != null;
        message = "osiris.update.disk = ${builtins.toJSON cfg.disk}: expected a /dev path without whitespace, or null.";
      }
    ];

    services.osiris.plugins = [ pkgs.osirisPlugins.update-ab ];
    services.osiris.settings.plugins.update-ab = pluginSettings;
    environment.etc."osiris/update.json".source = settingsFile;

    # The state is public (versions, TUF metadata, the journal): 0755, so
    # the agent reads it. The request directory: the agent writes (group
    # osiris), root consumes (owner); the agent makes request.json 0644.
    systemd.tmpfiles.rules = [
      "d ${stateDir} 0755 root root - -"
      "d ${requestDir} 0770 root osiris - -"
    ];
    # "-": a missing directory must not keep the agent from starting.
    systemd.services.osiris-agent.serviceConfig.ReadWritePaths = [ "-${requestDir}" ];

    systemd.services.osiris-update = {
      description = "Osiris update: fetch, verify and install a release into the inactive slot";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      unitConfig.RequiresMountsFor = [
        stateDir
        espDir
      ];
      serviceConfig = {
        Type = "oneshot";
        # The default action: do what request.json asks, and remove it.
        ExecStart = "${osiris.finalPackage}/bin/osiris-update-install --settings ${settingsPath} request";
        # The agent reads status.json and journal.jsonl: 0644.
        UMask = "0022";
        # Below the agent and the practice's work.
        Nice = 10;
        IOSchedulingClass = "best-effort";
        IOSchedulingPriority = 7;

        # Root, with no capability: root owns the disk's node and the ESP.
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;

        # Writable: its state and the ESP; the disk is the only device.
        ProtectSystem = "strict";
        ReadWritePaths = [
          stateDir
          espDir
        ];
        ProtectHome = true;
        PrivateTmp = true;
        DevicePolicy = "closed";
        DeviceAllow = deviceAllow;
        PrivateMounts = true;
        RemoveIPC = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectHostname = true;
        ProtectClock = true;
        RestrictNamespaces = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        KeyringMode = "private";

        # Network to fetch only: outgoing connections, nothing bound (no
        # AF_NETLINK: getaddrinfo needs it only for AI_ADDRCONFIG).
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        SocketBindDeny = "any";

        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        SystemCallErrorNumber = "EPERM";
      };
    };

    # The agent's request (osiris update check|apply, or its periodic check)
    # starts the unit while the file exists; the runner consumes it first.
    systemd.paths.osiris-update = {
      description = "Osiris update: the agent's request";
      wantedBy = [ "multi-user.target" ];
      pathConfig = {
        PathExists = "${requestDir}/request.json";
        Unit = "osiris-update.service";
      };
    };
  };
}
