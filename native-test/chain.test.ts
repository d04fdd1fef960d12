/**
 * Chain stores against the real tools. Parents are made by `qemu-img create -f vhdx|vpc` and filled
 * by `qemu-io`; we write through the mounted NAME.raw; then libvhdi (vhdimount), an implementation
 * we did not write, must read exactly our raw view from our child files (it checks our bitmaps,
 * BAT and parent locators). QEMU cannot open differencing VHDX, so it judges what we write into
 * non-differencing files: a committed parent must pass `qemu-img check` and `qemu-img compare`
 * equal to the raw view before the commit. Also: shared parents mounted twice, periodic snapshots,
 * bad input at mount time, and read speed against vhdimount on the same 3-layer chain.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rename, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { mountVdiskfs, onCleanup, requireTools, run, scratch, vdiskfs } from './support/native.js';

const MiB = 1 << 20;
let dir: string;
let images: string;

async function ok(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await run(cmd, args, { timeoutMs });
  expect(r.code, `${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`).toBe(0);
  return r.stdout;
}

async function sha(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** A base made and filled by QEMU: patterns at several offsets, some crossing block boundaries. */
async function qemuBase(name: string, format: 'vhdx' | 'vpc', size = '64M'): Promise<string> {
  const path = join(images, name);
  await ok('qemu-img', ['create', '-q', '-f', format, path, size]);
  await ok('qemu-io', ['-f', format, '-c', 'write -P 0xa1 0 3M', '-c', 'write -P 0xb2 7M 1536', '-c', 'write -P 0xc3 20M 9M', '-c', 'write -P 0xd4 60M 1M', path]);
  return path;
}

/** Writes through the mounted raw view with dd (notrunc, fsync): sector-sized, unaligned-in-block, whole-block, zeros. */
async function writeThrough(raw: string, seed: number): Promise<void> {
  const data = join(dir, `data-${seed}`);
  await writeFile(data, randomBytes(5 * MiB));
  const dd = (args: string[]) => ok('dd', [`of=${raw}`, 'conv=notrunc,fsync', 'status=none', ...args]);
  await dd([`if=${data}`, 'bs=512', `seek=${3 + seed}`, 'count=1']); // one sector inside block 0
  await dd([`if=${data}`, 'bs=512', `seek=${7 * 2048 + 1}`, 'count=5']); // over the 0xb2 bytes, partly
  await dd([`if=${data}`, 'bs=1M', `seek=${10 + seed}`, 'count=5']); // several whole blocks
  await dd(['if=/dev/zero', 'bs=4096', `seek=${(21 * MiB) / 4096}`, 'count=300']); // zeros hide the parent
  await dd([`if=${data}`, 'bs=3000', `seek=${Math.floor((45 * MiB) / 3000)}`, 'count=7']); // unaligned
}

async function vhdimountTop(child: string): Promise<{ file: string; unmount(): Promise<void> }> {
  const mnt = await mkdtemp(join(tmpdir(), 'vhdimount-'));
  await ok('vhdimount', [child, mnt]);
  let done = false;
  const unmount = async () => {
    if (done) return;
    done = true;
    await run('umount', [mnt]);
    await rm(mnt, { recursive: true, force: true });
  };
  onCleanup(unmount);
  const files = (await readdir(mnt)).filter((f) => f.startsWith('vhdi')).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
  return { file: join(mnt, files[files.length - 1]!), unmount };
}

async function layersOf(descriptor: string): Promise<string[]> {
  return JSON.parse(await readFile(descriptor, 'utf8')).store.layers;
}

beforeAll(async () => {
  requireTools('qemu-img', 'qemu-io', 'vhdimount', 'cmp', 'dd', 'fio');
  dir = await scratch('vdiskfs-chain-');
  images = join(dir, 'images');
  await mkdir(images);
});

