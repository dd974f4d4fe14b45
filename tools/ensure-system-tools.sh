#!/usr/bin/env bash
# Install the Debian tools the test suite uses as independent checkers, when
# they are missing. A fresh CI machine has only Python and the repository.
set -euo pipefail
need=()
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v openssl >/dev/null || need+=(openssl)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v grub-editenv >/dev/null || need+=(grub-common)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing tools: ${need[*]}; install them with your package manager (Debian: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
