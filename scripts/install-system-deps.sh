#!/usr/bin/env bash
# Debian packages for the ARM tests: the aarch64 cross toolchain and qemu-user. Skips what is present.
set -euo pipefail
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[ ${#need[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null || { echo "no apt-get: cannot install ${need[*]}"; exit 1; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
