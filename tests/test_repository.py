"""Repository rules that CI enforces: the README's test command is what CI
runs, pins carry hashes and no download addresses, and every workspace
member is pinned, packaged for Nix (its default.nix agreeing with its
pyproject.toml) and, for plugins, in the flake."""

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def members():
    return sorted(p.parent for p in [*REPO.glob("packages/*/pyproject.toml"), *REPO.glob("plugins/*/pyproject.toml")])


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    m = re.search(r"^(make \w+)\s+# install everything it needs, then run every test", readme, re.M)
    assert m, "README must name the test command"
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [m.group(1)]


def test_pins_have_hashes_and_no_download_addresses():
    text = (REPO / "requirements.txt").read_text()
    assert "://" not in text and "--index-url" not in text and "--find-links" not in text
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", text, re.M)
    assert len(pins) > 10
    for block in re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text):
        if re.match(r"[A-Za-z0-9_.-]+==", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert "uv.lock" not in tracked and not any(p.endswith("package-lock.json") for p in tracked)


def test_every_member_is_pinned_and_has_a_nix_derivation():
    pinned = set(re.findall(r"^-e \./(\S+)$", (REPO / "requirements.txt").read_text(), re.M))
    flake = (REPO / "flake.nix").read_text()
    for member in members():
        rel = member.relative_to(REPO).as_posix()
        assert rel in pinned, f"{rel} missing from requirements.in/requirements.txt (run make lock)"
        nix = member / "default.nix"
        assert nix.is_file(), f"{rel} has no default.nix"
        project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
        assert project["name"] in nix.read_text() or "pyproject" in nix.read_text()
        if rel.startswith("plugins/"):
            assert "osirisPlugin = true" in nix.read_text(), f"{rel}/default.nix lacks the marker"
            name = member.name
            assert re.search(rf"^\s*{re.escape(name)} = \./{re.escape(rel)};", flake, re.M), f"{rel} not in flake.nix"
            eps = project.get("entry-points", {}).get("osiris", {})
            assert name in eps, f"{rel}: entry point 'osiris' named {name!r} expected"


# python3Packages attributes whose name is not the PyPI name normalised.
NIXPKGS_ATTR = {
    "python-bitcoinlib": "bitcoinlib",  # pkgs/development/python-modules/bitcoinlib: petertodd's
}


def _requirement_name(req: str) -> str:
    """A PEP 508 requirement's name as nixpkgs spells the attribute
    (lower case, runs of ``-_.`` as ``-``): "PyYAML>=6" -> "pyyaml"."""
    name = re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)).lower()
    return NIXPKGS_ATTR.get(name, name)


def test_nix_derivations_match_their_pyproject():
    """The derivations cannot be built here (no nixpkgs), so drift between a
    pyproject.toml and its default.nix would first show as a broken appliance
    build elsewhere. Each default.nix is evaluated with stand-ins for nixpkgs
    (tools/eval-package.nix) and compared with the distribution it packages."""
    nix = shutil.which("nix-instantiate")
    assert nix, "nix-instantiate not found: `make test` installs it (tools/ensure-system-tools.sh)"
    for member in members():
        rel = member.relative_to(REPO).as_posix()
        out = subprocess.run(
            [nix, "--store", "dummy://", "--eval", "--strict", "--json", str(REPO / "tools/eval-package.nix"),
             "--arg", "path", str(member / "default.nix")], capture_output=True, text=True)
        assert out.returncode == 0, f"{rel}/default.nix does not evaluate: {out.stderr.strip()}"
        drv = json.loads(out.stdout)
        pyproject = tomllib.loads((member / "pyproject.toml").read_text())
        project = pyproject["project"]
        assert drv["pname"] == project["name"], f"{rel}: pname {drv['pname']!r}, pyproject name {project['name']!r}"
        assert drv["version"] == project["version"], f"{rel}: version differs from pyproject.toml"
        want = sorted(_requirement_name(r) for r in project.get("dependencies", []))
        assert sorted(drv.get("dependencies", [])) == want, f"{rel}/default.nix dependencies differ from pyproject.toml"
        assert sorted(drv.get("build-system", [])) == sorted(
            _requirement_name(r) for r in pyproject["build-system"]["requires"]), f"{rel}: build-system differs"
        for module in drv.get("pythonImportsCheck", []):
            path = member / "src" / module.replace(".", "/")
            assert path.is_dir() or path.with_suffix(".py").is_file(), f"{rel}: pythonImportsCheck {module} not in src/"
        eps = project.get("entry-points", {}).get("osiris", {})
        if rel.startswith("plugins/"):
            assert drv["passthru"].get("osirisPlugin") is True, f"{rel}: passthru.osirisPlugin must be true"
            assert drv["passthru"].get("osirisPluginName") in eps, f"{rel}: osirisPluginName is not its entry point"
