/**
 * The FUSE request path on the real kernel: 1 MiB requests reach the store whole, QD16 direct I/O
 * is served concurrently, fallocate (punch hole, zero range) and fstrim free space in every store
 * kind and read back as zeros (a chain's parent never shows through), and a write through one
 * view of a store is seen at once by a cached read of another, with the writeback cache on and off.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { vhdxLayoutFor } from '../src/views/vhdx-view.js';
import { loadDescriptor } from '../src/stores/descriptor.js';
import type { CheckedDevice } from '../src/devices/block-device.js';
import { attachLoop, mountFs, mountVdiskfs, onCleanup, requireTools, run, scratch, sh, vdiskfs, type Mounted } from './support/native.js';

const MiB = 1 << 20;
let dir: string;
let metaFs: string;

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 120_000 });
  expect(r.code, `${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`).toBe(0);
  return r.stdout;
}

async function stats(m: Mounted, name: string): Promise<Record<string, any>> {
  return JSON.parse(await readFile(join(m.mountpoint, `.vdiskfs/${name}.stats.json`), 'utf8'));
}

/** Stores of every kind that takes writes, `size` each, in `source`. */
async function createStores(source: string, size: number): Promise<string[]> {
  await mkdir(source, { recursive: true });
  await ok('node', [join(import.meta.dirname, '..', 'dist', 'cli', 'main.js'), 'create', 'flat', join(source, 'flat.vdisk'), '--size', String(size)]);
  const lbs = await vdiskfs(['create', 'lbs', join(source, 'lbs.vdisk'), '--size', String(size), '--data', join(dir, `${source.length}.lbsdata`), '--meta', metaFs]);
  expect(lbs.code, lbs.stderr).toBe(0);
  // A chain over a parent full of 0xab: a discard in the child must hide it.
  const parent = join(dir, `parent-${source.length}.vhdx`);
  await ok('qemu-img', ['create', '-q', '-f', 'vhdx', parent, String(size)]);
  await ok('qemu-io', ['-f', 'vhdx', '-c', `write -P 0xab 0 ${size}`, parent]);
  const chain = await vdiskfs(['create', 'chain', join(source, 'chain.vdisk'), '--parent', parent]);
  expect(chain.code, chain.stderr).toBe(0);
  return ['flat', 'lbs', 'chain'];
}

beforeAll(async () => {
  requireTools('fio', 'fallocate', 'fstrim', 'losetup', 'mkfs.ext4', 'qemu-img', 'qemu-io', 'dd', 'cmp');
  dir = await scratch('vdiskfs-native-fuse-');
  metaFs = join(dir, 'meta');
  await mkdir(metaFs);
  await sh('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=700', 'tmpfs', metaFs]);
  onCleanup(async () => void (await run('umount', [metaFs])));
});

