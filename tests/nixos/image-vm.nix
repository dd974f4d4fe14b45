# What a NixOS VM test needs to boot the appliance's disk image rather than
# the test driver's direct kernel boot: UEFI firmware (OVMF), the image as
# the first disk (the test script points NIX_DISK_IMAGE at a copy of it, see
# disk.py), the image's own file systems and LUKS device instead of the
# driver's, and an emulated TPM2.
{ lib, ... }:
{
  virtualisation = {
    directBoot.enable = false;
    useEFIBoot = true;
    mountHostNixStore = false;
    # Keep the image's file systems and its LUKS device (the driver's
    # defaults would replace both).
    useDefaultFilesystems = false;
    fileSystems = lib.mkForce { };
    tpm.enable = lib.mkDefault true;
    memorySize = 2048;
  };
}
