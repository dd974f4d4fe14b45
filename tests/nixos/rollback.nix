# A trial version whose health gate fails is tried `tries` times, then the
# previous version comes back and keeps booting (docs/image.md, "Boot
# counting"). Version 1 boots from the image and installs version 2 the way
# an update does: version 2's store (from a second disk holding version 2's
# image) into slot B, slot B labelled osiris_2, then version 2's UKI
# osiris_2+3.efi on the ESP. Version 2 carries a plugin whose health check
# fails. What happened is read from the console (each gate's verdict line)
# and from the ESP on the host afterwards, not from the machine.
# Run with: nix build .#checks.x86_64-linux.image-rollback (needs KVM).
{ hostPkgs, ... }:
let
  appliance =
    version:
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
        # Each machine below has its own emulated TPM: the disk moves between them.
        encryptData = false;
      };
      virtualisation.tpm.enable = false;
      services.osiris = {
        enable = true;
        plugins = [ pkgs.osirisPlugins.appliance-selfcheck ];
        settings.site.id = "vm-rollback";
      };
      system.stateVersion = "26.05";
    };

  # Version 2's defect: a health check that fails, as a plugin module.
  failing = pkgs: pkgs.writeTextDir "osiris_failing_check.py" ''
    from osiris import hookimpl
    from osiris.records import HealthCheck, HealthResult


    async def broken():
        return HealthResult(False, "this version cannot reach what it must")


    @hookimpl
    def osiris_health_checks(ctx):
        return HealthCheck("vm.broken", broken)
  '';
in
{
  name = "osiris-image-rollback";

  # Version 2: only built (its image is the update's source), never booted as a node.
  nodes.v2 =
    { pkgs, ... }:
    {
      imports = [ (appliance "2") ];
      services.osiris.settings.plugin_modules = [ "osiris_failing_check" ];
      systemd.services.osiris-agent.environment.PYTHONPATH = "${failing pkgs}";
    };

  # Version 1 with version 2's image as a second disk: the update's source.
  nodes.v1 =
    { nodes, ... }:
    {
      imports = [ (appliance "1") ];
      virtualisation.qemu.options = [
        "-drive if=virtio,format=raw,readonly=on,file=${nodes.v2.system.build.image}/${nodes.v2.image.repart.imageFile}"
      ];
    };

  # The same disk without the update's source: every boot after the install.
  nodes.after = {
    imports = [ ./image-vm.nix ];
    virtualisation.tpm.enable = false;
    system.stateVersion = "26.05";
  };

  testScript =
    { nodes, ... }:
    let
      v1 = nodes.v1;
      inherit (v1.osiris.image) tries;
      qemuImg = "${hostPkgs.qemu_test}/bin/qemu-img";
    in
    builtins.readFile ./disk.py
    + ''
      disk = disk_from("${qemuImg}", "${v1.system.build.image}/${v1.image.repart.imageFile}")

      v1.start()
      v1.wait_for_unit("systemd-bless-boot.service")
      v1.succeed("systemd-bless-boot status | grep -qx good")

      with subtest("version 1 installs version 2: slot B, its label, then the UKI with its counter"):
          slot_b = v1.succeed("lsblk -nrpo NAME,PARTLABEL /dev/vda | awk '$2 == \"_empty\" { print $1 }'").strip()
          number = v1.succeed(f"cat /sys/class/block/{slot_b.split('/')[-1]}/partition").strip()
          source = v1.succeed("lsblk -nrpo NAME,PARTLABEL /dev/vdb | awk '$2 == \"osiris_2\" { print $1 }'").strip()
          v1.succeed(f"dd if={source} of={slot_b} bs=4M conv=fsync")
          v1.succeed(f"cmp -n $(blockdev --getsize64 {source}) {source} {slot_b}")
          v1.succeed(f"sfdisk --no-reread --part-label /dev/vda {number} osiris_2")
          v1.succeed("mkdir -p /mnt/v2 && mount -o ro /dev/vdb1 /mnt/v2")
          v1.succeed("cp /mnt/v2/EFI/Linux/osiris_2+${toString tries}.efi /boot/EFI/Linux/ && sync")
          v1.succeed("umount /mnt/v2")
      v1.shutdown()

      after.start()
      with subtest("version 2 is tried exactly ${toString tries} times"):
          for attempt in range(${toString tries}):
              after.wait_for_console_text(r"health gate: FAILED \(vm\.broken; .*image 2")
              after.wait_for_console_text("reboot: Restarting system")
      with subtest("then version 1 boots, blessed"):
          after.wait_for_console_text(r"health gate: PASSED \(.*image 1")
      after.crash()

      with subtest("and keeps booting"):
          after.start()
          after.wait_for_console_text(r"health gate: PASSED \(.*image 1")
          after.crash()

      with subtest("the ESP, read on the host: 1 good, 2 out of tries"):
          files = esp_files("${qemuImg}", "${hostPkgs.util-linux}/bin/sfdisk",
                            "${hostPkgs.mtools}/bin/mdir", disk, "/EFI/Linux")
          assert files == ["osiris_1.efi", "osiris_2+0-${toString tries}.efi"], files
    '';
}
