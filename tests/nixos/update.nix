# The privilege split of updates (modules/osiris-update.nix, docs/updates.md):
# the sandboxed agent asks through a request file it may write, the root
# unit runs on that request in its own sandbox and consumes it, the
# agent cannot write the disk or the ESP itself, and the runner's journal
# becomes signed `update` evidence in the agent. The repository here
# refuses connections, so the install fails, as a step in the journal.
# Run with: nix build .#checks.x86_64-linux.update (needs KVM).
{ ... }:
{
  name = "osiris-update";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [
        ../../modules/osiris.nix
        ../../modules/osiris-image.nix
        ../../modules/osiris-health-gate.nix
        ../../modules/osiris-update.nix
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
        settings.site.id = "vm-update";
      };
      osiris.update = {
        enable = true;
        # Nothing listens there: every fetch fails, and says so.
        repositoryUrl = "https://127.0.0.1:9/osiris/";
        trustedRoot = pkgs.writeText "root.json" (builtins.toJSON { signed._type = "root"; signatures = [ ]; });
        hardware = "vm";
        disk = "/dev/vda";
      };
      environment.systemPackages = [ pkgs.sqlite ];
      system.stateVersion = "26.05";
    };

  testScript =
    { nodes, ... }:
    let
      qemuImg = "${nodes.machine.virtualisation.qemu.package}/bin/qemu-img";
    in
    builtins.readFile ./disk.py
    + ''
      import json

      disk = disk_from("${qemuImg}", "${nodes.machine.system.build.image}/${nodes.machine.image.repart.imageFile}")
      machine.start()
      machine.wait_for_unit("osiris-agent.service")

      with subtest("the trigger is armed; the root unit scores at most 2.0"):
          machine.succeed("systemctl is-active osiris-update.path")
          machine.succeed("systemd-analyze security --threshold=20 osiris-update.service >&2")
          machine.succeed("test -z \"$(systemctl show -P User osiris-update.service)\"")  # root
          machine.succeed("test -z \"$(systemctl show -P CapabilityBoundingSet osiris-update.service)\"")

      with subtest("the agent's user cannot write the disk or the ESP"):
          machine.fail("su -s /bin/sh osiris -c 'dd if=/dev/zero of=/dev/vda bs=512 count=1 seek=4096 conv=notrunc'")
          machine.fail("su -s /bin/sh osiris -c 'touch /boot/EFI/Linux/x.efi'")

      with subtest("status answers, configured"):
          status = json.loads(machine.succeed("osiris update status --json"))
          assert status["configured"] is True and status["backend"], status
          assert status["booted_version"] == "1", status

      with subtest("a request from the agent starts the root unit, which journals the failed fetch"):
          machine.succeed("echo '{\"action\": \"check\", \"reboot\": false}' > /tmp/request.json")
          machine.succeed("su -s /bin/sh osiris -c 'cp /tmp/request.json /var/lib/osiris-update/request/request.json.tmp "
                          "&& chmod 0644 /var/lib/osiris-update/request/request.json.tmp "
                          "&& mv /var/lib/osiris-update/request/request.json.tmp /var/lib/osiris-update/request/request.json'")
          machine.wait_until_succeeds("test -s /var/lib/osiris-update/journal.jsonl", timeout=120)
          last = json.loads(machine.succeed("tail -n 1 /var/lib/osiris-update/journal.jsonl"))
          assert last["step"] in ("failed", "refused"), last
          machine.wait_until_fails("test -e /var/lib/osiris-update/request/request.json", timeout=60)  # consumed
          machine.fail("su -s /bin/sh osiris -c 'touch /var/lib/osiris-update/journal.jsonl'")

      with subtest("the journal's step becomes signed evidence in the agent"):
          machine.wait_until_succeeds(
              "test $(sqlite3 /var/lib/osiris/evidence/log.sqlite3 \"select count(*) from entries where kind = 'update'\") -ge 2",
              timeout=60)  # booted, then the failed step
          machine.succeed("osiris evidence verify --fast")
    '';
}
