#!/usr/bin/env bash
# Installs the system packages vdiskfs and its tests use, on Debian 12 (also used by docker/Dockerfile).
# Idempotent and quick when everything is present: apt runs only for what is missing.
#   scripts/install-deps.sh          runtime + test tools
#   scripts/install-deps.sh runtime  only what a mount needs (fuse3: /etc/fuse.conf, fusermount3)
set -euo pipefail

runtime=(fuse3)
# g++, make and python3 build native/sys (node-gyp). qemu-system-common ships qemu-storage-daemon (the FUSE-export peer in make bench); linux-perf
# traces the LBS data file's writes for the benchmark's write-pattern figures.
tools=(g++ make python3 qemu-utils qemu-system-common libvhdi-utils fio e2fsprogs util-linux psmisc xmount linux-perf)
want=("${runtime[@]}")
[ "${1:-all}" = runtime ] || want+=("${tools[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "vdiskfs: these Debian packages are missing: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "vdiskfs: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
