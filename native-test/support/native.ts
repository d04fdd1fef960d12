/**
 * Helpers for native tests: run the built CLI, mount and always unmount, attach and always detach
 * loop devices, and require external tools (a missing tool fails the test loudly, never skips it).
 *
 * The vdiskfs daemon always runs in its own process (never in the test process: a process that
 * touches its own FUSE mount can deadlock).
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, rm, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll } from 'vitest';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command; never throws for a non-zero exit (check `code`). */
export function run(cmd: string, args: string[], options: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((done) => {
    const child = execFile(
      cmd,
      args,
      { timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 << 20, env: options.env ?? process.env },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        done({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Runs a command and returns stdout; throws with its stderr if it fails. */
export async function sh(cmd: string, args: string[], options: { timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** Runs the built vdiskfs CLI. */
export function vdiskfs(args: string[], options: { timeoutMs?: number } = {}): Promise<RunResult> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run make build first`);
  return run(process.execPath, [CLI, ...args], options);
}

/** Fails (loudly, not a skip) if a tool the test needs is not installed. */
export function requireTools(...tools: string[]): void {
  const missing = tools.filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
  if (missing.length) throw new Error(`native test needs ${missing.join(', ')}: run scripts/install-deps.sh (make test does)`);
}

const cleanups: (() => Promise<void>)[] = [];
const scratchDirs: string[] = [];

// Registered when this module is imported (during collection), so it runs after every test file
// that uses these helpers, even when tests fail: hooks registered later (inside beforeAll) would
// be ignored. Mounts and loop devices go first, then the scratch directories they lived in.
afterAll(async () => {
  while (cleanups.length) await cleanups.pop()!().catch((err) => console.error('cleanup:', err.message));
  while (scratchDirs.length) await rm(scratchDirs.pop()!, { recursive: true, force: true });
});

/** A scratch directory under /tmp, removed after the test file (after mounts are gone). */
export async function scratch(prefix = 'vdiskfs-native-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  scratchDirs.push(dir);
  return dir;
}

function isMounted(mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === mnt);
}

export interface Mounted {
  readonly mountpoint: string;
  readonly pid: number;
  readonly logFile: string;
  /** vdiskfs unmount; falls back to fusermount -uz and killing the daemon. Safe to call twice. */
  unmount(): Promise<void>;
}

/**
 * Mounts `source` at a fresh mount point (the daemon in the background), registering an unmount
 * that runs even when the test fails. `args` adds mount options, e.g. ['--views', 'raw,vhdx'].
 */
export async function mountVdiskfs(source: string, args: string[] = [], mountpoint?: string): Promise<Mounted> {
  const mnt = mountpoint ?? (await mkdtemp(join(tmpdir(), 'vdiskfs-mnt-')));
  await mkdir(mnt, { recursive: true });
  const logFile = join(mnt + '.log');
  const r = await vdiskfs(['mount', source, mnt, '--log-file', logFile, ...args]);
  if (r.code !== 0) {
    await rm(mnt, { recursive: true, force: true }).catch(() => {});
    throw new Error(`vdiskfs mount failed (${r.code}): ${r.stderr.trim()}`);
  }
  const pid = Number(/daemon pid (\d+)/.exec(r.stdout)?.[1]);
  let done = false;
  const unmount = async () => {
    if (done) return;
    done = true;
    const u = await vdiskfs(['unmount', mnt]);
    if (u.code !== 0 && isMounted(mnt)) {
      await run('umount', ['-l', mnt]);
    }
    try {
      if (pid) process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await rm(mnt, { recursive: true, force: true }).catch(() => {});
    await rm(logFile, { force: true }).catch(() => {});
    if (u.code !== 0) throw new Error(`vdiskfs unmount failed (${u.code}): ${u.stderr.trim()}`);
  };
  cleanups.push(unmount);
  return { mountpoint: mnt, pid, logFile, unmount };
}

/** Attaches a loop device to `file`; it is detached after the test file even on failure. */
export async function attachLoop(file: string): Promise<{ device: string; detach(): Promise<void> }> {
  const device = (await sh('losetup', ['-f', '--show', file])).trim();
  let done = false;
  const detach = async () => {
    if (done) return;
    done = true;
    await sh('losetup', ['-d', device]);
  };
  cleanups.push(detach);
  return { device, detach };
}

/** Mounts a block device's filesystem at a fresh directory; unmounted after the test file. */
export async function mountFs(device: string): Promise<{ dir: string; unmount(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vdiskfs-fs-'));
  await sh('mount', [device, dir]);
  let done = false;
  const unmount = async () => {
    if (done) return;
    done = true;
    await sh('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  };
  cleanups.push(unmount);
  return { dir, unmount };
}

/** Registers extra cleanup (run in reverse order after the test file, even on failure). */
export function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Writes `count` files of random sizes (1 byte to `maxBytes`) into `dir`; returns name → SHA-256. */
export async function writeRandomFiles(dir: string, count: number, maxBytes: number): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const data = randomBytes(1 + Math.floor(Math.random() * maxBytes));
    await writeFile(join(dir, `f${i}.bin`), data);
    files.set(`f${i}.bin`, sha256(data));
  }
  return files;
}

/** The names in `files` whose content in `dir` no longer has the recorded SHA-256 (expect []). */
export async function changedFiles(dir: string, files: Map<string, string>): Promise<string[]> {
  const changed: string[] = [];
  for (const [name, digest] of files) if (sha256(await readFile(join(dir, name))) !== digest) changed.push(name);
  return changed;
}

/**
 * Attaches a loop device to `viewFile`, runs a read-only fsck of its ext4, mounts it and returns the
 * names in `files` whose content changed (expect []); everything is detached again, even on failure.
 */
export async function changedFilesOnView(viewFile: string, files: Map<string, string>): Promise<string[]> {
  const loop = await attachLoop(viewFile);
  try {
    await sh('fsck.ext4', ['-n', '-f', loop.device]);
    const fs = await mountFs(loop.device);
    try {
      return await changedFiles(fs.dir, files);
    } finally {
      await fs.unmount();
    }
  } finally {
    await loop.detach();
  }
}
