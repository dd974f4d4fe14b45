"""bench/update: the installer's one streamed pass against dd.

A slot image of --size-mib (default 1024) is published with the real
`osiris-release` (zstd) into a TUF repository served over HTTPS on
loopback; the real runner (`python -m osiris_update_ab.runner apply`, its
own process) installs it into slot B of a GPT disk image file (download,
decompress, both sha256s, write, fsync, read back past the page cache,
label, UKI). Beside it, in the same run and onto the same file system,
`dd if=<the uncompressed image> of=<file> bs=1M conv=fsync`. Alternated,
--rounds times each (default 2), the best of each kept.

Figures: MB/s of each (image bytes over the process's wall time), their
ratio (target >= 0.9), the installer's peak RSS (its VmHWM, read from
/proc while it runs; target <= 64 MiB). The last line is one JSON
object with every figure, its target and whether it was met.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_RATIO = 0.9
TARGET_RSS_MIB = 64
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
USR_TYPE = "8484680C-9521-48C6-9C11-B0720656F69E"
MIB = 1 << 20
ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def sh(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if res.returncode != 0:
        sys.exit(f"bench/update: {' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()[-500:]}")
    return res.stdout


def release_cli(*args: str) -> str:
    exe = Path(sys.executable).with_name("osiris-release")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from osiris_release.cli import main; main()"]
    return sh(*cmd, *args)


def make_image(path: Path, size: int) -> str:
    """Slot-image-like bytes: per MiB, 5/8 random (a store's already
    compressed files) and 3/8 text-like repetition, so zstd has work."""
    text = (b"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-osiris-agent-0.1.0/lib/python3.11/site-packages\n" * 5000)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            block = os.urandom(5 * MIB // 8) + text[: 3 * MIB // 8]
            f.write(block)
            h.update(block)
    return h.hexdigest()


def make_disk(path: Path, slot: int, work: Path) -> None:
    """A GPT disk image file: ESP (vfat, osiris_1.efi), slot A osiris_1, slot B _empty."""
    esp = 48 * MIB
    with open(path, "wb") as f:
        f.truncate(2 * MIB + esp + 2 * slot + 2 * MIB)
    script = (f"label: gpt\nsize={esp // 512}, type={ESP_TYPE}, name=ESP\n"
              f"size={slot // 512}, type={USR_TYPE}, name=osiris_1\n"
              f"size={slot // 512}, type={USR_TYPE}, name=_empty\n")
    subprocess.run(["sfdisk", "--quiet", str(path)], input=script, text=True, check=True, capture_output=True)
    start = int(json.loads(sh("sfdisk", "--json", str(path)))["partitiontable"]["partitions"][0]["start"]) * 512
    img = work / "esp.img"
    sh("mkfs.vfat", "-C", "-F", "32", "-n", "ESP", str(img), str(esp // 1024))
    uki = work / "osiris_1.efi"
    uki.write_bytes(b"MZ" + os.urandom(300_000))
    sh("mmd", "-i", str(img), "::/EFI", "::/EFI/Linux")
    sh("mcopy", "-i", str(img), str(uki), "::/EFI/Linux/osiris_1.efi")
    sh("dd", f"if={img}", f"of={path}", "bs=1M", f"seek={start}", "oflag=seek_bytes", "conv=notrunc,fsync", "status=none")
    img.unlink()


def vm_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in KiB, CPU seconds). The peak is the child's VmHWM read
    from /proc every 10 ms until it exits (the high-water mark of its own
    memory). Not wait4's ru_maxrss: Linux carries the parent's high-water
    mark into a vforked child's at exec, so that would report this
    process's size, not the installer's."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or ENV)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    reader.start()
    peak, cpu = 0, 0.0
    while proc.poll() is None:
        peak = max(peak, vm_hwm(proc.pid) or 0)
        cpu = max(cpu, cpu_seconds(proc.pid) or 0.0)
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    reader.join()
    if proc.returncode != 0:
        sys.exit(f"bench/update: {' '.join(cmd)}: exit {proc.returncode}: {b''.join(err).decode()[-800:]}")
    return seconds, peak, cpu


def phase_times(journal: Path, started: str) -> dict[str, float]:
    """Seconds from the install's start to each journalled step."""
    import datetime as dt

    def t(x: str) -> float:
        return dt.datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp()

    t0 = t(started)
    return {r["step"]: round(t(r["at"]) - t0, 2) for r in map(json.loads, journal.read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "plugins" / "update-ab" / "tests"))
    from conftest import Server  # the tests' HTTPS server on loopback (osiris_lab.pki's test CA)

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-update-", dir=REPO / ".cache" if (REPO / ".cache").is_dir() else None))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MIB
    try:
        t = time.perf_counter()
        raw = work / "slot.img"
        image_sha = make_image(raw, size)
        uki = work / "osiris_2.efi"
        uki.write_bytes(b"MZ" + os.urandom(300_000))
        served = work / "served"
        served.mkdir(exist_ok=True)
        server = Server(served, work)
        release_cli("keygen", str(work / "root.key"))
        release_cli("init", "--repo", str(served), "--keys", str(work / "keys"), "--root-key", str(work / "root.key"))
        out = json.loads(release_cli("publish", "--repo", str(served), "--keys", str(work / "keys"), "--version", "2",
                                     "--hardware", "bench", "--uki", str(uki), "--image", str(raw), "--compression",
                                     "zstd", "--json"))
        compressed = out["image"]["length"]
        disk = work / "disk.img"
        dd_out = work / "dd.img"
        prep = time.perf_counter() - t
        settings = work / "settings.json"
        # An appliance runs from compiled bytecode (the Nix store's .pyc);
        # this environment sets PYTHONDONTWRITEBYTECODE, which would make the
        # installer compile ~400 modules on every start. Bytecode goes to a
        # private prefix, compiled once before the first timed run.
        runner_env = {k: v for k, v in ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}
        runner_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        subprocess.run([sys.executable, "-c", "import osiris_update_ab.runner"], env=runner_env, check=True)
        installer, dd, rss, cpus, phases = [], [], [], [], []
        for r in range(args.rounds):
            make_disk(disk, size + MIB, work)
            state = work / f"state-{r}"
            settings.write_text(json.dumps({
                "repository": server.url, "trusted_root": str(served / "metadata" / "1.root.json"),
                "cafile": str(server.pki.ca_file), "hardware": "bench", "disk": str(disk), "esp": "image",
                "booted_version": "1", "state_dir": str(state), "runner": "inline"}))
            dd_out.unlink(missing_ok=True)
            s, _, _ = timed(["dd", f"if={raw}", f"of={dd_out}", "bs=1M", "conv=fsync", "status=none"])
            dd.append(s)
            s, maxrss, cpu = timed([sys.executable, "-m", "osiris_update_ab.runner", "--settings", str(settings), "apply"],
                              runner_env)
            installer.append(s)
            rss.append(maxrss)
            cpus.append(cpu)
            st = json.loads((state / "status.json").read_text())
            assert st["phase"] == "installed" and st["bytes_done"] == size, st
            phases.append(phase_times(state / "journal.jsonl", st["started"]))
        server.close()
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    mb = size / 1e6
    best_i, best_d = min(installer), min(dd)
    ratio = (mb / best_i) / (mb / best_d)
    peak_mib = max(rss) / 1024
    rows = [
        ("slot image", f"{args.size_mib} MiB", f"zstd {compressed / 1e6:,.1f} MB ({size / compressed:.2f} x), sha256 {image_sha[:12]}"),
        ("dd bs=1M conv=fsync", f"{mb / best_d:,.1f} MB/s", "best of " + ", ".join(f"{x:.1f} s" for x in dd)),
        ("installer (runner apply)", f"{mb / best_i:,.1f} MB/s", "best of " + ", ".join(f"{x:.1f} s" for x in installer)
         + "; process start, HTTPS, TUF refresh, zstd, sha256 x 2, write, read-back, label, UKI"),
        ("installer CPU", f"{cpus[installer.index(best_i)]:.1f} s", "user + system of the best round; "
         + ", ".join(f"{k} at {v:.1f} s" for k, v in phases[installer.index(best_i)].items())),
        ("installer / dd", f"{ratio:.2f} x", f"target >= {TARGET_RATIO} x"),
        ("installer peak RSS", f"{peak_mib:.1f} MiB", "each round: " + ", ".join(f"{x / 1024:.1f}" for x in rss)
         + f" MiB; target <= {TARGET_RSS_MIB} MiB"),
        ("setup (image, publish)", f"{prep:.0f} s", ""),
    ]
    print(f"bench/update: {args.size_mib} MiB slot image, {args.rounds} rounds, same file system ({work.parent}), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, value, note in rows:
        print(f"  {name:<26} {value:>14}  {note}")
    ratio_met, rss_met = ratio >= TARGET_RATIO, peak_mib <= TARGET_RSS_MIB
    print("targets:")
    print(f"  installer >= {TARGET_RATIO} x dd: {ratio:.2f} x -> {'met' if ratio_met else 'MISSED'}")
    print(f"  installer peak RSS <= {TARGET_RSS_MIB} MiB: {peak_mib:.1f} MiB -> {'met' if rss_met else 'MISSED'}")
    print(json.dumps({
        "bench": "update", "size_mib": args.size_mib, "rounds": args.rounds, "compressed_bytes": compressed,
        "dd_seconds": dd, "installer_seconds": installer, "dd_mb_s": round(mb / best_d, 1),
        "installer_mb_s": round(mb / best_i, 1), "ratio": round(ratio, 3), "ratio_target": TARGET_RATIO,
        "ratio_met": ratio_met, "peak_rss_mib": round(peak_mib, 1), "peak_rss_each_mib": [round(x / 1024, 1) for x in rss],
        "peak_rss_target_mib": TARGET_RSS_MIB, "peak_rss_met": rss_met, "setup_seconds": round(prep, 1),
        "installer_cpu_seconds": [round(c, 2) for c in cpus], "installer_steps_at": phases,
        "load_average": os.getloadavg()[0]}))
    sys.exit(0 if ratio_met and rss_met else 1)


if __name__ == "__main__":
    main()
