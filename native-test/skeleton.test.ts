/**
 * The walking skeleton end to end: a flat store mounted through FUSE, its raw view loop-mounted with
 * ext4, files verified across a remount; EOF behaviour; concurrency; kill -9 recovery; bad input.
 */
import { describe, expect, it, beforeAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, readdir, stat, open, symlink, truncate } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { attachLoop, mountFs, mountVdiskfs, requireTools, run, scratch, sh, vdiskfs, sha256, writeRandomFiles, changedFilesOnView } from './support/native.js';

const MiB = 1 << 20;
let dir: string;
let source: string;

beforeAll(async () => {
  requireTools('losetup', 'mkfs.ext4', 'dd', 'cmp');
  dir = await scratch();
  source = join(dir, 'stores');
  await mkdir(source);
  const r = await vdiskfs(['create', 'flat', join(source, 'disk.vdisk'), '--size', '256M']);
  expect(r.code, r.stderr).toBe(0);
});

const sha = sha256;

describe('flat store through the mount', () => {
  it('loop-mounts the raw view with ext4 and keeps files across a remount', async () => {
    let files = new Map<string, string>();
    {
      const m = await mountVdiskfs(source);
      const names = await readdir(m.mountpoint);
      expect(names).toContain('disk.raw');
      expect((await stat(join(m.mountpoint, 'disk.raw'))).size).toBe(256 * MiB);
      const loop = await attachLoop(join(m.mountpoint, 'disk.raw'));
      await sh('mkfs.ext4', ['-q', '-F', loop.device]);
      const fs = await mountFs(loop.device);
      files = await writeRandomFiles(fs.dir, 20, 3 * MiB);
      await fs.unmount();
      await loop.detach();
      await m.unmount();
    }
    {
      const m = await mountVdiskfs(source);
      expect(await changedFilesOnView(join(m.mountpoint, 'disk.raw'), files)).toEqual([]);
      await m.unmount();
    }
  });

  it('cp of the view equals the backing file; reads stop exactly at EOF; dd past EOF fails cleanly', async () => {
    const m = await mountVdiskfs(source);
    const view = join(m.mountpoint, 'disk.raw');
    await sh('dd', [`if=/dev/urandom`, `of=${view}`, 'bs=1M', 'count=3', 'seek=100', 'conv=notrunc,fsync', 'status=none']);
    const copy = join(dir, 'copy.img');
    await sh('cp', [view, copy]);
    await sh('cmp', [copy, join(source, 'disk.img')]);
    // A read straddling EOF is short, and only there.
    const fh = await open(view, 'r');
    const buf = Buffer.alloc(8192);
    const { bytesRead } = await fh.read(buf, 0, 8192, 256 * MiB - 1000);
    expect(bytesRead).toBe(1000);
    expect((await fh.read(buf, 0, 10, 256 * MiB)).bytesRead).toBe(0);
    await fh.close();
    // A write past EOF is refused whole, not truncated.
    const past = await run('dd', ['if=/dev/zero', `of=${view}`, 'bs=64k', 'count=2', `seek=${(256 * MiB) / 65536 - 1}`, 'conv=notrunc', 'status=none']);
    expect(past.code).not.toBe(0);
    expect(past.stderr).toMatch(/No space left on device/);
    // The last in-range 64 KiB was written by the first dd block; nothing beyond the disk exists.
    expect((await stat(view)).size).toBe(256 * MiB);
    expect((await stat(join(source, 'disk.img'))).size).toBe(256 * MiB);
    // Changing the size is refused.
    await expect(truncate(view, MiB)).rejects.toMatchObject({ code: 'EPERM' });
    // The stats file is JSON.
    const stats = JSON.parse(await readFile(join(m.mountpoint, '.vdiskfs', 'disk.stats.json'), 'utf8'));
    expect(stats.kind).toBe('flat');
    await m.unmount();
  });

  it('two concurrent writers and a reader on different ranges give the expected bytes', async () => {
    const m = await mountVdiskfs(source);
    const view = join(m.mountpoint, 'disk.raw');
    const a = join(dir, 'a.bin');
    const b = join(dir, 'b.bin');
    await writeFile(a, randomBytes(32 * MiB));
    await writeFile(b, randomBytes(32 * MiB));
    const dd = (args: string[]) =>
      new Promise<number>((done) => spawn('dd', [...args, 'status=none'], { stdio: 'ignore' }).on('exit', (c) => done(c ?? 1)));
    // The reader reads a range neither writer touches, before and during the writes.
    const before = await readRange(view, 200 * MiB, 16 * MiB);
    const [c1, c2, after] = await Promise.all([
      dd([`if=${a}`, `of=${view}`, 'bs=128k', 'seek=64', 'oflag=seek_bytes', 'conv=notrunc,fsync']),
      dd([`if=${b}`, `of=${view}`, 'bs=128k', `seek=${64 * MiB}`, 'oflag=seek_bytes', 'conv=notrunc,fsync']),
      readRange(view, 200 * MiB, 16 * MiB),
    ]);
    expect([c1, c2]).toEqual([0, 0]);
    expect(sha(after)).toBe(sha(before));
    expect(sha(await readRange(view, 64, 32 * MiB))).toBe(sha(await readFile(a)));
    expect(sha(await readRange(view, 64 * MiB, 32 * MiB))).toBe(sha(await readFile(b)));
    await m.unmount();
  });

  it('after kill -9 of the daemon, unmount cleans up and a new mount works', async () => {
    const m = await mountVdiskfs(source);
    process.kill(m.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    const u = await vdiskfs(['unmount', m.mountpoint]);
    expect(u.code, u.stderr).toBe(0);
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    expect(mounts).not.toContain(` ${m.mountpoint} `);
    const again = await mountVdiskfs(source, [], m.mountpoint);
    expect(await readdir(again.mountpoint)).toContain('disk.raw');
    await again.unmount();
  });

  it('refuses to unmount while a loop device uses a view, and says why', async () => {
    const m = await mountVdiskfs(source);
    const loop = await attachLoop(join(m.mountpoint, 'disk.raw'));
    const u = await vdiskfs(['unmount', m.mountpoint]);
    expect(u.code).not.toBe(0);
    expect(u.stderr).toMatch(/busy/);
    expect(await readdir(m.mountpoint)).toContain('disk.raw'); // still serving
    await loop.detach();
    await m.unmount();
  });
});

describe('bad input: one-line error, non-zero exit, nothing mounted', () => {
  const expectRefused = async (args: string[], pattern: RegExp, mnt: string) => {
    const r = await vdiskfs(args);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(pattern);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(` ${mnt} `);
  };

  it('a missing source directory', async () => {
    const mnt = join(dir, 'm1');
    await mkdir(mnt);
    await expectRefused(['mount', join(dir, 'nope'), mnt], /source directory .*nope does not exist/, mnt);
  });

  it('a mount point that is not an empty directory, or missing', async () => {
    const mnt = join(dir, 'm2');
    await mkdir(mnt);
    await writeFile(join(mnt, 'x'), 'x');
    await expectRefused(['mount', source, mnt], /not empty/, mnt);
    await expectRefused(['mount', source, join(dir, 'm-missing')], /does not exist/, join(dir, 'm-missing'));
    await expectRefused(['mount', source, join(mnt, 'x')], /not a directory/, join(mnt, 'x'));
  });

  it('a malformed descriptor, an unknown kind, a missing or resized store file', async () => {
    const cases: [string, string | null, RegExp][] = [
      ['bad.vdisk', '{ not json', /bad\.vdisk is not valid JSON/],
      ['kind.vdisk', JSON.stringify({ vdiskfs: 1, kind: 'nope', id: '11111111-2222-3333-4444-555555555555', store: {} }), /unknown store kind "nope"/],
      ['ver.vdisk', JSON.stringify({ vdiskfs: 9, kind: 'flat', id: '11111111-2222-3333-4444-555555555555', store: {} }), /version 9 is not supported/],
      ['missing.vdisk', JSON.stringify({ vdiskfs: 1, kind: 'flat', id: '11111111-2222-3333-4444-555555555555', store: { path: 'gone.img', size: 1048576 } }), /gone\.img does not exist/],
      ['resized.vdisk', null, /is 1000 bytes, but its descriptor says 1048576/],
    ];
    for (const [name, text, pattern] of cases) {
      const src = join(dir, `src-${name}`);
      const mnt = join(dir, `mnt-${name}`);
      await mkdir(src);
      await mkdir(mnt);
      if (text === null) {
        await writeFile(join(src, 'r.img'), Buffer.alloc(1000));
        await writeFile(join(src, name), JSON.stringify({ vdiskfs: 1, kind: 'flat', id: '11111111-2222-3333-4444-555555555555', store: { path: 'r.img', size: 1048576 } }));
      } else {
        await writeFile(join(src, name), text);
      }
      await expectRefused(['mount', src, mnt], pattern, mnt);
    }
  });

  it('no /dev/fuse (simulated by a private mount namespace without it)', async () => {
    requireTools('unshare');
    const mnt = join(dir, 'm-nofuse');
    await mkdir(mnt);
    // In a private mount namespace, hide /dev/fuse behind an empty tmpfs over /dev.
    const script = `mount -t tmpfs none /dev && exec "${process.execPath}" "${join(import.meta.dirname, '..', 'dist', 'cli', 'main.js')}" mount "${source}" "${mnt}" --foreground`;
    const r = await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/\/dev\/fuse is missing/);
  });

  it('create refuses to overwrite, and bad sizes', async () => {
    const r1 = await vdiskfs(['create', 'flat', join(source, 'disk.vdisk'), '--size', '1M']);
    expect(r1.code).not.toBe(0);
    expect(r1.stderr).toMatch(/already exists/);
    const r2 = await vdiskfs(['create', 'flat', join(dir, 'odd.vdisk'), '--size', '1000']);
    expect(r2.stderr).toMatch(/multiple of 512/);
    const r3 = await vdiskfs(['create', 'flat', join(dir, 'odd.vdisk'), '--size', 'lots']);
    expect(r3.stderr).toMatch(/is not a size/);
  });

  it('a second mount of the same stores while the first is live', async () => {
    const m = await mountVdiskfs(source);
    const mnt = join(dir, 'm-second');
    await mkdir(mnt);
    await expectRefused(['mount', source, mnt], /store disk is open for writing by process \d+/, mnt);
    await m.unmount();
  });

  it('a symlink in the source directory pointing nowhere is reported by name', async () => {
    const src = join(dir, 'src-link');
    const mnt = join(dir, 'mnt-link');
    await mkdir(src);
    await mkdir(mnt);
    await symlink('/nonexistent/x.vdisk', join(src, 'x.vdisk'));
    await expectRefused(['mount', src, mnt], /x\.vdisk does not exist/, mnt);
  });
});

