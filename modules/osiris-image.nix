# osiris.image: the appliance as a disk image with two A/B slots, booted by
# systemd-boot with boot counting (docs/image.md).
#
# The partitions come from ../iso/layout.json, the one description of the
# disk that the boot lab (tools/bootlab, `make boot-lab`) builds and boots
# too. The image (system.build.image, nixpkgs' image.repart) holds:
#
#   ESP       systemd-boot and this version's UKI, osiris_<version>+<tries>.efi
#   slot A    this version's Nix store, read-only (squashfs or erofs), labelled
#             osiris_<version>; with dm-verity, its hash partition beside it
#   slot B    empty, labelled _empty, the same size: the next version goes there
#
# The data partition (/var: the agent's state, evidence log and keys) is not
# in the image: systemd-repart creates it in the initrd on first boot from
# the rest of the disk, LUKS2-encrypted with a key sealed to the TPM2, and
# grows it if the disk grows. The root file system is a tmpfs; /usr is the
# slot this version's UKI names (mount.usr=, or dm-verity's usrhash=) and
# /nix/store is bound from it.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkDefault mkEnableOption mkIf mkOption optionalAttrs types;

  cfg = config.osiris.image;
  layout = builtins.fromJSON (builtins.readFile ../iso/layout.json);

  byId = lib.listToAttrs (map (p: lib.nameValuePair p.id p) layout.partitions);
  present = p: !(p ? when) || p.when == null || (p.when == "verity" && cfg.verity.enable);
  # image.repart attribute names sort in GPT order: 00-esp, 10-slot-a, ...
  keyOf = lib.listToAttrs (
    lib.imap0 (i: p: lib.nameValuePair p.id "${lib.fixedWidthNumber 2 (i * 10)}-${p.id}") layout.partitions
  );

  labelOf = p: builtins.replaceStrings [ "@version" ] [ cfg.version ] p.label;
  slotLabel = labelOf byId.slot-a;
  tooLong = label: builtins.stringLength label > layout.labelMaxChars;

  arch =
    {
      x86_64 = "x86-64";
      arm64 = "arm64";
    }
    .${pkgs.stdenv.hostPlatform.linuxArch};
  efiArch = pkgs.stdenv.hostPlatform.efiArch;
  # The layout's types are architecture-neutral; repart wants the target's.
  typeOf =
    t:
    {
      usr = "usr-${arch}";
      usr-verity = "usr-${arch}-verity";
    }
    .${t} or t;

  isSlot = p: p.type == "usr";
  sizeOf =
    p:
    if p.id == "esp" then
      cfg.espSize
    else if isSlot p then
      cfg.slotSize
    else
      p.sizeMiB;
  mib = n: "${toString n}M";

  partitionFor =
    p:
    {
      repartConfig = {
        Type = typeOf p.type;
        Label = labelOf p;
        SizeMinBytes = mib (sizeOf p);
        SizeMaxBytes = mib (sizeOf p);
      }
      // optionalAttrs (p.format == "vfat") { Format = "vfat"; }
      // optionalAttrs (p.format == "store") {
        Format = cfg.storeFormat;
        ReadOnly = true;
      };
    }
    // optionalAttrs (p.format == "store" && !cfg.verity.enable) {
      # With dm-verity, image.repart.verityStore adds the store itself.
      storePaths = [ config.system.build.toplevel ];
    }
    // optionalAttrs (p.id == "esp") {
      contents = {
        "/EFI/BOOT/BOOT${lib.toUpper efiArch}.EFI".source =
          "${config.systemd.package}/lib/systemd/boot/efi/systemd-boot${efiArch}.efi";
        "/EFI/systemd/systemd-boot${efiArch}.efi".source =
          "${config.systemd.package}/lib/systemd/boot/efi/systemd-boot${efiArch}.efi";
        # No menu unless a key is held; the newest entry with tries left boots.
        "/loader/loader.conf".source = pkgs.writeText "loader.conf" ''
          timeout 0
          editor no
          auto-entries no
          auto-firmware no
        '';
      }
      // optionalAttrs (!cfg.verity.enable) {
        "/EFI/Linux/${config.system.boot.loader.ukiFile}".source =
          "${config.system.build.uki}/${config.system.boot.loader.ukiFile}";
      };
    };

  dataDevice = "/dev/disk/by-partlabel/${cfg.dataLabel}";
  dataMapper = "osiris-data";
