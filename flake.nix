{
  description = "Osiris: an on-premises HIPAA compliance appliance for MSPs";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      # Every plugin is its own Python distribution and derivation.
      # Adding one is one line here: name = directory with a default.nix.
      plugins = {
        appliance-selfcheck = ./plugins/appliance-selfcheck;
        endpoints = ./plugins/endpoints;
        update-ab = ./plugins/update-ab;
        evidence-ots = ./plugins/evidence-ots;
        evidence-http = ./plugins/evidence-http;
        evidence-local = ./plugins/evidence-local;
        escalate-webhook = ./plugins/escalate-webhook;
        escalate-email = ./plugins/escalate-email;
        l2-llm = ./plugins/l2-llm;
        windows = ./plugins/windows;
        windows-baseline = ./plugins/windows-baseline;
      };

      # Attribute name in python3Packages (and the flake's packages).
      pluginAttr = name: "osiris-${name}";

      # nixpkgs with our overlay, so packages, checks and hosts all see the
      # same pkgs.osiris-agent the NixOS module defaults to.
      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
        };

      forAllSystems = f: lib.genAttrs systems (system: f (pkgsFor system));
    in
    {
      # Python packages go into every interpreter's package set (so a host on
      # another python3 still gets a consistent set); pkgs.osiris-agent and
      # pkgs.osirisPlugins are the python3 ones the module uses by default.
      overlays.default = final: prev: {
        pythonPackagesExtensions = prev.pythonPackagesExtensions ++ [
          (
            pyFinal: _pyPrev:
            {
              osiris-agent = pyFinal.callPackage ./packages/osiris-agent/default.nix { };
              # The endpoint protocol and agent: the endpoints plugin needs the first.
              osiris-endpoint-proto = pyFinal.callPackage ./packages/osiris-endpoint-proto/default.nix { };
              osiris-endpoint = pyFinal.callPackage ./packages/osiris-endpoint/default.nix { };
              # The MSP's release command (docs/updates.md): signs the TUF repository.
              osiris-release = pyFinal.callPackage ./packages/osiris-release/default.nix { };
            }
            // lib.mapAttrs' (
              name: dir:
              lib.nameValuePair (pluginAttr name) (
                pyFinal.callPackage (dir + "/default.nix") { inherit (pyFinal) osiris-agent; }
              )
            ) plugins
          )
        ];
        osiris-agent = final.python3Packages.osiris-agent;
        osiris-release = final.python3Packages.osiris-release;
        osirisPlugins = lib.mapAttrs (name: _: final.python3Packages.${pluginAttr name}) plugins;
      };

      packages = forAllSystems (
        pkgs:
        {
          inherit (pkgs) osiris-agent osiris-release;
          default = pkgs.osiris-agent;
        }
        // lib.mapAttrs' (name: drv: lib.nameValuePair (pluginAttr name) drv) pkgs.osirisPlugins
        # The appliance (hosts/appliance, docs/image.md): its raw disk image
        # and the installer ISO that writes it to the internal disk.
        // lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") {
          appliance-image = self.nixosConfigurations.appliance.config.system.build.image;
          installer-iso = self.nixosConfigurations.installer.config.system.build.isoImage;
        }
      );

      # The module refers to pkgs only; hosts add overlays.default.
      nixosModules.osiris = ./modules/osiris.nix;
      nixosModules.default = self.nixosModules.osiris;
      # The appliance image (docs/image.md): A/B slots from iso/layout.json,
      # systemd-boot with boot counting, the post-boot health gate.
      nixosModules.image = ./modules/osiris-image.nix;
      nixosModules.health-gate = ./modules/osiris-health-gate.nix;
      # Updates (docs/updates.md): osiris.update.*, the root unit and its triggers.
      nixosModules.update = ./modules/osiris-update.nix;
      nixosModules.appliance = {
        imports = [
          self.nixosModules.osiris
          self.nixosModules.image
          self.nixosModules.health-gate
          self.nixosModules.update
        ];
      };

      # runNixOSTest sets the nodes' pkgs to the (overlaid) pkgs it is called on.
      # The image tests boot UEFI disk images: x86_64 only, as the appliance.
      checks = forAllSystems (
        pkgs:
        {
          nixos-osiris = pkgs.testers.runNixOSTest ./tests/nixos/osiris.nix;
        }
        // lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") {
          image = pkgs.testers.runNixOSTest ./tests/nixos/image.nix;
          image-rollback = pkgs.testers.runNixOSTest ./tests/nixos/rollback.nix;
          installer = pkgs.testers.runNixOSTest ./tests/nixos/installer.nix;
          update = pkgs.testers.runNixOSTest ./tests/nixos/update.nix;
        }
      );

      # The physical appliance (HP t640 class): `nix build .#appliance-image`.
      nixosConfigurations.appliance = lib.nixosSystem {
        modules = [
          {
            nixpkgs.hostPlatform = "x86_64-linux";
            nixpkgs.overlays = [ self.overlays.default ];
          }
          self.nixosModules.appliance
          ./hosts/appliance/configuration.nix
        ];
      };

      # The installer ISO carrying that image: `nix build .#installer-iso`.
      nixosConfigurations.installer = lib.nixosSystem {
        modules = [
          { nixpkgs.hostPlatform = "x86_64-linux"; }
          "${nixpkgs}/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix"
          ./iso/installer.nix
          (
            let
              appliance = self.nixosConfigurations.appliance.config;
            in
            {
              osiris.installer = {
                image = appliance.system.build.image;
                imageFile = appliance.image.repart.imageFile;
              };
            }
          )
        ];
      };

      nixosConfigurations.appliance-vm = lib.nixosSystem {
        modules = [
          {
            nixpkgs.hostPlatform = "x86_64-linux";
            nixpkgs.overlays = [ self.overlays.default ];
          }
          self.nixosModules.osiris
          ./hosts/appliance-vm/configuration.nix
        ];
      };
    };
}