describe('chains over qemu-img parents, read back by libvhdi', () => {
  for (const format of ['vhdx', 'vpc'] as const) {
    const ext = format === 'vpc' ? 'vhd' : 'vhdx';
    it(`${ext}: two chains share one parent; libvhdi reads our children exactly as our raw views`, async () => {
      const base = await qemuBase(`shared.${ext}`, format);
      const baseHash = await sha(base);
      const src = join(dir, `src-${ext}`);
      await mkdir(src);
      for (const name of ['a', 'b']) {
        const r = await vdiskfs(['create', 'chain', join(src, `${name}.vdisk`), '--parent', base]);
        expect(r.code, r.stderr).toBe(0);
      }
      const mnt = await mountVdiskfs(src, ['--views', 'raw']);
      await writeThrough(join(mnt.mountpoint, 'a.raw'), 1);
      await writeThrough(join(mnt.mountpoint, 'b.raw'), 2);
      const rawA = join(dir, `a-${ext}.raw`);
      const rawB = join(dir, `b-${ext}.raw`);
      await copyFile(join(mnt.mountpoint, 'a.raw'), rawA);
      await copyFile(join(mnt.mountpoint, 'b.raw'), rawB);
      await mnt.unmount();
      expect(await sha(base), 'the shared parent is never written').toBe(baseHash);
      expect(await sha(rawA)).not.toBe(await sha(rawB));
      // The zero write hides the parent's 0xc3 bytes.
      const buf = await readFile(rawA);
      expect(buf.subarray(21 * MiB, 21 * MiB + 300 * 4096).every((x) => x === 0)).toBe(true);
      expect(buf[20 * MiB]).toBe(0xc3);
      for (const [name, raw] of [['a', rawA], ['b', rawB]] as const) {
        const top = JSON.parse(await readFile(join(src, `${name}.vdisk`), 'utf8')).store.top as string;
        const v = await vhdimountTop(resolve(src, top));
        await ok('cmp', [v.file, raw]);
        await v.unmount();
      }
      // info lists the chain.
      const info = await vdiskfs(['info', join(src, 'a.vdisk'), '--json']);
      expect(info.code).toBe(0);
      const parsed = JSON.parse(info.stdout);
      expect(parsed.depth).toBe(2);
      expect(parsed.chain[0].format).toBe(`${ext} differencing`);
      expect(parsed.chain[1].format).toBe(`${ext} dynamic`);
    }, 120_000);

    it(`${ext}: snapshot, periodic snapshots, commit twice: parent equals the pre-commit raw view (qemu-img compare${format === 'vhdx' ? ', check' : ''})`, async () => {
      const base = await qemuBase(`commit.${ext}`, format);
      const src = join(dir, `commit-${ext}`);
      await mkdir(src);
      const d = join(src, 'c.vdisk');
      expect((await vdiskfs(['create', 'chain', d, '--parent', base])).code).toBe(0);
      let mnt = await mountVdiskfs(src, ['--views', 'raw', '--snapshot-interval', '1']);
      // Ticks every second; each wait leaves room for a tick even on a loaded machine.
      await writeThrough(join(mnt.mountpoint, 'c.raw'), 3);
      await new Promise((r) => setTimeout(r, 2500));
      await writeThrough(join(mnt.mountpoint, 'c.raw'), 4);
      await new Promise((r) => setTimeout(r, 2500));
      const busy = (await layersOf(d)).length;
      expect(busy, 'a periodic snapshot after each burst of writes').toBeGreaterThanOrEqual(4);
      await new Promise((r) => setTimeout(r, 2500));
      expect(await layersOf(d), 'no empty layers while idle').toHaveLength(busy);
      const during = join(dir, `c-${ext}-during.raw`);
      await copyFile(join(mnt.mountpoint, 'c.raw'), during);
      await mnt.unmount();
      const layers = await layersOf(d);
      expect(layers.length, 'periodic snapshots added layers').toBeGreaterThanOrEqual(4);
      // Every layer is a real file libvhdi opens; the top reads as our raw view did.
      const v = await vhdimountTop(resolve(src, layers[0]!));
      await ok('cmp', [v.file, during]);
      await v.unmount();

      expect((await vdiskfs(['snapshot', d])).code).toBe(0);
      mnt = await mountVdiskfs(src, ['--views', 'raw']);
      await writeThrough(join(mnt.mountpoint, 'c.raw'), 5);
      // A snapshot while mounted: the CLI asks the daemon; the raw view keeps working.
      const before = (await layersOf(d)).length;
      const snap = await vdiskfs(['snapshot', d]);
      expect(snap.code, snap.stderr).toBe(0);
      expect(snap.stdout).toContain('by the mount daemon');
      expect(await layersOf(d)).toHaveLength(before + 1);
      await writeThrough(join(mnt.mountpoint, 'c.raw'), 6);
      const pre = join(dir, `c-${ext}-pre.raw`);
      await copyFile(join(mnt.mountpoint, 'c.raw'), pre);
      await mnt.unmount();

      // Commit everything down into the qemu-made base, one layer at a time.
      for (let left = (await layersOf(d)).length; left > 1; left--) {
        const r = await vdiskfs(['commit', d]);
        expect(r.code, r.stderr).toBe(0);
        expect(await layersOf(d)).toHaveLength(left - 1);
      }
      await ok('qemu-img', ['compare', '-f', format, '-F', 'raw', base, pre]);
      if (format === 'vhdx') await ok('qemu-img', ['check', '-f', 'vhdx', base]);
      // And through a mount once more.
      mnt = await mountVdiskfs(src, ['--views', 'raw']);
      await ok('cmp', [join(mnt.mountpoint, 'c.raw'), pre]);
      await mnt.unmount();
    }, 150_000);
  }
});

