/**
 * `vdiskfs unmount MOUNTPOINT`: unmounts (refusing while a view is still in use), then stops the
 * daemon, which flushes and closes every store. Also cleans up after a daemon that was killed.
 */
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { unmountKernel } from '../../fuse/kernel-channel.js';
import { mountAt } from '../../mount/mountinfo.js';
import { processAlive, readMountState, removeMountState } from '../../mount/runtime-state.js';
import { VdiskError } from '../../errors.js';
import { print, defineCommand } from '../output.js';

interface Args {
  mountpoint: string;
  lazy: boolean;
  wait: number;
}

export const unmountCommand = defineCommand<Args>({
  command: 'unmount <mountpoint>',
  aliases: ['umount'],
  describe: 'Flush every store and unmount; also cleans up after a daemon that was killed',
  builder: (y) =>
    y
      .positional('mountpoint', { type: 'string', demandOption: true })
      .option('lazy', { type: 'boolean', default: false, describe: 'Detach even while views are in use (their users will get I/O errors)' })
      .option('wait', { type: 'number', default: 120, describe: 'Seconds to wait for the daemon to flush and exit' }),
  handler: async (args) => {
    const mountpoint = resolve(args.mountpoint);
    const state = await readMountState(mountpoint);
    const mount = await mountAt(mountpoint);
    if (mount && !mount.fstype.startsWith('fuse')) {
      throw new VdiskError('EINVAL', `${mountpoint} is a ${mount.fstype} mount, not vdiskfs`);
    }
    if (!mount && !state) throw new VdiskError('EINVAL', `${mountpoint} is not a vdiskfs mount`);

    if (mount) {
      try {
        await unmountKernel(mountpoint, args.lazy);
      } catch (err) {
        if ((err as { busy?: boolean }).busy) {
          throw new VdiskError('EBUSY', `${mountpoint} is busy: a loop device or a process still uses a view (see losetup -a, fuser -vm ${mountpoint}); detach it first, or use --lazy`);
        }
        // A dead mount (daemon killed without auto-unmount) can only be detached lazily.
        await unmountKernel(mountpoint, true);
      }
    }

    const alive = state !== undefined && processAlive(state.pid);
    if (state && alive) {
      // The kernel mount is gone; the daemon now flushes and closes its stores, then exits.
      process.kill(state.pid, 'SIGTERM');
      const deadline = Date.now() + args.wait * 1000;
      while (processAlive(state.pid)) {
        if (Date.now() > deadline) {
          throw new VdiskError('ETIMEDOUT', `unmounted, but daemon ${state.pid} is still flushing after ${args.wait} s; see ${state.logFile ?? 'its log'}`);
        }
        await sleep(50);
      }
    }
    await removeMountState(mountpoint);
    if (mount) print(`unmounted ${mountpoint}`);
    else print(`${mountpoint} was no longer mounted (daemon ${state!.pid} had exited); cleaned up`);
  },
});
