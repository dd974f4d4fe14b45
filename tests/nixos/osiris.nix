# NixOS VM test of services.osiris: the module, the sandboxed unit, the
# selfcheck plugin and credentials, end to end on a booted system.
# Run with: nix build .#checks.x86_64-linux.nixos-osiris
# The flake calls pkgs.testers.runNixOSTest on this file with pkgs that
# already carry overlays.default (node pkgs are read-only in these tests).
{ ... }:
{
  name = "osiris";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ ../../modules/osiris.nix ];

      # A stand-in secret, created at boot outside the store and readable by
      # root only: LoadCredential= must still hand it to the osiris user.
      # (The literal is in the store via tmpfiles; fine for a fake.)
      systemd.tmpfiles.rules = [ "f+ /run/keys/osiris-winrm-admin 0400 root root - lab-only-not-a-secret" ];

      services.osiris = {
        enable = true;
        plugins = [ pkgs.osirisPlugins.appliance-selfcheck ];
        settings = {
          site = {
            id = "demo-practice";
            name = "Demo Practice";
          };
          agent.workers = 8;
          secrets.files = { };
          plugins.appliance-selfcheck.min_free_percent = 10;
        };
        credentials.winrm-admin = "/run/keys/osiris-winrm-admin";
      };

      environment.systemPackages = [ pkgs.curl ];
    };

  testScript = ''
    import json

    machine.wait_for_unit("osiris-agent.service")
    machine.wait_for_open_port(8780)

    with subtest("health endpoint says alive"):
        health = json.loads(machine.succeed("curl -sf http://127.0.0.1:8780/health"))
        assert health.get("alive") is True, health

    with subtest("the plugin from services.osiris.plugins is loaded"):
        out = machine.succeed("osiris plugins")
        assert "appliance-selfcheck" in out, out

    with subtest("runs as osiris (active means READY=1 arrived: Type=notify)"):
        machine.succeed("systemctl show -P User osiris-agent.service | grep -qx osiris")

    with subtest("secret arrives as a credential, never in the config"):
        machine.succeed("test -s /run/credentials/osiris-agent.service/winrm-admin")
        machine.fail("grep -q lab-only-not-a-secret /etc/osiris/config.json")

    with subtest("sandbox: exposure score at most 2.0 (threshold is x10)"):
        machine.succeed("systemd-analyze security --threshold=20 osiris-agent.service >&2")
  '';
}
