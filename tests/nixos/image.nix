# The appliance image boots as built (docs/image.md): systemd-boot starts
# the UKI osiris_1+3.efi, its store comes from slot A (/usr, read-only), /var
# is the data partition systemd-repart created on first boot, LUKS2 unlocked
# by the (emulated) TPM2; the agent is READY, the health gate passes and
# systemd-bless-boot renames the entry to osiris_1.efi. The same disk in a
# machine without that TPM stops at the passphrase prompt.
# Run with: nix build .#checks.x86_64-linux.image (needs KVM).
{ hostPkgs, ... }:
let
  version = "1";
in
{
  name = "osiris-image";

  nodes.appliance =
    { pkgs, ... }:
    {
      imports = [
        ../../modules/osiris.nix
        ../../modules/osiris-image.nix
        ../../modules/osiris-health-gate.nix
        ./image-vm.nix
      ];
      osiris.image = {
        enable = true;
        inherit version;
        slotSize = 2048;
      };
      services.osiris = {
        enable = true;
        plugins = [ pkgs.osirisPlugins.appliance-selfcheck ];
        settings.site.id = "vm-image";
      };
      system.stateVersion = "26.05";
    };

  # The same disk, no TPM (a stolen disk in another machine).
  nodes.thief = {
    imports = [ ./image-vm.nix ];
    virtualisation.tpm.enable = false;
    system.stateVersion = "26.05";
  };

  testScript =
    { nodes, ... }:
    let
      a = nodes.appliance;
    in
    builtins.readFile ./disk.py
    + ''
      disk = disk_from("${hostPkgs.qemu_test}/bin/qemu-img",
                       "${a.system.build.image}/${a.image.repart.imageFile}")

      appliance.start()
      appliance.wait_for_unit("osiris-health-gate.service")

      with subtest("the store comes from slot A, read-only; / is a tmpfs"):
          usr = appliance.succeed("findmnt -no SOURCE /usr").strip()
          label = appliance.succeed(f"lsblk -no PARTLABEL {usr}").strip()
          assert label == "osiris_${version}", (usr, label)
          appliance.succeed("findmnt -no OPTIONS /usr | grep -qw ro")
          appliance.succeed("findmnt --kernel --type tmpfs /")

      with subtest("/var is the data partition, LUKS2 unlocked by the TPM2"):
          appliance.succeed("findmnt -no SOURCE /var | grep -qx /dev/mapper/osiris-data")
          appliance.succeed("cryptsetup luksDump /dev/disk/by-partlabel/osiris-data | grep -q systemd-tpm2")
          appliance.succeed("test -d /var/lib/osiris/evidence")

      with subtest("the agent is READY and the gate passed"):
          appliance.succeed("systemctl is-active osiris-agent.service")
          appliance.succeed("systemctl show -P Result osiris-health-gate.service | grep -qx success")
          out = appliance.succeed("journalctl -b -u osiris-health-gate.service")
          assert "health gate: PASSED" in out and "image ${version}" in out, out

      with subtest("the entry is blessed"):
          appliance.wait_for_unit("systemd-bless-boot.service")
          appliance.succeed("systemd-bless-boot status | grep -qx good")
          appliance.succeed("test -e /boot/EFI/Linux/osiris_${version}.efi")
          appliance.fail("ls /boot/EFI/Linux | grep -F +")

      appliance.shutdown()

      with subtest("the disk alone does not unlock"):
          thief.start()
          thief.wait_for_console_text("Please enter passphrase for disk")
          thief.crash()
    '';
}
