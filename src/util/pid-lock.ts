/**
 * PID lock files: "one writer at a time" for a store. The lock holds the owner's PID and its start
 * time; a lock left by a dead process (kill -9) is taken over. Dead includes a zombie (where PID 1
 * never reaps, as on these machines and in many containers, kill(pid, 0) still succeeds on one) and
 * a PID since reused by another program (its start time differs). The file is written in full under
 * a temporary name and then linked into place, so nobody ever reads a half-written lock and mistakes
 * it for a stale one.
 */
import { readFileSync } from 'node:fs';
import { link, readFile, rm, writeFile } from 'node:fs/promises';
import { VdiskError } from '../errors.js';

/** State and start time (clock ticks since boot) from /proc/PID/stat; undefined without /proc. */
function procStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0]!, startTime: fields[19]! };
  } catch {
    return undefined;
  }
}

/** Whether `pid` runs (a zombie does not); with `startTime`, whether it is still that process. */
export function processAlive(pid: number, startTime?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const st = procStat(pid);
  if (!st) return true; // no /proc: kill(pid, 0) is all we know
  if (st.state === 'Z' || st.state === 'X') return false;
  return startTime === undefined || st.startTime === startTime;
}

/** The live process holding the lock at `path` (this one included), if any. */
export async function lockHolder(path: string): Promise<number | undefined> {
  const [pidText, startTime] = (await readFile(path, 'utf8').catch(() => '')).trim().split(/\s+/);
  const pid = Number.parseInt(pidText ?? '', 10);
  return Number.isSafeInteger(pid) && pid > 0 && (pid === process.pid || processAlive(pid, startTime)) ? pid : undefined;
}

/**
 * Takes the lock at `path`, or throws EBUSY with `busy(pid)` as the message. Returns its release.
 */
export async function acquirePidLock(path: string, busy: (pid: number) => string, mode = 0o600): Promise<() => Promise<void>> {
  const tmp = `${path}.${process.pid}.tmp`;
  const started = procStat(process.pid)?.startTime;
  await writeFile(tmp, started ? `${process.pid} ${started}\n` : `${process.pid}\n`, { mode });
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