describe('FUSE request path', () => {
  it('a 1 MiB direct write reaches the store as one request; QD16 direct reads are served concurrently', async () => {
    const source = join(dir, 'requests');
    await mkdir(source);
    await ok('node', [join(import.meta.dirname, '..', 'dist', 'cli', 'main.js'), 'create', 'flat', join(source, 'f.vdisk'), '--size', String(256 * MiB)]);
    const m = await mountVdiskfs(source, ['--views', 'raw']);
    const raw = join(m.mountpoint, 'f.raw');
    const before = (await stats(m, 'f')).stats.io;
    await ok('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=1', 'seek=3', 'oflag=direct', 'conv=notrunc', 'status=none']);
    const after = (await stats(m, 'f')).stats.io;
    expect(after.writes - before.writes).toBe(1);
    expect(after.largestWrite).toBe(MiB);

    await ok('fio', ['--name=qd16', `--filename=${raw}`, '--rw=randread', '--bs=4k', '--iodepth=16', '--ioengine=libaio', '--direct=1', '--size=256M', '--runtime=2', '--time_based', '--output-format=terse']);
    const s = await stats(m, 'f');
    expect(s.stats.io.maxInFlight).toBeGreaterThanOrEqual(4);
    expect(s.frontEnd.fuse.maxInFlight).toBeGreaterThanOrEqual(4);
    await m.unmount();
  });

  it('fallocate --punch-hole and --zero-range read back zeros in every store kind and free space', async () => {
    const source = join(dir, 'punch');
    const size = 64 * MiB;
    const names = await createStores(source, size);
    const m = await mountVdiskfs(source, ['--views', 'raw,vhdx']);
    for (const name of names) {
      const raw = join(m.mountpoint, `${name}.raw`);
      const data = randomBytes(16 * MiB);
      const fd = openSync(raw, 'r+');
      writeSync(fd, data, 0, data.length, 0);
      fsyncSync(fd);
      closeSync(fd);
      const allocatedBefore = (await stats(m, name)).stats.allocatedBytes;
      await ok('fallocate', ['--punch-hole', '--offset', String(MiB), '--length', String(4 * MiB), raw]);
      await ok('fallocate', ['--zero-range', '--keep-size', '--offset', String(8 * MiB), '--length', String(2 * MiB), raw]);
      // Unaligned edges: part of a block.
      await ok('fallocate', ['--punch-hole', '--offset', String(12 * MiB + 1000), '--length', '5000', raw]);
      const back = Buffer.alloc(16 * MiB);
      const rfd = openSync(raw, 'r');
      readSync(rfd, back, 0, back.length, 0);
      closeSync(rfd);
      const expected = Buffer.from(data);
      expected.fill(0, MiB, 5 * MiB);
      expected.fill(0, 8 * MiB, 10 * MiB);
      expected.fill(0, 12 * MiB + 1000, 12 * MiB + 6000);
      expect(back.equals(expected), `${name}: punched ranges read as zeros, the rest unchanged`).toBe(true);
      // The chain's parent holds 0xab everywhere: past what we wrote it still shows, inside a hole never.
      if (name === 'chain') expect(back.subarray(MiB, MiB + 16).every((b) => b === 0)).toBe(true);
      const allocatedAfter = (await stats(m, name)).stats.allocatedBytes;
      if (name !== 'chain') expect(allocatedAfter, `${name}: allocatedBytes drops`).toBeLessThanOrEqual(allocatedBefore - 5 * MiB);
      // The VHDX view of the same store sees the zeros too.
      const vhdx = await ok('qemu-io', ['-f', 'vhdx', '-r', '-c', `read -P 0 ${MiB} ${4 * MiB}`, join(m.mountpoint, `${name}.vhdx`)]);
      expect(vhdx).not.toMatch(/Pattern verification failed/);
    }
    await m.unmount();
  });

  it('fstrim on a loop-mounted ext4 frees what was deleted in an LBS store', async () => {
    const source = join(dir, 'trim');
    await mkdir(source);
    const r = await vdiskfs(['create', 'lbs', join(source, 't.vdisk'), '--size', String(256 * MiB), '--data', join(dir, 'trim.lbsdata'), '--meta', metaFs]);
    expect(r.code, r.stderr).toBe(0);
    const m = await mountVdiskfs(source, ['--views', 'raw']);
    const loop = await attachLoop(join(m.mountpoint, 't.raw'));
    await sh('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', loop.device]);
    const fs = await mountFs(loop.device);
    await ok('dd', ['if=/dev/urandom', `of=${join(fs.dir, 'big')}`, 'bs=1M', 'count=64', 'conv=fsync', 'status=none']);
    await sh('sync', []);
    const full = (await stats(m, 't')).stats.allocatedBytes;
    await ok('rm', [join(fs.dir, 'big')]);
    await sh('sync', []); // ext4 trims only blocks whose freeing has been committed
    await ok('fstrim', [fs.dir]);
    await sh('sync', []);
    const trimmed = (await stats(m, 't')).stats.allocatedBytes;
    expect(full - trimmed, `allocatedBytes ${full} → ${trimmed}`).toBeGreaterThanOrEqual(60 * MiB);
    await fs.unmount();
    await loop.detach();
    await m.unmount();
    const info = JSON.parse((await vdiskfs(['info', '--json', join(source, 't.vdisk')])).stdout);
    expect(info.allocatedBytes).toBeLessThan(full - 60 * MiB);
  });

  it('after kill -9 of the daemon the mount is detached by itself and a remount sees every fsynced write', async () => {
    const source = join(dir, 'killed');
    await mkdir(source);
    await ok('node', [join(import.meta.dirname, '..', 'dist', 'cli', 'main.js'), 'create', 'flat', join(source, 'k.vdisk'), '--size', String(64 * MiB)]);
    const mountpoint = join(dir, 'killed-mnt');
    const first = await mountVdiskfs(source, ['--views', 'raw'], mountpoint);
    const data = randomBytes(MiB);
    const fd = openSync(join(mountpoint, 'k.raw'), 'r+');
    writeSync(fd, data, 0, data.length, 3 * MiB);
    fsyncSync(fd);
    closeSync(fd);
    process.kill(first.pid, 'SIGKILL');
    // The watchdog detaches the dead mount; the daemon stays a zombie here (PID 1 never reaps).
    let mounted = true;
    for (let i = 0; i < 50 && mounted; i++) {
      await new Promise((r) => setTimeout(r, 100));
      mounted = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').some((l) => l.split(' ')[4] === mountpoint);
    }
    expect(mounted, 'the dead mount was detached').toBe(false);
    await first.unmount().catch(() => {}); // what a user runs: cleans the runtime state (the mount is already gone)
    const second = await mountVdiskfs(source, ['--views', 'raw'], mountpoint);
    const back = Buffer.alloc(MiB);
    const rfd = openSync(join(mountpoint, 'k.raw'), 'r');
    readSync(rfd, back, 0, back.length, 3 * MiB);
    closeSync(rfd);
    expect(back.equals(data)).toBe(true);
    await second.unmount();
  });

  for (const writeback of [false, true]) {
    it(`a write through NAME.raw is seen at once by a cached read of NAME.vhdx, and back (writeback cache ${writeback ? 'on' : 'off'})`, async () => {
      const source = join(dir, `coherent-${writeback}`);
      await mkdir(source);
      await ok('node', [join(import.meta.dirname, '..', 'dist', 'cli', 'main.js'), 'create', 'flat', join(source, 'c.vdisk'), '--size', String(64 * MiB)]);
      const m = await mountVdiskfs(source, ['--views', 'raw,vhdx', ...(writeback ? ['--writeback-cache'] : [])]);
      const rawFd = openSync(join(m.mountpoint, 'c.raw'), 'r+');
      const vhdxFd = openSync(join(m.mountpoint, 'c.vhdx'), 'r+');
      try {
        // Where the raw bytes lie in the VHDX file: the layout's one payload range.
        const layout = vhdxLayoutFor({ device: { size: 64 * MiB } as CheckedDevice, descriptor: await loadDescriptor(join(source, 'c.vdisk')) });
        const dataStart = layout.dataStart;
        const at = 5 * MiB + 4096;
        const readVhdx = (n: number) => { const b = Buffer.alloc(n); readSync(vhdxFd, b, 0, n, dataStart + at); return b; };
        const readRaw = (n: number) => { const b = Buffer.alloc(n); readSync(rawFd, b, 0, n, at); return b; };
        expect(readVhdx(8192).every((b) => b === 0)).toBe(true); // now cached by the kernel
        // Many rounds: the acknowledgement must follow the invalidation every time, not usually.
        for (let round = 0; round < 50; round++) {
          const one = randomBytes(8192);
          writeSync(rawFd, one, 0, one.length, at);
          if (writeback) fsyncSync(rawFd); // with the writeback cache, the write reaches us when written back
          expect(readVhdx(8192).equals(one), `raw → vhdx, round ${round}`).toBe(true);
          expect(readRaw(8192).equals(one)).toBe(true);
          const two = randomBytes(8192);
          writeSync(vhdxFd, two, 0, two.length, dataStart + at);
          if (writeback) fsyncSync(vhdxFd);
          expect(readRaw(8192).equals(two), `vhdx → raw, round ${round}`).toBe(true);
          expect(readVhdx(8192).equals(two)).toBe(true);
        }
      } finally {
        closeSync(rawFd);
        closeSync(vhdxFd);
      }
      await m.unmount();
    });
  }
});
