# The installer ISO installs the appliance to an empty disk, which then
# boots (docs/image.md, "Installing from the ISO"): the ISO (nixpkgs'
# isoImage with iso/installer.nix, carrying an appliance image) boots from
# a CD-ROM in a machine whose only disk is empty; `osiris-install --yes`
# finds that disk, writes and reads back the image and moves the backup GPT
# to the disk's end; a second machine boots that disk to a passed gate.
# Run with: nix build .#checks.x86_64-linux.installer (needs KVM).
{ hostPkgs, ... }:
let
  appliance =
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
        version = "1";
        slotSize = 2048;
        encryptData = false;
      };
      virtualisation.tpm.enable = false;
      services.osiris = {
        enable = true;
        plugins = [ pkgs.osirisPlugins.appliance-selfcheck ];
        settings.site.id = "vm-installer";
      };
      system.stateVersion = "26.05";
    };
in
{
  name = "osiris-installer";

  nodes.appliance = appliance;

  # A live ISO built from this node's own configuration (with the test
  # driver's backdoor), booted from the CD-ROM; its one disk is empty.
  nodes.installer =
    {
      config,
      lib,
      modulesPath,
      nodes,
      ...
    }:
    {
      imports = [
        "${modulesPath}/installer/cd-dvd/iso-image.nix"
        ../../iso/installer.nix
      ];
      osiris.installer = {
        image = nodes.appliance.system.build.image;
        imageFile = nodes.appliance.image.repart.imageFile;
      };
      virtualisation = {
        directBoot.enable = false;
        useEFIBoot = true;
        mountHostNixStore = false;
        useDefaultFilesystems = false;
        fileSystems = lib.mkForce { };
        diskImage = null;
        emptyDiskImages = [ 8192 ];
        memorySize = 2048;
        qemu.options = [ "-cdrom ${config.system.build.isoImage}/iso/*.iso" ];
      };
      isoImage.makeEfiBootable = true;
      system.stateVersion = "26.05";
    };

  testScript = builtins.readFile ./disk.py + ''
    import os

    installer.start()
    installer.wait_for_unit("multi-user.target")

    with subtest("osiris-install finds the one empty disk and writes the image"):
        out = installer.succeed("osiris-install --yes 2>&1")
        assert "osiris-install: done" in out, out
        installer.succeed("sfdisk --verify /dev/vda")
        labels = installer.succeed("lsblk -nro PARTLABEL /dev/vda").split()
        assert labels == ["ESP", "osiris_1", "_empty"], labels
    with subtest("refuses without an image, naming it"):
        out = installer.fail("OSIRIS_IMAGE=/nonexistent osiris-install --yes 2>&1")
        assert "/nonexistent: no appliance image here" in out, out
    installer.shutdown()

    with subtest("the installed disk boots to a passed gate"):
        os.environ["NIX_DISK_IMAGE"] = os.path.join(installer.state_dir, "empty0.qcow2")
        appliance.start()
        appliance.wait_for_unit("osiris-health-gate.service")
        appliance.succeed("systemctl show -P Result osiris-health-gate.service | grep -qx success")
        appliance.succeed("findmnt -no SOURCE /var | grep -q osiris-data")
        appliance.shutdown()
  '';
}
