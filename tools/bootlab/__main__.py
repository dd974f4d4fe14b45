"""``make boot-lab``: build the lab's disk and run the scenarios.

    python3 -m bootlab [--scenarios all|quick|NAME,...] [--jobs N]   (from tools/)

Prints one line per scenario as it ends, a summary table, and as its last
line one JSON object with every scenario's result. Exit 0 when every
scenario held, 1 when one did not, 2 when the lab could not be set up."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import disk as disks
from . import guest, kernel, qemu, uki
from .kit import Kit
from .layout import REPO, LayoutError
from .scenarios import (INSTALL_POINTS, Lab, Outcome, ScenarioError, new_image, power_cut, update_after_fallback,
                        update_bad, update_good)

# Debian packages that hold what the lab runs (tools/ensure-system-tools.sh installs them).
TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
         "mksquashfs": "squashfs-tools", "sfdisk": "fdisk", "systemd-repart": "systemd",
         "apt-get": "apt", "dpkg": "dpkg", "ldd": "libc-bin", "objcopy": "binutils", "objdump": "binutils"}
FILES = {str(qemu.OVMF_CODE): "ovmf", str(disks.SYSTEMD_BOOT): "systemd-boot-efi", str(uki.STUB): "systemd-boot-efi",
         str(guest.BUSYBOX): "busybox-static"}
QUICK = ["update-bad", "power-cut@entry-written"]


def scenario_table() -> dict:
    table = {"new-image": None, "update-good": update_good, "update-bad": update_bad,
             "update-after-fallback": update_after_fallback}
    for point in INSTALL_POINTS:
        table[f"power-cut@{point}"] = power_cut(point)
    return table


def missing_tools() -> list[str]:
    need = {pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None}
    need |= {pkg for path, pkg in FILES.items() if not Path(path).exists()}
    return sorted(need)


def systemd_boot_version() -> str:
    m = re.search(rb"LoaderInfo: systemd-boot ([^ ]+)", disks.SYSTEMD_BOOT.read_bytes())
    return m.group(1).decode() if m else "unknown"


def render(outcomes: list[Outcome]) -> str:
    rows = [("SCENARIO", "BOOTS", "VERSIONS SEEN", "ESP ENTRIES AFTER", "VERDICT")]
    for o in outcomes:
        rows.append((o.scenario, str(len(o.boots)), o.versions(), " ".join(o.entries),
                     ("ok: " if o.ok else "FAILED: ") + o.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="boot-lab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default="all", help="all, quick, or a comma-separated list of names")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="machines booting at once")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "boot-lab",
                    help="where the kernel is kept and the lab works (git-ignored)")
    ap.add_argument("--work", type=Path, default=None,
                    help="where this run builds and boots (default: <cache>/run, emptied first)")
    ap.add_argument("--list", action="store_true", help="print the scenario names and exit")
    args = ap.parse_args(argv)
    table = scenario_table()
    if args.list:
        print("\n".join(table))
        return 0
    names = list(table) if args.scenarios == "all" else QUICK if args.scenarios == "quick" else \
        [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"boot-lab: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(table)}", file=sys.stderr)
        return 2
    need = missing_tools()
    if need:
        print(f"boot-lab: missing tools; install them with: apt-get install {' '.join(need)} "
              "(or run tools/ensure-system-tools.sh as root)", file=sys.stderr)
        return 2
    started = time.monotonic()
    args.cache.mkdir(parents=True, exist_ok=True)
    work = args.work or args.cache / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        kit = Kit.prepare(work, args.cache)
        layout, k = kit.layout, kit.kernel
        lab = Lab.build(kit, work)
        # Every update's medium, built before machines start (they share the slot images and UKIs).
        for healthy in (True, False):
            for pause in (True, False):
                lab.medium("2", healthy, pause=pause)
        lab.medium("3", True, pause=False)
    except (LayoutError, kernel.KernelError, guest.GuestError, disks.DiskError, qemu.QemuError,
            uki.UkiError) as exc:
        print(f"boot-lab: setup failed: {exc}", file=sys.stderr)
        return 2
    parts = ", ".join(f"{p.id} {p.type} '{p.label}' {p.lab_size_mib} MiB" for p in layout.lab_partitions())
    print(f"boot-lab: Debian kernel {k.version}, systemd-boot {systemd_boot_version()}, QEMU TCG + OVMF; "
          f"tries {layout.tries}; GPT from iso/layout.json: {parts}", flush=True)

    outcomes: dict[str, Outcome] = {}

    def run(name: str, fn, *a) -> None:
        t = time.monotonic()
        try:
            m, (ok, verdict) = fn(lab, *a)
            boots, entries = m.boots, m.entries()
        except (ScenarioError, disks.DiskError, qemu.QemuError, guest.GuestError) as exc:
            ok, verdict, boots, entries = False, str(exc), [], []
        outcomes[name] = Outcome(name, boots, entries, ok, verdict)
        print(f"  {'ok    ' if ok else 'FAILED'} {name}: {len(boots)} boots in {time.monotonic() - t:.0f} s: {verdict}",
              flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = []
        if "new-image" in names:
            futures.append(pool.submit(run, "new-image", lambda lab_: new_image(lab_)))
        futures += [pool.submit(run, n, table[n], lab.blessed) for n in names if n != "new-image"]
        for f in futures:
            f.result()

    ordered = [outcomes[n] for n in names if n in outcomes]
    print()
    print(render(ordered))
    boots = sum(len(o.boots) for o in ordered)
    seconds = time.monotonic() - started
    ok = all(o.ok for o in ordered) and len(ordered) == len(names)
    print(f"\nboot-lab: {sum(o.ok for o in ordered)}/{len(names)} scenarios held; {boots} boots in {seconds:.0f} s "
          f"(serial logs under {work})")
    print(json.dumps({"passed": ok, "tries": layout.tries, "kernel": k.version,
                      "systemd_boot": systemd_boot_version(), "boots": boots, "seconds": round(seconds, 1),
                      "scenarios": [o.as_dict() for o in ordered]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
