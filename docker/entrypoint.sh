#!/bin/sh
# Mounts the stores in $VDISKFS_SOURCE (a volume of NAME.vdisk descriptors) at $VDISKFS_MOUNTPOINT
# and serves in the foreground; `docker stop` (SIGTERM) flushes and unmounts.
# Any arguments are passed to `vdiskfs mount` (e.g. --views raw,vhdx,vhd,vmdk), or run another
# vdiskfs command: docker run … vdiskfs create flat /stores/web.vdisk --size 8G
set -e
if [ "$1" = "vdiskfs" ]; then
  shift
  exec node /opt/vdiskfs/dist/cli/main.js "$@"
fi
mkdir -p "$VDISKFS_MOUNTPOINT"
exec node /opt/vdiskfs/dist/cli/main.js mount "$VDISKFS_SOURCE" "$VDISKFS_MOUNTPOINT" --foreground "$@"
