/**
 * The one-writer lock: a live holder keeps it, a dead one does not — including a zombie (kill(pid, 0)
 * still succeeds on one, and PID 1 never reaps on these machines) and a PID now used by another
 * program.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { acquirePidLock, lockHolder, processAlive } from '../src/util/pid-lock.js';
import { scratchDir } from './support/tmp.js';

const dir = await scratchDir();

/** A zombie for a few seconds: `sleep 0` exits, and its parent exec()s into a sleep that never waits. */
async function zombie(): Promise<{ pid: number; stop(): void }> {
  const sh = spawn('/bin/sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const pid = await new Promise<number>((done) => sh.stdout!.once('data', (d) => done(Number(String(d).trim()))));
  for (let i = 0; i < 100 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  return { pid, stop: () => sh.kill('SIGKILL') };
}

describe('PID locks', () => {
  it('a live holder keeps the lock; its release frees it', async () => {
    const path = join(dir, 'a.lock');
    const release = await acquirePidLock(path, (pid) => `held by ${pid}`);
    expect(await lockHolder(path)).toBe(process.pid);
    await release();
    expect(await lockHolder(path)).toBeUndefined();
  });

  it('a zombie holder does not keep the lock', async () => {
    const z = await zombie();
    try {
      let killZero = true;
      try { process.kill(z.pid, 0); } catch { killZero = false; }
      expect(killZero, 'the test made a zombie: kill(pid, 0) still succeeds').toBe(true);
      expect(processAlive(z.pid)).toBe(false);
      const path = join(dir, 'z.lock');
      await writeFile(path, `${z.pid}\n`);
      const release = await acquirePidLock(path, (pid) => `held by ${pid}`);
      expect(await lockHolder(path)).toBe(process.pid);
      await release();
    } finally {
      z.stop();
    }
  });

  it('a PID reused by another program does not keep the lock', async () => {
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const path = join(dir, 'r.lock');
      await writeFile(path, `${other.pid} 1\n`); // started at tick 1: not this sleep
      expect(await lockHolder(path)).toBeUndefined();
      const release = await acquirePidLock(path, (pid) => `held by ${pid}`);
      await release();
    } finally {
      other.kill('SIGKILL');
    }
  });
});
