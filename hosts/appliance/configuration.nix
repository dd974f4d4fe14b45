# The physical appliance: an HP t640 class thin client (AMD Ryzen Embedded
# R1505G, UEFI, one internal M.2 SATA or NVMe SSD, Realtek gigabit
# Ethernet, a TPM 2.0) running the appliance image (docs/image.md).
#
#   nix build .#appliance-image    # the raw disk image (system.build.image)
#   nix build .#installer-iso      # a USB stick that writes it to the internal SSD
#
# The flake adds overlays.default and nixosModules.appliance (services.osiris,
# osiris.image, osiris.healthGate). An MSP's fleet flake imports this file and
# sets the practice: services.osiris.settings (site, targets), credentials,
# SSH keys, and osiris.image.version per release.
{ lib, pkgs, ... }:
{
  system.stateVersion = "26.05";
  networking.hostName = lib.mkDefault "osiris";

  osiris.image = {
    enable = true;
    version = lib.mkDefault "0.1.0";
  };

  # Hardware of the t640 class; the kernel finds the rest.
  boot.initrd.availableKernelModules = [
    "ahci"
    "nvme"
    "xhci_pci"
    "usb_storage"
    "sd_mod"
    "sdhci_pci"
    "tpm_crb"
    "tpm_tis"
  ];
  hardware.cpu.amd.updateMicrocode = true;
  hardware.enableRedistributableFirmware = true;
  boot.kernelParams = [ "console=tty0" ];

  # An appliance: no Nix on the box, no mutable users, no password logins.
  nix.enable = false;
  users.mutableUsers = false;
  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };
  # The MSP's key goes here, e.g. users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 ..." ];

  networking.useNetworkd = true;
  systemd.network.networks."10-ethernet" = {
    matchConfig.Type = "ether";
    networkConfig.DHCP = "yes";
  };
  services.timesyncd.enable = true;

  services.osiris = {
    enable = true;
    plugins = with pkgs.osirisPlugins; [
      appliance-selfcheck
      windows
      windows-baseline
    ];
    settings = {
      # Placeholders an MSP replaces for the practice (docs/nixos.md).
      site.id = lib.mkDefault "unconfigured";
      targets = lib.mkDefault [ ];
      plugins.appliance-selfcheck.min_free_percent = 10;
    };
  };
}
