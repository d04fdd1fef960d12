/**
 * Runtime state of a mount: a small JSON file per mount point (daemon PID, source, log file), so that
 * `vdiskfs unmount` can find the daemon to flush and stop it, even from another shell.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
export { processAlive } from '../util/pid-lock.js';

export interface MountState {
  pid: number;
  mountpoint: string;
  source: string;
  logFile?: string;
  startedAt: string;
}

export function stateDir(): string {
  if (process.env.VDISKFS_RUN_DIR) return process.env.VDISKFS_RUN_DIR;
  return process.getuid?.() === 0 ? '/run/vdiskfs' : join(tmpdir(), `vdiskfs-${process.getuid?.() ?? 'user'}`);
}

function stateFile(mountpoint: string): string {
  const key = createHash('sha256').update(resolve(mountpoint)).digest('hex').slice(0, 16);
  return join(stateDir(), `${key}.json`);
}

export async function writeMountState(state: MountState): Promise<void> {
  await mkdir(stateDir(), { recursive: true, mode: 0o700 });
  await writeFile(stateFile(state.mountpoint), JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
}

export async function readMountState(mountpoint: string): Promise<MountState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(mountpoint), 'utf8')) as MountState;
  } catch {
    return undefined;
  }
}

export async function removeMountState(mountpoint: string): Promise<void> {
  await rm(stateFile(mountpoint), { force: true });
}

export function defaultLogFile(mountpoint: string): string {
  const key = createHash('sha256').update(resolve(mountpoint)).digest('hex').slice(0, 16);
  return join(stateDir(), `${key}.log`);
}