describe('the command line', () => {
  it('has --help on every command and --version', async () => {
    for (const cmd of [[], ['mount'], ['unmount'], ['create'], ['create', 'flat'], ['info']]) {
      const r = await vdiskfs([...cmd, '--help']);
      expect(r.code, cmd.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/vdiskfs/);
    }
    const v = await vdiskfs(['--version']);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('info prints text and JSON', async () => {
    const t = await vdiskfs(['info', join(source, 'disk.vdisk')]);
    expect(t.stdout).toMatch(/kind\s+flat/);
    const j = JSON.parse((await vdiskfs(['info', '--json', join(source, 'disk.vdisk')])).stdout);
    expect(j).toMatchObject({ name: 'disk', kind: 'flat', size: 256 * MiB });
  });
});

async function readRange(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, Math.min(1 << 20, length - done), offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  } finally {
    await fh.close();
  }
}

describe('daemon life', () => {
  it('in the foreground, SIGINT flushes, unmounts and exits 0', async () => {
    const mnt = join(dir, 'fg');
    await mkdir(mnt);
    const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'dist', 'cli', 'main.js'), 'mount', source, mnt, '--foreground'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      for (let i = 0; i < 100 && !stderr.includes('mounted'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(stderr).toMatch(/mounted .*Ctrl-C unmounts/);
      const fh = await open(join(mnt, 'disk.raw'), 'r+');
      await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, 8192);
      await fh.close();
      const exit = new Promise<number | null>((r) => child.on('exit', r));
      child.kill('SIGINT');
      expect(await exit).toBe(0);
      expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(` ${mnt} `);
      const img = await open(join(source, 'disk.img'), 'r');
      const b = Buffer.alloc(4096);
      await img.read(b, 0, 4096, 8192);
      await img.close();
      expect(b.every((x) => x === 0x5a)).toBe(true);
    } finally {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await run('umount', ['-l', mnt]);
      }
    }
  });

  it('--read-only shows read-only files and refuses writes', async () => {
    const m = await mountVdiskfs(source, ['--read-only']);
    const st = await stat(join(m.mountpoint, 'disk.raw'));
    expect(st.mode & 0o777).toBe(0o444);
    await expect(open(join(m.mountpoint, 'disk.raw'), 'r+')).rejects.toMatchObject({ code: 'EROFS' });
    await m.unmount();
  });

  it('refuses a non-root user without user_allow_other, in one line', async () => {
    requireTools('runuser');
    const conf = await readFile('/etc/fuse.conf', 'utf8').catch(() => '');
    expect(conf, 'this test expects the default /etc/fuse.conf (user_allow_other not enabled)').not.toMatch(/^\s*user_allow_other\s*$/m);
    const mnt = join('/tmp', `vdiskfs-nobody-${process.pid}`);
    await mkdir(mnt, { recursive: true });
    try {
      const r = await run('runuser', ['-u', 'nobody', '--', process.execPath, join(import.meta.dirname, '..', 'dist', 'cli', 'main.js'), 'mount', '/tmp', mnt, '--foreground']);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim()).toMatch(/^vdiskfs: not running as root and \/etc\/fuse.conf lacks user_allow_other/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    } finally {
      await run('rmdir', [mnt]);
    }
  });
});
