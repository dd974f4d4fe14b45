# The installer: a NixOS live ISO (nixpkgs' isoImage) that carries the
# appliance's raw disk image and `osiris-install`, which writes it to the
# appliance's internal disk (docs/image.md, "Installing from the ISO").
#
# The flake builds it as nixosConfigurations.installer with the
# installation-cd-minimal profile (packages.x86_64-linux.installer-iso);
# tests/nixos/installer.nix boots it and installs to an empty disk.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkEnableOption mkIf mkOption types;
  cfg = config.osiris.installer;
  onIso = "/osiris/osiris.raw";

  install = pkgs.writeShellApplication {
    name = "osiris-install";
    runtimeInputs = with pkgs; [
      coreutils
      diffutils
      gawk
      util-linux
    ];
    text = ''
      # osiris-install [--yes] [DISK]: write the Osiris appliance image to DISK
      # (default: the one internal, non-removable disk), read it back, and move
      # the backup GPT to the end of the disk. The data partition is created by
      # the appliance itself on first boot (systemd-repart), in the space left.
      image=''${OSIRIS_IMAGE:-/iso${onIso}}
      yes=
      disk=
      for arg in "$@"; do
        case "$arg" in
          --yes) yes=1 ;;
          -h|--help) echo "usage: osiris-install [--yes] [DISK]"; exit 0 ;;
          -*) echo "osiris-install: unknown option $arg (usage: osiris-install [--yes] [DISK])" >&2; exit 2 ;;
          *) disk=$arg ;;
        esac
      done
      [ -r "$image" ] || { echo "osiris-install: $image: no appliance image here (is this the Osiris installer?)" >&2; exit 1; }
      # The medium this system runs from is never a candidate.
      medium=$(findmnt -no SOURCE /iso 2>/dev/null | xargs -r lsblk -no PKNAME 2>/dev/null || true)
      if [ -z "$disk" ]; then
        # Internal: a disk, not removable, not read-only, not compressed RAM (zram), not the medium.
        mapfile -t disks < <(lsblk -dnpo NAME,TYPE,RM,RO | awk -v m="/dev/$medium" '$2 == "disk" && $3 == 0 && $4 == 0 && $1 !~ /zram/ && $1 != m { print $1 }')
        if [ "''${#disks[@]}" -ne 1 ]; then
          echo "osiris-install: expected exactly one internal disk, found ''${#disks[@]}: ''${disks[*]:-none}; name it: osiris-install DISK" >&2
          lsblk -dpo NAME,SIZE,MODEL,TRAN,RM >&2
          exit 2
        fi
        disk=''${disks[0]}
      fi
      [ -b "$disk" ] || { echo "osiris-install: $disk: not a block device" >&2; exit 2; }
      size=$(stat -c %s "$image")
      disk_size=$(blockdev --getsize64 "$disk")
      if [ "$disk_size" -lt "$size" ]; then
        echo "osiris-install: $disk holds $disk_size bytes, the image needs $size" >&2
        exit 1
      fi
      if [ -z "$yes" ]; then
        lsblk -po NAME,SIZE,TYPE,PARTLABEL,MODEL "$disk"
        read -r -p "Everything on $disk will be erased. Type yes to install: " answer
        [ "$answer" = yes ] || { echo "osiris-install: nothing written" >&2; exit 1; }
      fi
      echo "osiris-install: writing $image to $disk"
      dd if="$image" of="$disk" bs=4M conv=fsync status=progress
      echo "osiris-install: reading it back"
      cmp -n "$size" "$image" "$disk"
      # The image's backup GPT sits at the image's end; the disk is larger.
      sfdisk --relocate gpt-bak-std "$disk"
      sync
      blockdev --rereadpt "$disk" || true
      echo "osiris-install: done. Remove the installer and reboot: the appliance creates its data partition on first boot."
    '';
  };
in
{
  options.osiris.installer = {
    image = mkOption {
      type = types.package;
      description = "The appliance's disk image: system.build.image of a host with osiris.image.enable.";
    };
    imageFile = mkOption {
      type = types.str;
      example = "osiris_1.4.2.raw";
      description = "The raw image's file name inside {option}`osiris.installer.image` (image.repart.imageFile).";
    };
    auto = mkEnableOption ''
      installing without a question at boot, to the one internal disk, then
      powering off (for unattended installs; refuses when there is not
      exactly one internal disk)
    '';
  };

  config = {
    isoImage.contents = [
      {
        source = "${cfg.image}/${cfg.imageFile}";
        target = onIso;
      }
    ];
    environment.systemPackages = [ install ];

    systemd.services.osiris-install = mkIf cfg.auto {
      description = "Install the Osiris appliance image to the internal disk";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${install}/bin/osiris-install --yes";
        ExecStartPost = "${pkgs.systemd}/bin/systemctl poweroff";
        StandardOutput = "journal+console";
      };
    };
  };
}
