/**
 * PID lock files: "one writer at a time" for a store. The lock holds the owner's PID; a lock left
 * by a dead process (kill -9) is taken over. The file is written in full under a temporary name and
 * then linked into place, so nobody ever reads a half-written lock and mistakes it for a stale one.
 */
import { link, readFile, rm, writeFile } from 'node:fs/promises';
import { VdiskError } from '../errors.js';

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The live process holding the lock at `path` (this one included), if any. */
export async function lockHolder(path: string): Promise<number | undefined> {
  const pid = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
  return Number.isSafeInteger(pid) && pid > 0 && (pid === process.pid || processAlive(pid)) ? pid : undefined;
}

/**
 * Takes the lock at `path`, or throws EBUSY with `busy(pid)` as the message. Returns its release.
 */
export async function acquirePidLock(path: string, busy: (pid: number) => string, mode = 0o600): Promise<() => Promise<void>> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${process.pid}\n`, { mode });
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await link(tmp, path);
        let released = false;
        return async () => {
          if (released) return;
          released = true;
          await rm(path, { force: true });
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = await lockHolder(path);
        if (holder !== undefined) throw new VdiskError('EBUSY', busy(holder));
        await rm(path, { force: true }); // stale: its process is gone
      }
    }
    throw new VdiskError('EBUSY', `cannot take the lock ${path}: it keeps reappearing`);
  } finally {
    await rm(tmp, { force: true });
  }
}
