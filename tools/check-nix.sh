#!/usr/bin/env bash
# What CI can check of the Nix side without nixpkgs or network:
#   (a) every .nix file parses;
#   (b) pure data files evaluate (the unit's sandbox, modules/osiris-hardening.nix);
#   (c) flake.lock pins nixpkgs exactly as ../shared/nixpkgs-pin.json says;
#   (d) a unit file rendered from that sandbox scores at most MAX_EXPOSURE
#       with `systemd-analyze security --offline=true`;
#   (e) with NIXPKGS_LIB (a checkout of nix-community/nixpkgs.lib, never
#       committed), the modules (agent, health gate, image, update; the image with
#       and without dm-verity) evaluate with the real lib
#       (tools/eval-module.nix) and pass their assertions, and every unit
#       they render (osiris-agent, osiris-health-gate,
#       osiris-health-gate-failed) scores at most MAX_EXPOSURE and passes
#       `systemd-analyze verify` without a word. Skipped when unset (CI).
# Needs nix-instantiate (Debian: nix-bin), python3 and systemd-analyze.
set -euo pipefail

# Exposure threshold, in systemd-analyze's unit (score x 10): 20 means 2.0.
MAX_EXPOSURE=${MAX_EXPOSURE:-20}

fail() { echo "check-nix: FAIL: $*" >&2; exit 1; }

command -v nix-instantiate >/dev/null ||
    { echo "check-nix: nix-instantiate not found; install it with: apt-get install nix-bin" >&2; exit 1; }
command -v python3 >/dev/null || fail "python3 not found"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# Parsing and evaluating plain data need no store: the dummy store works
# for root and non-root alike, with no daemon and no writable /nix.
nixi() { nix-instantiate --store dummy:// "$@"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== (a) parse every .nix file"
mapfile -d '' files < <(find . \( -name .git -o -name .venv -o -name .tools -o -name node_modules -o -name 'result*' \) -prune \
    -o -type f -name '*.nix' -print0 | sort -z)
[ "${#files[@]}" -gt 0 ] || fail "no .nix files found under $root"
bad=0
for f in "${files[@]}"; do
    if nixi --parse "$f" >/dev/null 2>"$tmp/err"; then
        echo "  ok    ${f#./}"
    else
        echo "  ERROR ${f#./}"; sed 's/^/        /' "$tmp/err"; bad=1
    fi
done
[ "$bad" = 0 ] || fail "some .nix files do not parse"

echo "== (b) evaluate pure data files"
hardening=modules/osiris-hardening.nix
nixi --eval --strict --json "$hardening" >"$tmp/hardening.json" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; fail "$hardening does not evaluate on its own (it must stay pure data)"; }
echo "  ok    $hardening ($(python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' <"$tmp/hardening.json") directives)"

# The renderer below assumes the module's fixed unit keys; catch drift.
module=modules/osiris.nix
for needle in 'import ./osiris-hardening.nix' 'Type = "notify"' 'NotifyAccess = "main"' \
    'WatchdogSec = lib.mkDefault "60s"' 'User = "osiris"' 'StateDirectory = "osiris"' 'LoadCredential'; do
    grep -qF "$needle" "$module" || fail "$module no longer contains '$needle' (update tools/check-nix.sh)"
done
echo "  ok    $module sets the unit keys the score below assumes"

echo "== (c) flake.lock pins nixpkgs"
pin=../shared/nixpkgs-pin.json
if [ -f "$pin" ]; then
    python3 - "$pin" <<'EOF' || fail "flake.lock does not match $pin"
import json, sys
pin = json.load(open(sys.argv[1]))
try:
    lock = json.load(open("flake.lock"))
except (OSError, ValueError) as e:
    sys.exit(f"  flake.lock is not valid JSON: {e}")
want = {"locked": pin["locked"], "original": pin["original"]}
node = lock.get("nodes", {}).get("nixpkgs")
root = lock.get("nodes", {}).get(lock.get("root", ""), {})
problems = []
if lock.get("version") != 7:
    problems.append(f"version is {lock.get('version')!r}, expected 7")
if root.get("inputs", {}).get("nixpkgs") != "nixpkgs":
    problems.append("root node does not have input nixpkgs -> node 'nixpkgs'")
if node != want:
    problems.append(f"nodes.nixpkgs is {json.dumps(node)}, expected {json.dumps(want)}")
if problems:
    sys.exit("\n".join("  " + p for p in problems))
