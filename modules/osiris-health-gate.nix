# osiris.healthGate: after each boot, `osiris health-gate` decides whether
# this boot is healthy (docs/image.md, "The health gate").
#
# Boot counting (Boot Loader Specification, systemd-boot): a new version's
# entry carries a tries counter. systemd-bless-boot.service, pulled in by
# its generator when the boot came from such an entry, marks it good once
# boot-complete.target is reached. osiris-health-gate.service is RequiredBy=
# and Before= that target, so a failing gate keeps the entry unblessed; its
# OnFailure= unit then reboots, but only while the boot is still a trial
# (systemd-bless-boot status: "indeterminate"). A blessed version whose gate
# fails later is not rebooted into a loop: the failure stays visible
# (systemctl --failed, the gate's verdict in the evidence log).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkEnableOption mkIf mkOption types;

  cfg = config.osiris.healthGate;
  osiris = config.services.osiris;
  agent = config.systemd.services.osiris-agent;
  configPath = "/etc/osiris/config.json";

  # Reads the boot's state as systemd-bless-boot sees it and succeeds only
  # for a trial boot; the unit's SuccessAction= is the reboot.
  whileTrial = pkgs.writeShellScript "osiris-health-gate-failed" ''
    state=$(${config.systemd.package}/lib/systemd/systemd-bless-boot status 2>&1) || true
    if [ "$state" = indeterminate ]; then
      echo "osiris health gate failed on a trial boot: rebooting (systemd-boot counts the try down)"
      exit 0
    fi
    echo "osiris health gate failed; this boot is '$state', not a trial: not rebooting" >&2
    exit 1
  '';
in
{
  options.osiris.healthGate = {
    enable = mkEnableOption ''
      the post-boot health gate (osiris-health-gate.service) before
      boot-complete.target. Needs {option}`services.osiris.enable`; the
      image module ({option}`osiris.image.enable`) turns it on
    '';

    timeout = mkOption {
      type = types.ints.positive;
      default = 30;
      description = ''
        Seconds every health check may take (they run at once): a check
        still running then fails, named (`osiris health-gate --timeout`).
      '';
    };

    rebootOnFailure = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Reboot when the gate fails while the boot is a trial (its entry's
        tries counter not yet blessed), so systemd-boot tries again or falls
        back to the last good version. Never reboots a blessed boot.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = osiris.enable;
        message = "osiris.healthGate.enable: expected services.osiris.enable = true (the gate asks the agent whether it runs).";
      }
    ];

    systemd.services.osiris-health-gate = {
      description = "Osiris post-boot health gate";
      wants = [ "osiris-agent.service" ];
      after = [ "osiris-agent.service" ];
      before = [ "boot-complete.target" ];
      requiredBy = [ "boot-complete.target" ];
      environment = agent.environment;
      unitConfig = {
        RequiresMountsFor = agent.unitConfig.RequiresMountsFor;
        OnFailure = lib.optional cfg.rebootOnFailure "osiris-health-gate-failed.service";
      };
      # The agent's sandbox: the gate reads what the agent writes and
      # appends its verdict to the same evidence log, as the same user.
      serviceConfig = import ./osiris-hardening.nix // {
        Type = "oneshot";
        RemainAfterExit = true;
        # %b: this boot's id, recorded with the verdict.
        ExecStart = "${osiris.finalPackage}/bin/osiris --config ${configPath} health-gate --timeout ${toString cfg.timeout} --boot-id %b";
        TimeoutStartSec = cfg.timeout + 30;
        # The verdict on the console too: one line per check, then PASSED/FAILED.
        StandardOutput = "journal+console";
        User = "osiris";
        Group = "osiris";
        DynamicUser = false;
        StateDirectory = "osiris";
        StateDirectoryMode = "0750";
        ReadWritePaths = agent.serviceConfig.ReadWritePaths;
        LoadCredential = agent.serviceConfig.LoadCredential;
      };
    };

    systemd.services.osiris-health-gate-failed = mkIf cfg.rebootOnFailure {
      description = "Reboot after a failed Osiris health gate, while the boot is a trial";
      unitConfig.SuccessAction = "reboot";
      # Without devices (PrivateDevices=), bless-boot cannot probe the ESP's
      # partition type; /boot is the image's ESP by construction.
      environment.SYSTEMD_RELAX_ESP_CHECKS = "1";
      # Reads EFI variables and the ESP (root-owned, umask 0077); writes nothing.
      serviceConfig = import ./osiris-hardening.nix // {
        Type = "oneshot";
        ExecStart = "${whileTrial}";
        PrivateNetwork = true;
        IPAddressDeny = "any";
        RestrictAddressFamilies = [ "AF_UNIX" ];
      };
    };
  };
}
