#!/usr/bin/env bash
# `make demo`: creates a demo store under ./demo on first run and mounts it at ./demo/mnt in the
# foreground. Ctrl-C flushes and unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="node dist/cli/main.js"
mkdir -p demo/stores demo/mnt
if [ ! -e demo/stores/demo.vdisk ]; then
  $CLI create flat demo/stores/demo.vdisk --size 1G
fi
mnt=$(cd demo/mnt && pwd)
cat <<EOT

vdiskfs demo: mounting $mnt. In another shell, try:

  ls -l $mnt
  qemu-img info $mnt/demo.vhdx          # the same disk, as a VHDX
  LOOP=\$(losetup -f --show $mnt/demo.raw)
  mkfs.ext4 -q \$LOOP && mkdir -p /tmp/demo-fs && mount \$LOOP /tmp/demo-fs
  echo hello > /tmp/demo-fs/hello.txt
  umount /tmp/demo-fs && losetup -d \$LOOP   # before you stop the demo

Press Ctrl-C here to flush and unmount.

EOT
exec $CLI mount demo/stores demo/mnt --foreground --log-level warn