in
{
  options.osiris.image = {
    enable = mkEnableOption ''
      the appliance disk image (system.build.image): ESP, A/B slots from
      iso/layout.json, systemd-boot with boot counting, a read-only store,
      and an encrypted data partition for /var created on first boot
    '';

    version = mkOption {
      type = types.strMatching "[A-Za-z0-9][A-Za-z0-9.~^-]*";
      example = "1.4.2";
      description = ''
        The version this image carries. It names the slot (GPT label
        `osiris_<version>`, at most ${toString layout.labelMaxChars} characters
        with the prefix, and with `_verity` when {option}`osiris.image.verity.enable`)
        and the UKI (`osiris_<version>+<tries>.efi`), and becomes
        `IMAGE_VERSION` in /etc/os-release, which the health gate records.
        Versions compare as systemd-boot compares them (newest boots first).
      '';
    };

    slotSize = mkOption {
      type = types.ints.positive;
      default = byId.slot-a.sizeMiB;
      description = ''
        Size of each slot in MiB (slot B is the same size: the next version
        is written there). Every version's store image must fit; systemd-repart
        refuses to build an image whose store is larger than its slot.
      '';
    };

    espSize = mkOption {
      type = types.ints.positive;
      default = byId.esp.sizeMiB;
      description = "Size of the EFI system partition in MiB: it holds one UKI per installed version.";
    };

    storeFormat = mkOption {
      type = types.enum [
        "erofs"
        "squashfs"
      ];
      default = "erofs";
      description = "File system of a slot (the read-only Nix store).";
    };

    verity.enable = mkEnableOption ''
      dm-verity for the store (nixpkgs' image.repart.verityStore): each slot
      gets a hash partition, and the UKI carries the root hash (usrhash=)
    '';

    tries = mkOption {
      type = types.int;
      default = layout.tries;
      description = ''
        How many boots a new version gets before systemd-boot falls back to
        the last good one (the `+N` counter of its UKI's file name). At least 1.
      '';
    };

    dataLabel = mkOption {
      type = types.str;
      default = layout.data.label;
      description = "GPT label of the data partition (/var) that systemd-repart creates on first boot.";
    };

    dataMinSize = mkOption {
      type = types.ints.positive;
      default = layout.data.minSizeMiB;
      description = "Smallest data partition in MiB; it takes the rest of the disk and grows with it.";
    };

    encryptData = mkOption {
      type = types.bool;
      default = layout.data.encrypt == "tpm2";
      description = ''
        LUKS2 on the data partition, created by systemd-repart with its key
        sealed to the TPM2 (`Encrypt=tpm2`), unlocked in the initrd without
        a passphrase; the disk alone does not open. Enrol a recovery key
        when commissioning (`osiris-recovery-key`, docs/image.md).
      '';
    };

    disk = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/dev/disk/by-path/pci-0000:00:11.0-ata-1";
      description = ''
        The disk systemd-repart adds the data partition to in the initrd.
        null: the disk that holds the booted slot (/usr).
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions =
      map
        (p: {
          assertion = !tooLong (labelOf p);
          message = "osiris.image.version = \"${cfg.version}\": the GPT label '${labelOf p}' of partition ${p.id} has ${toString (builtins.stringLength (labelOf p))} characters, expected at most ${toString layout.labelMaxChars} (GPT partition names); use a shorter version.";
        })
        (lib.filter present layout.partitions)
      ++ [
        {
          assertion = !tooLong cfg.dataLabel;
          message = "osiris.image.dataLabel = \"${cfg.dataLabel}\": expected at most ${toString layout.labelMaxChars} characters (GPT partition names).";
        }
        {
          assertion = cfg.tries >= 1;
          message = "osiris.image.tries = ${toString cfg.tries}: expected at least 1 (the boots a new version gets before systemd-boot falls back).";
        }
        {
          assertion = cfg.slotSize >= layout.minSlotSizeMiB;
          message = "osiris.image.slotSize = ${toString cfg.slotSize}: expected at least ${toString layout.minSlotSizeMiB} MiB, the size of the smallest appliance store image (a slot smaller than its image cannot be built).";
        }
        {
          assertion = cfg.espSize >= layout.minEspSizeMiB;
          message = "osiris.image.espSize = ${toString cfg.espSize}: expected at least ${toString layout.minEspSizeMiB} MiB (two versions' UKIs and systemd-boot).";
        }
        {
          assertion = "${config.boot.uki.name}_" == layout.entryPrefix;
          message = "boot.uki.name = \"${config.boot.uki.name}\": expected \"${lib.removeSuffix "_" layout.entryPrefix}\" (iso/layout.json's entryPrefix names the boot entries).";
        }
      ];

    system.image = {
      id = "osiris";
      inherit (cfg) version;
    };

    image.repart = {
      name = "osiris";
      partitions = lib.listToAttrs (
        map (p: lib.nameValuePair keyOf.${p.id} (partitionFor p)) (lib.filter present layout.partitions)
      );
      verityStore = mkIf cfg.verity.enable {
        enable = true;
        partitionIds = {
          esp = keyOf.esp;
          store = keyOf.slot-a;
          store-verity = keyOf.slot-a-verity;
        };
      };
    };

    # The UKI: osiris_<version>+<tries>.efi; systemd-boot counts its tries down.
    boot.uki = {
      name = "osiris";
      inherit (cfg) tries;
    };

    # The ESP is built into the image (above): nothing installs a boot loader at switch time.
    boot.loader.grub.enable = false;
    boot.loader.systemd-boot.enable = false;

    # The UKI names its own slot: systemd mounts it on /usr in the initrd.
    boot.kernelParams = lib.optionals (!cfg.verity.enable) [
      "mount.usr=PARTLABEL=${slotLabel}"
      "mount.usrfstype=${cfg.storeFormat}"
      "mount.usrflags=ro"
    ];

    fileSystems = {
      "/" = {
        fsType = "tmpfs";
        options = [ "mode=0755" ];
      };
      "/nix/store" = {
        device = "/usr/nix/store";
        fsType = "none";
        options = [ "bind" ];
      };
      # systemd-bless-boot renames boot entries here.
      "/boot" = {
        device = "/dev/disk/by-partlabel/${byId.esp.label}";
        fsType = "vfat";
        options = [ "umask=0077" ];
      };
      "/var" = {
        device = if cfg.encryptData then "/dev/mapper/${dataMapper}" else dataDevice;
        fsType = layout.data.format;
        neededForBoot = true;
      };
    };
    # A read-only /usr holds the store, nothing else.
    system.activationScripts.usrbinenv = lib.mkForce "";

    boot.initrd.systemd = {
      enable = true;
      repart = {
        enable = true;
        device = cfg.disk;
      };
      # Without a device named, repart finds the disk through the slot on /sysroot/usr.
      services.systemd-repart.after = lib.optional (cfg.disk == null) "sysroot-usr.mount";
      tpm2.enable = mkIf cfg.encryptData true;
    };
    systemd.repart.partitions."50-${layout.data.id}" = {
      Type = layout.data.type;
      Label = cfg.dataLabel;
      Format = layout.data.format;
      SizeMinBytes = mib cfg.dataMinSize;
    }
    // optionalAttrs cfg.encryptData { Encrypt = "tpm2"; };
    boot.initrd.luks.devices = mkIf cfg.encryptData {
      ${dataMapper} = {
        device = dataDevice;
        crypttabExtraOpts = [ "tpm2-device=auto" ];
      };
    };

    # The recovery key: enrolled once, when commissioning (docs/image.md).
    environment.systemPackages = lib.optional cfg.encryptData (
      pkgs.writeShellScriptBin "osiris-recovery-key" ''
        set -eu
        dev=${dataDevice}
        if ${config.systemd.package}/bin/systemd-cryptenroll "$dev" | grep -q recovery; then
          echo "osiris-recovery-key: $dev already has a recovery key; wipe it first with" >&2
          echo "  systemd-cryptenroll --wipe-slot=recovery $dev" >&2
          exit 1
        fi
        echo "Write the key printed below into the MSP's vault now; it is shown once and never stored here."
        exec ${config.systemd.package}/bin/systemd-cryptenroll --recovery-key "$dev"
      ''
    );

    osiris.healthGate.enable = mkDefault true;
  };
}
