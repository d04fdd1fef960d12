/**
 * Process and mount hygiene for the benchmark harness: every process it starts is recorded by PID
 * and stopped by PID; every mount and scratch path is registered for cleanup, which runs in reverse
 * order whether the run succeeds, fails, or is interrupted.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Every child the harness started and has not seen exit, so an interrupt can stop them by PID. */
const children = new Set<ChildProcess>();

/** Starts a process and tracks it until it exits. */
export function spawnTracked(cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, options);
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', () => children.delete(child));
  return child;
}

/** Runs a command to completion (tracked, so an interrupt stops it); never throws for a non-zero exit. */
export function run(cmd: string, args: string[], options: { timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((done) => {
    const child = spawnTracked(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = options.timeoutMs
      ? setTimeout(() => {
          stderr += `\n(killed after ${options.timeoutMs} ms)`;
          if (child.pid) killQuietly(child.pid, 'SIGKILL');
        }, options.timeoutMs)
      : undefined;
    child.once('error', (err) => {
      if (timer) clearTimeout(timer);
      done({ code: 127, stdout, stderr: stderr + err.message });
    });
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      done({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** Runs a command and returns its stdout; throws with its stderr when it fails. */
export async function sh(cmd: string, args: string[], options: { timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${(r.stderr.trim() || r.stdout.trim()).slice(-800)}`);
  return r.stdout;
}

export function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* already gone */
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Waits for a process to exit; returns false on timeout. */
export async function waitExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** Sends `signal`, waits, then SIGKILLs if the process is still there. */
export async function stopPid(pid: number, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!processAlive(pid)) return;
  killQuietly(pid, signal);
  if (await waitExit(pid, graceMs)) return;
  killQuietly(pid, 'SIGKILL');
  await waitExit(pid, 5000);
}

/** Stops every child still running (an interrupt): SIGTERM, then SIGKILL. */
export async function stopAllChildren(): Promise<void> {
  const pids = [...children].map((c) => c.pid).filter((p): p is number => p !== undefined);
  await Promise.all(pids.map((pid) => stopPid(pid, 'SIGTERM', 5000)));
}

/** Mount points in /proc/self/mountinfo (octal escapes decoded) with their filesystem type. */
export function mounts(): { mountpoint: string; fstype: string }[] {
  const decode = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: { mountpoint: string; fstype: string }[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    out.push({ mountpoint: decode(fields[4]!), fstype: sep >= 0 ? fields[sep + 1]! : '?' });
  }
  return out;
}

export function isMounted(path: string): boolean {
  return mounts().some((m) => m.mountpoint === path);
}

/** Mounts at `prefix` or below it. */
export function mountsUnder(prefix: string): { mountpoint: string; fstype: string }[] {
  return mounts().filter((m) => m.mountpoint === prefix || m.mountpoint.startsWith(prefix.endsWith('/') ? prefix : prefix + '/'));
}

/** Processes whose command line or working directory mentions `prefix` (leftovers of an earlier run). */
export function processesUnder(prefix: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${pid}/cwd`);
      } catch {
        /* not ours to read */
      }
      if ((cmdline.includes(prefix) || cwd.startsWith(prefix)) && processAlive(pid)) out.push({ pid, cmdline });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

let clockTicks: number | undefined;

async function ticksPerSecond(): Promise<number> {
  if (clockTicks === undefined) {
    const r = await run('getconf', ['CLK_TCK']);
    const n = Number(r.stdout.trim());
    clockTicks = r.code === 0 && n > 0 ? n : 100;
  }
  return clockTicks;
}

/** User + system CPU seconds a process has used so far (all its threads), from /proc/PID/stat. */
export async function cpuSeconds(pid: number): Promise<number | undefined> {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name may contain spaces and parentheses; the fields after the last ')' are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the name: state is field 3 (index 0 here); utime and stime are fields 14 and 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / (await ticksPerSecond());
}

/** Unmounts a FUSE mount: politely first, then lazily (a dead or busy mount). */
export async function unmountFuse(path: string): Promise<void> {
  if (!isMounted(path)) return;
  await run('umount', [path]);
  if (!isMounted(path)) return;
  await run('umount', ['-l', path]);
  if (!isMounted(path)) return;
  await run('umount', ['-l', path]);
}

/** Waits until `path` is a mount point; fails early if `pid` exits first. */
export async function waitForMount(path: string, options: { pid?: number; timeoutMs: number; what: string; log?: () => string }): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  while (!isMounted(path)) {
    if (options.pid !== undefined && !processAlive(options.pid)) {
      throw new Error(`${options.what} exited before ${path} was mounted${options.log ? `: ${options.log().trim().slice(-600)}` : ''}`);
    }
    if (Date.now() > deadline) throw new Error(`${options.what} did not mount ${path} within ${options.timeoutMs / 1000} s`);
    await sleep(50);
  }
}

/**
 * Cleanup steps, run last-registered first. Each step runs once even if `runAll` is called again
 * (an interrupt during a normal cleanup); errors are collected, not thrown, so every step runs.
 */
export class Cleanup {
  private steps: { label: string; fn: () => Promise<void> }[] = [];

  add(label: string, fn: () => Promise<void>): void {
    this.steps.push({ label, fn });
  }

  /** Runs the steps registered after `mark` (a target's own cleanup) and removes them. */
  mark(): number {
    return this.steps.length;
  }

  async runFrom(mark: number): Promise<string[]> {
    const errors: string[] = [];
    while (this.steps.length > mark) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        errors.push(`${step.label}: ${(err as Error).message}`);
      }
    }
    return errors;
  }

  runAll(): Promise<string[]> {
    return this.runFrom(0);
  }
}