print(f"  ok    flake.lock: nixpkgs {want['original']['ref']} @ {want['locked']['rev'][:12]}")
EOF
else
    echo "  skip  $pin not found (outside the shared workspace); flake.lock not compared"
fi

echo "== (d) score the sandbox with systemd-analyze"
command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (apt-get install systemd)"
unit="$tmp/osiris-agent.service"
python3 - "$tmp/hardening.json" "$unit" <<'EOF'
import json, sys
hardening = json.load(open(sys.argv[1]))
# Mirrors the fixed keys of systemd.services.osiris-agent in modules/osiris.nix.
fixed = {
    "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60s",
    "Restart": "on-failure", "RestartSec": "5s", "LimitNOFILE": 65536, "ExecStart": "/run/current-system/sw/bin/osiris --config /etc/osiris/config.json run",
    "User": "osiris", "Group": "osiris", "DynamicUser": False,
    "StateDirectory": "osiris", "StateDirectoryMode": "0750",
    "Environment": "OSIRIS_STATE_DIR=/var/lib/osiris",
    "LoadCredential": "winrm-admin:/run/keys/osiris/winrm-admin",
}
clash = set(fixed) & set(hardening)
if clash:
    sys.exit(f"hardening sets keys the module sets itself: {sorted(clash)}")
def render(v):  # as NixOS does: booleans true/false, lists one line each
    return "true" if v is True else "false" if v is False else str(v)
lines = ["[Unit]", "Description=Osiris compliance agent (rendered by tools/check-nix.sh)", "", "[Service]"]
for key, value in {**fixed, **hardening}.items():
    for v in value if isinstance(value, list) else [value]:
        lines.append(f"{key}={render(v)}")
lines += ["", "[Install]", "WantedBy=multi-user.target"]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
EOF
set +e
systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" "$unit" >"$tmp/score" 2>&1
rc=$?
set -e
grep -E '^✗' "$tmp/score" | sed 's/^/  /' || true
score=$(sed -n 's/.*Overall exposure level for osiris-agent.service: \([0-9.]*\).*/\1/p' "$tmp/score")
[ -n "$score" ] || { cat "$tmp/score" >&2; fail "systemd-analyze gave no score"; }
echo "  exposure score: $score (threshold $(python3 -c "print($MAX_EXPOSURE/10)"))"
[ "$rc" = 0 ] || fail "osiris-agent.service exposure $score is above the threshold"

echo "== (e) evaluate the modules with nixpkgs' lib; score and verify the units they render"
if [ -z "${NIXPKGS_LIB:-}" ]; then
    echo "  skip  NIXPKGS_LIB is not set (a checkout of nix-community/nixpkgs.lib): the agent, health gate"
    echo "        and image modules were not evaluated, and their units not scored or verified"
