#!/usr/bin/env bash
# Install the Debian tools the test suite uses as independent checkers, when
# they are missing. A fresh CI machine has only Python and the repository.
set -euo pipefail
need=()
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v openssl >/dev/null || need+=(openssl)
command -v systemd-analyze >/dev/null || need+=(systemd)
# The boot lab (make boot-lab, tests/test_boot_lab.py): QEMU with OVMF, Debian's
# systemd-boot and its UKI stub, the tools that build its disk and UKIs
# (objcopy), a static busybox for its guest.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
{ [ -e /usr/lib/systemd/boot/efi/systemd-bootx64.efi ] && [ -e /usr/lib/systemd/boot/efi/linuxx64.efi.stub ]; } \
  || need+=(systemd-boot-efi)
command -v objcopy >/dev/null || need+=(binutils)
command -v mcopy >/dev/null || need+=(mtools)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v systemd-repart >/dev/null || need+=(systemd)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
# The status page's browser tests (Playwright drives Debian's Chromium, no
# browser download) and the report's PDF checks (pdftotext, pdftoppm).
command -v chromium >/dev/null || need+=(chromium)
command -v pdftotext >/dev/null || need+=(poppler-utils)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing tools: ${need[*]}; install them with your package manager (Debian: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
