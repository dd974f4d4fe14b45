# Helpers the image VM tests put in front of their test scripts: a disk for
# a machine backed by an image (copy-on-write, larger than the image so the
# data partition has room), and what is on a disk's ESP afterwards, read on
# the host with mtools as the boot lab does.
import json
import os
import subprocess
import tempfile


def disk_from(qemu_img, image, size="8G"):
    path = tempfile.NamedTemporaryFile(suffix=".qcow2", delete=False).name
    subprocess.run([qemu_img, "create", "-f", "qcow2", "-b", image, "-F", "raw", path, size], check=True)
    os.environ["NIX_DISK_IMAGE"] = path
    return path


def esp_files(qemu_img, sfdisk, mdir, disk, directory):
    raw = disk + ".raw"
    subprocess.run([qemu_img, "convert", "-O", "raw", disk, raw], check=True)
    table = json.loads(subprocess.run([sfdisk, "-J", raw], check=True, capture_output=True, text=True).stdout)
    esp = next(p for p in table["partitiontable"]["partitions"] if p.get("name") == "ESP")
    out = subprocess.run([mdir, "-b", "-i", f"{raw}@@{int(esp['start']) * 512}", "::" + directory],
                         check=True, capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return sorted(line.rsplit("/", 1)[-1] for line in out.stdout.splitlines() if line.strip())
