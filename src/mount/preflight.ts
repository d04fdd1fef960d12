/**
 * Checks made before anything is opened or mounted, each failing with a one-line message that names
 * the problem and what to do about it.
 */
import { access, readdir, readFile, stat } from 'node:fs/promises';
import { constants } from 'node:fs';
import { VdiskError } from '../errors.js';
import { mountAt } from './mountinfo.js';
import { unmountKernel } from '../fuse/kernel-channel.js';

export async function checkMountPreconditions(source: string, mountpoint: string): Promise<{ allowOther: boolean }> {
  // allow_other lets QEMU, the loop driver and other users open the views. Root may always set it;
  // anyone else needs user_allow_other in /etc/fuse.conf.
  const conf = process.getuid?.() === 0 ? '' : await readFile('/etc/fuse.conf', 'utf8').catch(() => '');
  if (process.getuid?.() !== 0 && !/^\s*user_allow_other\s*$/m.test(conf)) {
    throw new VdiskError('EPERM', 'not running as root and /etc/fuse.conf lacks user_allow_other: run as root, or add that line');
  }

  // Root opens /dev/fuse itself; anyone else goes through the setuid fusermount3, which does.
  if (process.getuid?.() === 0) {
    try {
      await access('/dev/fuse', constants.R_OK | constants.W_OK);
    } catch {
      throw new VdiskError(
        'ENODEV',
        '/dev/fuse is missing or not accessible: load the fuse module (modprobe fuse), or in Docker pass --device /dev/fuse --cap-add SYS_ADMIN',
      );
    }
  }

  try {
    const st = await stat(source);
    if (!st.isDirectory()) throw new VdiskError('ENOTDIR', `source ${source} is not a directory`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new VdiskError('ENOENT', `source directory ${source} does not exist`);
    throw err;
  }

  const existing = await mountAt(mountpoint);
  if (existing) {
    // A dead FUSE mount (daemon killed) is cleaned up by the mount itself (force); anything live is refused.
    let dead = false;
    try {
      await stat(mountpoint);
    } catch (err) {
      dead = (err as NodeJS.ErrnoException).code === 'ENOTCONN';
    }
    if (!dead) {
      throw new VdiskError('EBUSY', `${mountpoint} is already a mount point (${existing.fstype}); unmount it first (vdiskfs unmount ${mountpoint})`);
    }
    // A daemon that died left its mount behind (its watchdog normally detaches it): detach it now.
    await unmountKernel(mountpoint, true).catch(() => {});
  } else {
    let st;
    try {
      st = await stat(mountpoint);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new VdiskError('ENOENT', `mount point ${mountpoint} does not exist; create it with: mkdir -p ${mountpoint}`);
      }
      throw err;
    }
    if (!st.isDirectory()) throw new VdiskError('ENOTDIR', `mount point ${mountpoint} is not a directory`);
    if ((await readdir(mountpoint)).length > 0) {
      throw new VdiskError('ENOTEMPTY', `mount point ${mountpoint} is not empty; use an empty directory`);
    }
  }

  return { allowOther: true };
}