describe('bad input at mount time', () => {
  it('a moved parent: mount fails, naming the path it tried; nothing modified', async () => {
    const base = await qemuBase('moved.vhdx', 'vhdx');
    const src = join(dir, 'moved');
    await mkdir(src);
    const d = join(src, 'm.vdisk');
    expect((await vdiskfs(['create', 'chain', d, '--parent', base])).code).toBe(0);
    const top = JSON.parse(await readFile(d, 'utf8')).store.top as string;
    const h = await sha(resolve(src, top));
    await rename(base, `${base}.away`);
    const mnt = await mkdtemp(join(tmpdir(), 'vdiskfs-mnt-'));
    onCleanup(() => rm(mnt, { recursive: true, force: true }));
    const r = await vdiskfs(['mount', src, mnt]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`missing or was moved; tried: ${base}`);
    expect(await sha(resolve(src, top))).toBe(h);
    const c = await vdiskfs(['commit', d]);
    expect(c.code).not.toBe(0);
    expect(c.stderr).toContain(base);
  });
});

describe('read speed: our raw view vs vhdimount on the same 3-layer chain', () => {
  it('1 MiB sequential and 4 KiB random reads (ratio reported)', async () => {
    const base = await qemuBase('perf.vhdx', 'vhdx', '256M');
    await ok('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x5a 32M 200M', base]);
    const src = join(dir, 'perf');
    await mkdir(src);
    const d = join(src, 'p.vdisk');
    expect((await vdiskfs(['create', 'chain', d, '--parent', base])).code).toBe(0);
    let mnt = await mountVdiskfs(src, ['--views', 'raw']);
    const raw = join(mnt.mountpoint, 'p.raw');
    await ok('fio', ['--name=w1', `--filename=${raw}`, '--rw=randwrite', '--bs=64k', '--size=256M', '--io_size=48M', '--ioengine=psync', '--end_fsync=1', '--randseed=1']);
    await mnt.unmount();
    expect((await vdiskfs(['snapshot', d])).code).toBe(0);
    mnt = await mountVdiskfs(src, ['--views', 'raw']);
    await ok('fio', ['--name=w2', `--filename=${join(mnt.mountpoint, 'p.raw')}`, '--rw=randwrite', '--bs=4k', '--size=256M', '--io_size=16M', '--ioengine=psync', '--end_fsync=1', '--randseed=2']);
    await mnt.unmount();
    expect(await layersOf(d)).toHaveLength(3);
    // Baseline: a flat store (a plain file behind the same FUSE layer) with the same bytes.
    expect((await vdiskfs(['create', 'flat', join(src, 'f.vdisk'), '--size', '256M'])).code).toBe(0);
    await ok('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', base, join(src, 'f.img')]);

    mnt = await mountVdiskfs(src, ['--views', 'raw']);
    const top = resolve(src, (await layersOf(d))[0]!);
    const v = await vhdimountTop(top);
    await ok('cmp', [join(mnt.mountpoint, 'p.raw'), v.file]);
    const fio = async (file: string, rw: string, bs: string): Promise<number> => {
      const out = await ok('fio', ['--name=r', `--filename=${file}`, `--rw=${rw}`, `--bs=${bs}`, '--size=256M', '--ioengine=psync', '--direct=1', '--time_based', '--runtime=3', '--randseed=3', '--output-format=json'], 60_000);
      const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
      return rw.includes('rand') ? job.read.iops : job.read.bw_bytes / MiB;
    };
    const results: Record<string, { vdiskfs: number; vhdimount: number; ratio: number; flatBaseline: number }> = {};
    for (const [label, rw, bs] of [['seq 1M (MiB/s)', 'read', '1M'], ['rand 4K (IOPS)', 'randread', '4k']] as const) {
      const ours = await fio(join(mnt.mountpoint, 'p.raw'), rw, bs);
      const theirs = await fio(v.file, rw, bs);
      const flat = await fio(join(mnt.mountpoint, 'f.raw'), rw, bs);
      results[label] = { vdiskfs: Math.round(ours), vhdimount: Math.round(theirs), ratio: Math.round((ours / theirs) * 100) / 100, flatBaseline: Math.round(flat) };
    }
    console.log('chain read speed, 3 layers, fio psync direct, 3 s each:', JSON.stringify(results));
    await v.unmount();
    await mnt.unmount();
    for (const r of Object.values(results)) expect(r.vdiskfs).toBeGreaterThan(0);
  }, 150_000);
});

