"""Real artefacts for the installer's tests: a GPT disk image file laid out
by the boot lab from iso/layout.json (systemd-repart, a vfat ESP made with
mkfs.vfat and filled with mtools, a squashfs slot), release artefacts (a
squashfs slot image compressed with zstd, a UKI-named file), and an HTTPS
server on loopback with a test CA (osiris_lab.pki)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from osiris_update_ab import disk as gpt
from osiris_update_ab.esp import ImageEsp
from osiris_update_ab.release import SlotImage, Target

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tools"))

from bootlab.disk import build as build_gpt  # noqa: E402
from bootlab.layout import load as load_layout  # noqa: E402

TOOLS = ("sfdisk", "systemd-repart", "mkfs.vfat", "mcopy", "mksquashfs")
ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (tools/ensure-system-tools.sh installs them on Debian)")


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=ENV).stdout


def squashfs(work: Path, version: str, payload: int) -> Path:
    """A slot image: a squashfs holding the version and ``payload`` bytes
    of incompressible data (so sizes are honest)."""
    src = work / f"store-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "version").write_text(version + "\n")
    (src / "payload").write_bytes(os.urandom(payload))
    img = work / f"slot-{version}.squashfs"
    img.unlink(missing_ok=True)
    run("mksquashfs", str(src), str(img), "-noappend", "-quiet", "-no-progress")
    return img


@dataclass(frozen=True)
class Artefacts:
    version: str
    image_file: Path  # uncompressed
    served_image: Path  # as served (compressed)
    uki_file: Path
    image: SlotImage
    uki: Target


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release_artefacts(work: Path, version: str, *, payload: int = 3 << 20, uki_size: int = 300_000) -> Artefacts:
    img = squashfs(work, version, payload)
    served = work / f"osiris_{version}.squashfs.zst"
    served.write_bytes(zstandard.ZstdCompressor(level=3).compress(img.read_bytes()))
    uki = work / f"osiris_{version}.efi"
    uki.write_bytes(b"MZ" + os.urandom(uki_size - 2))
    return Artefacts(
        version, img, served, uki,
        SlotImage(served.name, served.stat().st_size, sha(served), "zstd", img.stat().st_size, sha(img)),
        Target(uki.name, uki.stat().st_size, sha(uki)))


def build_disk(work: Path, version: str = "1") -> tuple[Path, Artefacts]:
    """A v``version`` appliance disk: slot A holds its squashfs, slot B is
    ``_empty``, the ESP holds its blessed UKI ``EFI/Linux/osiris_<v>.efi``."""
    work.mkdir(parents=True, exist_ok=True)
    layout = load_layout()
    a = release_artefacts(work / f"v{version}", version, payload=2 << 20)
    esp = work / "esp.img"
    run("mkfs.vfat", "-C", "-F", "32", "-n", "ESP", str(esp), str(layout.get("esp").lab_size_mib * 1024))
    run("mmd", "-i", str(esp), "::/EFI", "::/EFI/Linux")
    run("mcopy", "-i", str(esp), str(a.uki_file), f"::/EFI/Linux/osiris_{version}.efi")
    return build_gpt(layout, work, version=version, esp=esp, slot=a.image_file), a


class Server:
    """Files of a directory over HTTPS on 127.0.0.1 (port chosen by the kernel)."""

    def __init__(self, root: Path, work: Path) -> None:
        from osiris_lab.pki import create

        self.root = root
        self.pki = create(work / "pki")
        handler = type("H", (http.server.SimpleHTTPRequestHandler,), {
            "log_message": lambda *a: None,
            "__init__": lambda s, *a, **k: http.server.SimpleHTTPRequestHandler.__init__(s, *a, directory=str(root), **k),
        })
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.socket = self.pki.server_context().wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def chunks(self, name: str, chunk: int = 1 << 20):
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.pki.ca_file))
        with urllib.request.urlopen(f"{self.url}/{name}", context=ctx, timeout=60) as r:
            while data := r.read(chunk):
                yield data

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    s = Server(root, tmp_path)
    yield s
    s.close()


@pytest.fixture
def v1_disk(tmp_path):
    need_tools()
    return build_disk(tmp_path / "disk")


@pytest.fixture
def lab():
    """The helpers above, for test modules (conftest is not importable)."""
    import types

    need_tools()
    return types.SimpleNamespace(release=release_artefacts, build_disk=build_disk, sha=sha, run=run,
                                 Target=Target, SlotImage=SlotImage, squashfs=squashfs)


HW = "t640"


def release_cli(*args: str) -> str:
    exe = Path(sys.executable).with_name("osiris-release")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from osiris_release.cli import main; main()"]
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr + res.stdout
    return res.stdout


class Appliance:
    """A v1 disk, a TUF repository (osiris-release) served over HTTPS, the
    runner's settings; helpers to publish, run and look at the disk."""

    def __init__(self, tmp: Path, server, lab, *, booted: str = "1", timestamp_expiry: str = "1d",
                 disk: Path | None = None) -> None:
        self.tmp, self.server, self.lab = tmp, server, lab
        self.disk = disk if disk is not None else lab.build_disk(tmp / "disk")[0]
        self.repo, self.keys = server.root, tmp / "online-keys"
        release_cli("keygen", str(tmp / "root.key"))
        release_cli("init", "--repo", str(self.repo), "--keys", str(self.keys), "--root-key", str(tmp / "root.key"),
                    "--timestamp-expiry", timestamp_expiry)
        self.trusted_root = tmp / "trusted-root.json"
        shutil.copy(self.repo / "metadata" / "1.root.json", self.trusted_root)
        self.state = tmp / "state"
        self.settings = tmp / "settings.json"
        self.settings.write_text(json.dumps({"plugins": {"update-ab": {
            "repository": server.url, "trusted_root": str(self.trusted_root), "cafile": str(server.pki.ca_file),
            "hardware": HW, "disk": str(self.disk), "esp": "image", "booted_version": booted,
            "state_dir": str(self.state), "tries": 3, "runner": "inline"}}}))
        self.releases = {}

    def publish(self, version: str, hardware: str = HW, *, uki: Path | None = None, image: Path | None = None):
        """Publish ``version`` (artefacts made here, or the given UKI and slot image)."""
        a = self.lab.release(self.tmp / f"v{version}", version) if uki is None else None
        release_cli("publish", "--repo", str(self.repo), "--keys", str(self.keys), "--version", version,
                    "--hardware", hardware, "--uki", str(uki or a.uki_file), "--image", str(image or a.image_file),
                    "--compression", "zstd")
        self.releases[version] = a
        return a

    def start(self, action: str = "apply", pause: str | None = None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "OSIRIS_UPDATE_TEST_PAUSE"}
        if pause:
            env["OSIRIS_UPDATE_TEST_PAUSE"] = pause
        return subprocess.Popen([sys.executable, "-m", "osiris_update_ab.runner", "--settings", str(self.settings), action],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def run(self, action: str = "apply") -> tuple[int, str, str]:
        p = self.start(action)
        out, err = p.communicate(timeout=600)
        return p.returncode, out, err

    # -- what is on the disk
    def slots(self):
        return gpt.slots(self.disk)

    def region(self, start: int, size: int) -> str:
        with open(self.disk, "rb") as f:
            f.seek(start)
            return hashlib.sha256(f.read(size)).hexdigest()

    def outside(self, part) -> str:
        data = self.disk.read_bytes()
        return hashlib.sha256(data[:part.start] + data[part.start + part.size:]).hexdigest()

    def esp_names(self) -> list[str]:
        return ImageEsp(self.disk).names()

    def esp_sha(self, name: str) -> str:
        return ImageEsp(self.disk).digest(name)[1]

    def journal(self) -> list[dict]:
        p = self.state / "journal.jsonl"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []

    def status(self) -> dict:
        return json.loads((self.state / "status.json").read_text())


@pytest.fixture
def make_appliance(tmp_path, server, lab):
    return lambda **kw: Appliance(tmp_path, server, lab, **kw)


@pytest.fixture
def appliance(make_appliance):
    return make_appliance()