else
    lib_dir=$(cd "$NIXPKGS_LIB" && pwd) || fail "NIXPKGS_LIB=$NIXPKGS_LIB is not a directory"
    [ -f "$lib_dir/lib/default.nix" ] || fail "NIXPKGS_LIB=$NIXPKGS_LIB has no lib/default.nix"
    command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (apt-get install systemd)"
    # An appliance: the agent, the image (with and without dm-verity) and its health gate.
    for verity in false true; do
        host="{ services.osiris = { enable = true; settings.site.id = \"check-nix\"; };
                osiris.image = { enable = true; version = \"1.0.0\"; verity.enable = $verity; };
                osiris.update = { enable = true; repositoryUrl = \"https://updates.example/osiris/\";
                                  trustedRoot = \"/etc/osiris/root.json\"; hardware = \"hp-t640\"; }; }"
        nixi --eval --strict --json tools/eval-module.nix --argstr nixpkgsLib "$lib_dir" --arg host "$host" \
            >"$tmp/module-$verity.json" 2>"$tmp/err" ||
            { cat "$tmp/err" >&2; fail "the modules do not evaluate (osiris.image.verity.enable = $verity)"; }
    done
    mkdir -p "$tmp/module" "$tmp/verify/units"
    python3 - "$tmp/module-false.json" "$tmp/module-true.json" "$tmp/module" "$tmp/verify" <<'EOF2' || fail "the modules fail their assertions"
import json, os, sys
from pathlib import Path
outs = [json.load(open(p)) for p in sys.argv[1:3]]
for out in outs:
    if out["failedAssertions"]:
        sys.exit("\n".join(out["failedAssertions"]))
units, verify = Path(sys.argv[3]), Path(sys.argv[4])
need = {"osiris-agent", "osiris-health-gate", "osiris-health-gate-failed", "osiris-update"}
missing = need - set(outs[0]["units"])
if missing:
    sys.exit(f"the modules render no {', '.join(sorted(missing))}.service")
store = "/nix/store/"
for name, text in outs[0]["units"].items():
    (units / f"{name}.service").write_text(text)
    # systemd-analyze verify checks that each command exists: stand-ins
    # for the store paths the stand-in packages name.
    (verify / "units" / f"{name}.service").write_text(text.replace(store, f"{verify}/store/"))
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            exe = verify / "store" / line.split("=", 1)[1].split()[0][len(store):]
            exe.parent.mkdir(parents=True, exist_ok=True)
            exe.write_text("#!/bin/sh\n")
            exe.chmod(0o755)
# The update's trigger (.path): verified beside the service it starts.
for name, text in outs[0]["pathUnits"].items():
    (verify / "units" / f"{name}.path").write_text(text)
if "osiris-update" not in outs[0]["pathUnits"]:
    sys.exit("the update module renders no osiris-update.path")
print(f"  ok    the modules evaluate (image with and without dm-verity); units: {', '.join(sorted(outs[0]['units']))}")
print(f"  ok    the image's UKI is {outs[0]['image']['uki']['file']}; its slot {outs[0]['image']['repart']['partitions']['10-slot-a']['repartConfig']['Label']}")
EOF2
    for unit in "$tmp"/module/*.service; do
        name=$(basename "$unit")
        set +e
        systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" "$unit" >"$tmp/score" 2>&1
        rc=$?
        set -e
        score=$(sed -n "s/.*Overall exposure level for $name: \([0-9.]*\).*/\1/p" "$tmp/score")
        [ -n "$score" ] || { cat "$tmp/score" >&2; fail "systemd-analyze gave no score for $name"; }
        echo "  ok    $name scores $score"
        [ "$rc" = 0 ] || fail "$name exposure $score is above the threshold"
    done
    # verify prints a warning for an unknown key or a value it cannot parse and still exits 0: any output fails.
    if ! systemd-analyze verify --man=no "$tmp"/verify/units/*.service "$tmp"/verify/units/*.path \
            >"$tmp/verify.out" 2>&1 || [ -s "$tmp/verify.out" ]; then
        sed 's/^/        /' "$tmp/verify.out" >&2
        fail "systemd-analyze verify found problems in the rendered units"
    fi
    echo "  ok    systemd-analyze verify: $(cd "$tmp/verify/units" && echo *.service *.path)"
    # The physical appliance's host config and the installer ISO's module, as the flake uses them.
    nixi --eval --strict --json tools/eval-module.nix --argstr nixpkgsLib "$lib_dir" \
        --arg host ./hosts/appliance/configuration.nix >"$tmp/host.json" 2>"$tmp/err" ||
        { cat "$tmp/err" >&2; fail "hosts/appliance/configuration.nix does not evaluate"; }
    installer='{ imports = [ ./iso/installer.nix ]; osiris.installer = { image = { type = "derivation";
        name = "image"; outPath = "/nix/store/00000000000000000000000000000000-image"; };
        imageFile = "osiris_1.0.0.raw"; auto = true; }; }'
    nixi --eval --strict --json tools/eval-module.nix --argstr nixpkgsLib "$lib_dir" \
        --arg host "$installer" >"$tmp/installer.json" 2>"$tmp/err" ||
        { cat "$tmp/err" >&2; fail "iso/installer.nix does not evaluate"; }
    python3 - "$tmp/host.json" "$tmp/installer.json" <<'EOF2' || fail "the appliance or installer configuration is wrong"
import json, sys
host, installer = (json.load(open(p)) for p in sys.argv[1:3])
for name, out in (("hosts/appliance", host), ("iso/installer.nix", installer)):
    if out["failedAssertions"]:
        sys.exit(f"{name}: " + "\n".join(out["failedAssertions"]))
if "osiris-health-gate" not in host["units"]:
    sys.exit("hosts/appliance: no osiris-health-gate.service")
[content] = installer["installer"]["isoContents"]
print(f"  ok    hosts/appliance evaluates (UKI {host['image']['uki']['file']}); "
      f"iso/installer.nix puts the image at {content['target']} on the ISO")
EOF2
fi

echo "check-nix: all checks passed"
