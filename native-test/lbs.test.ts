/**
 * The LBS store for real: its metadata on a separate tmpfs (a real protected mount), its raw view
 * loop-mounted with ext4 across a remount, fio with verification through the raw view, kill -9 of
 * the daemon during fsync'ing writes, the stats file while mounted, check, and a data file that
 * does not fit its filesystem.
 */
import { describe, expect, it, beforeAll } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, open, stat } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, attachLoop, mountFs, mountVdiskfs, onCleanup, requireTools, run, scratch, sh, vdiskfs, writeRandomFiles, changedFilesOnView } from './support/native.js';

const MiB = 1 << 20;
let dir: string;
let metaFs: string;

/** A tmpfs mounted for the test (unmounted afterwards even on failure). */
async function tmpfs(path: string, size: string, mode = '700'): Promise<void> {
  await mkdir(path, { recursive: true });
  await sh('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=${mode}`, 'tmpfs', path]);
  onCleanup(async () => {
    await run('umount', [path]);
  });
}

async function createStore(source: string, name: string, size: string, extra: string[] = []): Promise<void> {
  await mkdir(source, { recursive: true });
  const r = await vdiskfs(['create', 'lbs', join(source, `${name}.vdisk`), '--size', size, '--data', join(dir, `${name}.lbsdata`), '--meta', metaFs, ...extra]);
  expect(r.code, r.stderr).toBe(0);
}

beforeAll(async () => {
  requireTools('losetup', 'mkfs.ext4', 'fsck.ext4', 'fio', 'mount');
  dir = await scratch('vdiskfs-native-lbs-');
  metaFs = join(dir, 'meta');
  await tmpfs(metaFs, '64m');
});


describe('lbs store through the mount', () => {
  it('ext4 on the raw view keeps its files across a remount; stats are readable while mounted; check passes', async () => {
    const source = join(dir, 'ext4');
    await createStore(source, 'disk', '192M', ['--cluster-size', '256k']);
    let files = new Map<string, string>();
    {
      const m = await mountVdiskfs(source, ['--views', 'raw']);
      expect(await readdir(m.mountpoint)).toContain('disk.raw');
      const loop = await attachLoop(join(m.mountpoint, 'disk.raw'));
      await sh('mkfs.ext4', ['-q', '-F', loop.device]);
      const fs = await mountFs(loop.device);
      files = await writeRandomFiles(fs.dir, 16, 3 * MiB);
      await sh('sync', []);
      const stats = JSON.parse(await readFile(join(m.mountpoint, '.vdiskfs', 'disk.stats.json'), 'utf8'));
      expect(stats.kind).toBe('lbs');
      expect(stats.stats.dataFile.bytesWritten).toBeGreaterThan(16 * MiB);
      expect(stats.stats.log.barriers).toBeGreaterThan(0);
      expect(stats.stats.clusters.used).toBeGreaterThan(0);
      expect(stats.stats.blocks.failed).toBe(0);
      await fs.unmount();
      await loop.detach();
      await m.unmount();
    }
    const check = await vdiskfs(['check', join(source, 'disk.vdisk'), '--json']);
    expect(check.code, check.stderr + check.stdout).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ ok: true, summary: { blocksFailed: 0 } });
    {
      const m = await mountVdiskfs(source, ['--views', 'raw']);
      expect(await changedFilesOnView(join(m.mountpoint, 'disk.raw'), files)).toEqual([]);
      await m.unmount();
    }
    const info = await vdiskfs(['info', join(source, 'disk.vdisk'), '--json']);
    expect(info.code, info.stderr).toBe(0);
    const j = JSON.parse(info.stdout);
    expect(j.logFilesystem).toMatch(new RegExp(`^${metaFs} \\(tmpfs`));
    expect(j.dataFilesystem).not.toBe(j.logFilesystem);
  });

  it('fio --verify=crc32c through the raw view (random 4k and mixed sizes, more than the disk holds)', async () => {
    const source = join(dir, 'fio');
    await createStore(source, 'f', '64M', ['--cluster-size', '256k']);
    const m = await mountVdiskfs(source, ['--views', 'raw']);
    const file = join(m.mountpoint, 'f.raw');
    const common = ['--filename=' + file, '--direct=1', '--ioengine=psync', '--verify=crc32c', '--verify_state_save=0', '--verify_fatal=1', '--do_verify=1', '--output-format=json'];
    // Random 4k writes over the whole disk twice: the cleaner must run, and everything verifies.
    const r1 = await run('fio', ['--name=rand4k', '--rw=randwrite', '--bs=4k', '--size=64M', '--loops=2', '--fsync=64', ...common], { timeoutMs: 150_000 });
    expect(r1.code, r1.stderr + r1.stdout.slice(-2000)).toBe(0);
    const j1 = JSON.parse(r1.stdout);
    expect(j1.jobs[0].error).toBe(0);
    const r2 = await run('fio', ['--name=mixed', '--rw=randwrite', '--bsrange=512-128k', '--size=48M', '--offset=8M', ...common], { timeoutMs: 150_000 });
    expect(r2.code, r2.stderr + r2.stdout.slice(-2000)).toBe(0);
    const stats = JSON.parse(await readFile(join(m.mountpoint, '.vdiskfs', 'f.stats.json'), 'utf8')).stats;
    expect(stats.cleaner.clustersCleaned).toBeGreaterThan(0);
    expect(stats.blocks.failed).toBe(0);
    // Random 4 KiB writes became sequential cluster writes on the data file.
    expect(stats.dataFile.averageWriteBlocks).toBeGreaterThan(8);
    await m.unmount();
    const check = await vdiskfs(['check', join(source, 'f.vdisk')]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });

  it('kill -9 of the daemon during fsync\'ing writes: after a remount everything fsynced reads back', async () => {
    const source = join(dir, 'kill');
    await createStore(source, 'k', '128M', ['--cluster-size', '256k']);
    const m = await mountVdiskfs(source, ['--views', 'raw']);
    const progress = join(dir, 'kill.progress');
    const chunk = 64 * 1024;
    const slots = (128 * MiB) / chunk;
    // The writer runs in its own process: chunk i (content derived from i) goes to a distinct slot;
    // after every 4 chunks it fsyncs the view, then records (durably, outside the mount) how far it got.
    const writer = `
      const fs = require('fs');
      const crypto = require('crypto');
      const fd = fs.openSync(${JSON.stringify(join(m.mountpoint, 'k.raw'))}, 'r+');
      const p = fs.openSync(${JSON.stringify(progress)}, 'w');
      for (let i = 0; i < ${slots}; i++) {
        const data = crypto.createHash('sha512').update('chunk' + i).digest();
        const buf = Buffer.alloc(${chunk});
        for (let k = 0; k < buf.length; k += data.length) data.copy(buf, k);
        buf.writeUInt32LE(i, 0);
        fs.writeSync(fd, buf, 0, buf.length, ((i * 7919) % ${slots}) * ${chunk});
        if (i % 4 === 3) { fs.fsyncSync(fd); fs.writeSync(p, i + '\\n'); fs.fsyncSync(p); }
      }`;
    const child = spawn(process.execPath, ['-e', writer], { stdio: 'ignore' });
    const childExit = new Promise<void>((done) => child.once('exit', () => done()));
    onCleanup(async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    // Let it run until a good part is fsynced, then kill the daemon in the middle of it.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const text = await readFile(progress, 'utf8').catch(() => '');
      const lines = text.trim().split('\n').filter(Boolean);
      if (lines.length >= 100 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    process.kill(m.pid, 'SIGKILL');
    await Promise.race([childExit, new Promise((r) => setTimeout(r, 10_000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
    const recorded = (await readFile(progress, 'utf8')).trim().split('\n').filter(Boolean).map(Number);
    const lastSynced = recorded[recorded.length - 1]!;
    expect(lastSynced).toBeGreaterThanOrEqual(399);
    expect(lastSynced).toBeLessThan(slots - 1); // the daemon died mid-workload
    await m.unmount().catch(() => {}); // cleans up the dead mount's state
    const again = await mountVdiskfs(source, ['--views', 'raw']);
    const fh = await open(join(again.mountpoint, 'k.raw'), 'r');
    try {
      for (let i = 0; i <= lastSynced; i++) {
        const data = createHash('sha512').update('chunk' + i).digest();
        const want = Buffer.alloc(chunk);
        for (let k = 0; k < want.length; k += data.length) data.copy(want, k);
        want.writeUInt32LE(i, 0);
        const got = Buffer.alloc(chunk);
        await fh.read(got, 0, chunk, ((i * 7919) % slots) * chunk);
        if (!got.equals(want)) expect.fail(`chunk ${i} (fsynced) did not survive the kill`);
      }
    } finally {
      await fh.close();
    }
    await again.unmount();
    const check = await vdiskfs(['check', join(source, 'k.vdisk')]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });
});

describe('lbs bad input on real filesystems', () => {
  it('a data file that does not fit its filesystem: ENOSPC with a clear message, nothing left behind', async () => {
    const small = join(dir, 'small');
    await tmpfs(small, '8m', '755');
    const source = join(dir, 'full');
    await mkdir(source);
    const r = await vdiskfs(['create', 'lbs', join(source, 'x.vdisk'), '--size', '32M', '--data', join(small, 'x.lbsdata'), '--meta', metaFs]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not enough space for the LBS store: the data file needs 40\.00 MiB at .*x\.lbsdata \(nothing was created\)/);
    expect(await readdir(small)).toEqual([]);
    expect(await readdir(source)).toEqual([]);
    expect((await readdir(metaFs)).filter((n) => n.startsWith('x.'))).toEqual([]);
  });

  it('Ctrl-C while the data file is being allocated removes what was made', async () => {
    const source = join(dir, 'intr');
    await mkdir(source);
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'cli', 'main.js'), 'create', 'lbs', join(source, 'i.vdisk'), '--size', '16G', '--data', join(source, 'i.lbsdata'), '--meta', metaFs], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
    onCleanup(async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    // Wait until the allocation is under way, then interrupt it.
    for (let i = 0; i < 200 && !(await stat(join(source, 'i.lbsdata')).then((st) => st.size > 0, () => false)); i++) await new Promise((r) => setTimeout(r, 25));
    child.kill('SIGINT');
    expect(await exited).toBe(1);
    expect(stderr).toMatch(/interrupted while allocating .*i\.lbsdata; nothing was created/);
    expect(await readdir(source)).toEqual([]);
    expect((await readdir(metaFs)).filter((n) => n.startsWith('i.'))).toEqual([]);
  });

  it('a meta directory on the same filesystem as the data file is refused without --allow-same-filesystem', async () => {
    const meta = join(dir, 'samemeta');
    await mkdir(meta, { mode: 0o700 });
    const r = await vdiskfs(['create', 'lbs', join(dir, 'same.vdisk'), '--size', '8M', '--data', join(dir, 'same.lbsdata'), '--meta', meta]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is on the same filesystem as the data file .*--allow-same-filesystem/);
    await expect(stat(join(dir, 'same.lbsdata'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
