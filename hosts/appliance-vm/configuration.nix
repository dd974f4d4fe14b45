# A VM appliance: the smallest system that runs the agent, for demos and for
# trying a change before it goes into an image.
#   nix build .#nixosConfigurations.appliance-vm.config.system.build.vm
#   ./result/bin/run-osiris-vm-vm
# The flake adds overlays.default and the services.osiris module.
{ modulesPath, pkgs, ... }:
{
  # qemu-vm.nix provides disks and boot loader for a QEMU guest.
  imports = [ (modulesPath + "/virtualisation/qemu-vm.nix") ];

  networking.hostName = "osiris-vm";
  system.stateVersion = "26.05";

  services.osiris = {
    enable = true;
    plugins = [ pkgs.osirisPlugins.appliance-selfcheck ];
    settings = {
      site = {
        id = "demo-practice";
        name = "Demo Practice";
      };
      agent.workers = 8;
      # No Windows machines to reach from a demo VM. For a practice, add
      # pkgs.osirisPlugins.windows (and windows-baseline) to `plugins` and:
      #   targets = [ { name = "dc1"; kind = "windows"; role = "dc";
      #                 address = "dc1.practice.lan"; credential = "winrm-admin";
      #                 options.ca_file = "/etc/osiris/winrm-ca.pem"; } ];
      # The credential is referenced by name; its value comes from `credentials`.
      plugins.appliance-selfcheck.min_free_percent = 10;
    };
    # Write the real secret there (over SSH, agenix, sops-nix...); it is
    # never part of the image.
    credentials.winrm-admin = "/var/lib/osiris-secrets/winrm-admin";
  };

  # An empty root-only placeholder so the unit starts on first boot
  # (LoadCredential= fails on a missing file). No content: nothing secret
  # may end up in the store through tmpfiles rules either.
  systemd.tmpfiles.rules = [
    "d /var/lib/osiris-secrets 0700 root root - -"
    "f /var/lib/osiris-secrets/winrm-admin 0400 root root - -"
  ];

  # Demo VM only: root on the QEMU console, to run `osiris plugins`,
  # `curl 127.0.0.1:8780/health`... A real appliance has no console login.
  services.getty.autologinUser = "root";
  environment.systemPackages = [ pkgs.curl ];
}
