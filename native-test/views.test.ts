/**
 * The native-format views against the real tools: qemu-img, qemu-io, vhdiinfo and vhdimount open
 * NAME.vhdx, NAME.vhd and NAME.vmdk of flat and LBS stores through a real FUSE mount, read the same
 * bytes as NAME.raw, write through them, and still find the files valid after the session and
 * after a remount. Sizes: tiny (1 MiB), not a multiple of the VHDX block size, and 2 TiB sparse.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rm, stat, writeFile, chmod, mkdtemp } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountVdiskfs, onCleanup, requireTools, run, scratch, vdiskfs, type Mounted } from './support/native.js';
import * as vhdx from '../src/formats/vhdx.js';
import * as vhd from '../src/formats/vhd.js';
import { NULL_GUID } from '../src/formats/guid.js';

const MiB = 1 << 20;
const TiB = 2 ** 40;
const ALL = 'raw,vhdx,vhd,vmdk';

interface Store {
  name: string;
  size: number;
  views: string[];
  /** The bytes written at creation (undefined: left all zero). */
  data?: Buffer;
}

const stores: Store[] = [
  { name: 'tiny', size: MiB, views: ALL.split(',') },
  // 33 MiB + 3.5 KiB: not a multiple of the 1 MiB block size chosen for it.
  { name: 'odd', size: 33 * MiB + 3584, views: ALL.split(',') },
  // An LBS store, 48 MiB + 12 KiB (whole 4 KiB blocks, not whole VHDX blocks).
  { name: 'lbs', size: 48 * MiB + 3 * 4096, views: ALL.split(',') },
  // 2 TiB sparse: too large for a VHD (2040 GiB), so no vhd view.
  { name: 'big', size: 2 * TiB, views: ['raw', 'vhdx', 'vmdk'] },
];
const small = stores.filter((s) => s.name !== 'big');

let dir: string;
let source: string;
let mnt: Mounted;
const path = (file: string) => join(mnt.mountpoint, file);

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 120_000 });
  expect(r.code, `${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`).toBe(0);
  return r.stdout;
}

async function virtualSize(format: string, file: string): Promise<number> {
  return JSON.parse(await ok('qemu-img', ['info', '--output', 'json', '-f', format, file]))['virtual-size'];
}

async function storeStats(name: string): Promise<Record<string, number>> {
  return JSON.parse(await readFile(path(`.vdiskfs/${name}.stats.json`), 'utf8')).stats;
}

beforeAll(async () => {
  requireTools('qemu-img', 'qemu-io', 'vhdiinfo', 'vhdimount', 'cmp', 'dd');
  dir = await scratch('vdiskfs-views-');
  source = join(dir, 'src');
  const meta = join(dir, 'meta');
  await mkdir(source);
  await mkdir(meta, { mode: 0o700 });
  await chmod(meta, 0o700);
  for (const s of stores) {
    const args = s.name === 'lbs'
      ? ['create', 'lbs', join(source, 'lbs.vdisk'), '--size', String(s.size), '--data', join(source, 'lbs.data'), '--meta', meta, '--allow-same-filesystem']
      : ['create', 'flat', join(source, `${s.name}.vdisk`), '--size', String(s.size)];
    const r = await vdiskfs([...args, '--views', s.views.join(',')]);
    expect(r.code, r.stderr).toBe(0);
  }
  mnt = await mountVdiskfs(source);
  for (const s of small) {
    s.data = randomBytes(s.size);
    const fh = await open(path(`${s.name}.raw`), 'r+');
    try {
      await fh.write(s.data, 0, s.data.length, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await writeFile(join(dir, `${s.name}.ref`), s.data);
  }
});

describe('views through the mount', () => {
  it('shows the views each descriptor asks for, at their exact sizes', async () => {
    const names = await readdir(mnt.mountpoint);
    for (const s of stores) {
      for (const v of ['raw', 'vhdx', 'vhd', 'vmdk']) expect(names.includes(`${s.name}.${v}`), `${s.name}.${v}`).toBe(s.views.includes(v));
      expect((await stat(path(`${s.name}.raw`))).size).toBe(s.size);
      if (s.views.includes('vhd')) expect((await stat(path(`${s.name}.vhd`))).size).toBe(s.size + 512);
    }
    // The VHDX covers the whole last block: the tiny disk is header 4 MiB + one 1 MiB block.
    expect((await stat(path('tiny.vhdx'))).size).toBe(5 * MiB);
    expect((await stat(path('odd.vhdx'))).size).toBe(4 * MiB + 34 * MiB);
  });

  for (const s of small) {
    describe(`${s.name} (${s.size} bytes)`, () => {
      it('qemu-img: VHDX info, check, compare and convert agree with the raw view', async () => {
        expect(await virtualSize('vhdx', path(`${s.name}.vhdx`))).toBe(s.size);
        expect(await ok('qemu-img', ['check', '-f', 'vhdx', path(`${s.name}.vhdx`)])).toMatch(/No errors were found/);
        expect(await ok('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', path(`${s.name}.vhdx`), path(`${s.name}.raw`)])).toMatch(/Images are identical/);
        const out = join(dir, `${s.name}.converted`);
        await ok('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', path(`${s.name}.vhdx`), out]);
        await ok('cmp', [out, join(dir, `${s.name}.ref`)]);
      });

      it('qemu-img: the VHD opens with -f vpc at the exact size, the VMDK opens, both compare identical', async () => {
        expect(await virtualSize('vpc', path(`${s.name}.vhd`))).toBe(s.size);
        expect(await ok('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', path(`${s.name}.vhd`), path(`${s.name}.raw`)])).toMatch(/Images are identical/);
        expect(await virtualSize('vmdk', path(`${s.name}.vmdk`))).toBe(s.size);
        expect(await ok('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', path(`${s.name}.vmdk`), path(`${s.name}.raw`)])).toMatch(/Images are identical/);
      });

      it('libvhdi: vhdiinfo accepts the VHDX and VHD, and vhdimount reads the same bytes', async () => {
        const info = await ok('vhdiinfo', [path(`${s.name}.vhdx`)]);
        expect(info).toMatch(/Format\s*:\s*VHDX/);
        expect(info).toContain(`(${s.size} bytes)`);
        expect(await ok('vhdiinfo', [path(`${s.name}.vhd`)])).toMatch(/Disk type\s*:\s*Fixed/);
        // Inside the scratch directory, so it is removed with it even if the test fails.
        const vm = await mkdtemp(join(dir, 'vhdimount-'));
        await ok('vhdimount', [path(`${s.name}.vhdx`), vm]);
        onCleanup(async () => void (await run('umount', [vm])));
        try {
          await ok('cmp', [join(vm, 'vhdi1'), join(dir, `${s.name}.ref`)]);
        } finally {
          await run('umount', [vm]);
        }
      });
    });
  }

  it('qemu-io writes through the VHDX land in the store; the VHDX stays valid after the session and a remount', async () => {
    for (const s of small) {
      const vhdx = path(`${s.name}.vhdx`);
      const last = s.size - 512;
      await ok('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0xa5 0 64k', '-c', `write -P 0x5a ${Math.floor(s.size / 2 / 512) * 512} 512`, '-c', `write -P 0xc3 ${last} 512`, vhdx]);
      const back = await ok('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0xa5 0 64k', '-c', `read -P 0x5a ${Math.floor(s.size / 2 / 512) * 512} 512`, '-c', `read -P 0xc3 ${last} 512`, path(`${s.name}.raw`)]);
      expect(back).not.toMatch(/Pattern verification failed/);
      expect(back.match(/^read /gm)?.length).toBe(3);
      expect(await ok('qemu-img', ['check', '-f', 'vhdx', vhdx])).toMatch(/No errors were found/);
      // QEMU rewrote both headers; they were kept in the overlay beside the descriptor.
      expect(existsSync(join(source, `${s.name}.vhdx-overlay`))).toBe(true);
      // The same through the VHD and the VMDK (QEMU rewrites the VMDK's CID).
      await ok('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x71 128k 4k', path(`${s.name}.vhd`)]);
      await ok('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x72 256k 4k', path(`${s.name}.vmdk`)]);
      const more = await ok('qemu-io', ['-r', '-f', 'vhdx', '-c', 'read -P 0x71 128k 4k', '-c', 'read -P 0x72 256k 4k', vhdx]);
      expect(more).not.toMatch(/Pattern verification failed/);
    }
    await mnt.unmount();
    mnt = await mountVdiskfs(source);
    for (const s of small) {
      const vhdx = path(`${s.name}.vhdx`);
      expect(await ok('qemu-img', ['check', '-f', 'vhdx', vhdx])).toMatch(/No errors were found/);
      const back = await ok('qemu-io', ['-r', '-f', 'vhdx', '-c', 'read -P 0xa5 0 64k', '-c', `read -P 0xc3 ${s.size - 512} 512`, vhdx]);
      expect(back).not.toMatch(/Pattern verification failed/);
      // A second session bumps the headers again from the persisted ones.
      await ok('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x11 4k 4k', vhdx]);
      expect(await ok('qemu-img', ['check', '-f', 'vhdx', vhdx])).toMatch(/No errors were found/);
      expect(await virtualSize('vmdk', path(`${s.name}.vmdk`))).toBe(s.size);
    }
  });

  it('2 TiB sparse: metadata is generated without reading the payload, and the VHDX works', async () => {
    const vhdx = path('big.vhdx');
    expect(await virtualSize('vhdx', vhdx)).toBe(2 * TiB);
    expect(await ok('qemu-img', ['check', '-f', 'vhdx', vhdx])).toMatch(/No errors were found/);
    expect(await ok('vhdiinfo', [vhdx])).toContain(`(${2 * TiB} bytes)`);
    expect(await virtualSize('vmdk', path('big.vmdk'))).toBe(2 * TiB);
    expect((await storeStats('big')).bytesRead).toBe(0);
    const off = 1.5 * TiB + 12345 * 512;
    await ok('qemu-io', ['-f', 'vhdx', '-c', `write -P 0x99 ${off} 1m`, vhdx]);
    const back = await ok('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0x99 ${off} 1m`, '-c', `read -P 0 ${off + MiB} 4k`, path('big.raw')]);
    expect(back).not.toMatch(/Pattern verification failed/);
    expect(await ok('qemu-img', ['check', '-f', 'vhdx', vhdx])).toMatch(/No errors were found/);
  });

  it('refuses writes that would break a generated structure, and nothing is corrupted', async () => {
    const vhdx = path('tiny.vhdx');
    const fh = await open(vhdx, 'r+');
    try {
      // A header with a stale checksum: EINVAL.
      await expect(fh.write(Buffer.alloc(80, 0x41), 0, 80, 0x10000)).rejects.toMatchObject({ code: 'EINVAL' });
      // Moving a block in the BAT (2 MiB): EPERM.
      await expect(fh.write(Buffer.alloc(8, 0xff), 0, 8, 2 * MiB)).rejects.toMatchObject({ code: 'EPERM' });
    } finally {
      await fh.close();
    }
    // Data into the padding after the last sector of odd.vhdx is refused too.
    const odd = await open(path('odd.vhdx'), 'r+');
    try {
      await expect(odd.write(Buffer.alloc(512, 1), 0, 512, (await stat(path('odd.vhdx'))).size - 512)).rejects.toMatchObject({ code: 'EPERM' });
    } finally {
      await odd.close();
    }
    const vhd = await open(path('tiny.vhd'), 'r+');
    try {
      await expect(vhd.write(Buffer.alloc(16, 7), 0, 16, MiB + 100)).rejects.toMatchObject({ code: 'EINVAL' });
    } finally {
      await vhd.close();
    }
    expect(await ok('qemu-img', ['check', '-f', 'vhdx', vhdx])).toMatch(/No errors were found/);
    expect(await virtualSize('vpc', path('tiny.vhd'))).toBe(MiB);
    expect(await readFile(mnt.logFile, 'utf8')).toMatch(/refused a write of 80 bytes at 0x10000 of the VHDX view/);
  });

  it('gives EIO for an unreadable LBS block through every view, and only for that block', async () => {
    const bad = join(dir, 'bad-src');
    const meta = join(dir, 'bad-meta');
    await mkdir(bad);
    await mkdir(meta, { mode: 0o700 });
    await chmod(meta, 0o700);
    const r = await vdiskfs(['create', 'lbs', join(bad, 'b.vdisk'), '--size', '8M', '--data', join(bad, 'b.data'), '--meta', meta, '--allow-same-filesystem', '--views', ALL]);
    expect(r.code, r.stderr).toBe(0);
    const data = randomBytes(64 * 1024);
    let m = await mountVdiskfs(bad);
    const fh = await open(join(m.mountpoint, 'b.raw'), 'r+');
    await fh.write(data, 0, data.length, 0);
    await fh.sync();
    await fh.close();
    await m.unmount();
    // Flip a byte in the third physical block (the data area starts at 4 KiB): its checksum fails.
    const df = await open(join(bad, 'b.data'), 'r+');
    const one = Buffer.alloc(1);
    await df.read(one, 0, 1, 4096 + 2 * 4096 + 100);
    one[0]! ^= 0xff;
    await df.write(one, 0, 1, 4096 + 2 * 4096 + 100);
    await df.close();
    m = await mountVdiskfs(bad);
    const vhdxStart = 4 * MiB;
    const failed: Record<string, number[]> = { raw: [], vhdx: [], vhd: [] };
    for (const [view, base] of [['raw', 0], ['vhdx', vhdxStart], ['vhd', 0]] as const) {
      for (let blk = 0; blk < 16; blk++) {
        const out = join(dir, `blk-${view}-${blk}`);
        const dd = await run('dd', [`if=${join(m.mountpoint, `b.${view}`)}`, `of=${out}`, 'bs=4096', `skip=${base / 4096 + blk}`, 'count=1', 'iflag=direct', 'status=none']);
        if (dd.code !== 0) {
          expect(dd.stderr).toMatch(/Input\/output error/);
          failed[view]!.push(blk);
        } else {
          expect(Buffer.compare(await readFile(out), data.subarray(blk * 4096, (blk + 1) * 4096)), `${view} block ${blk}`).toBe(0);
        }
      }
    }
    expect(failed.raw!.length).toBe(1);
    expect(failed.vhdx).toEqual(failed.raw);
    expect(failed.vhd).toEqual(failed.raw);
    // The generated parts of every view still read.
    expect(await ok('qemu-img', ['check', '-f', 'vhdx', join(m.mountpoint, 'b.vhdx')])).toMatch(/No errors were found/);
    await m.unmount();
  });

  it('on a read-only mount every view opens read-only and no overlay is created', async () => {
    const ro = join(dir, 'ro-src');
    await mkdir(ro);
    expect((await vdiskfs(['create', 'flat', join(ro, 'r.vdisk'), '--size', '8M', '--views', ALL])).code).toBe(0);
    const m = await mountVdiskfs(ro, ['--read-only']);
    for (const v of ['raw', 'vhdx', 'vhd', 'vmdk']) expect((await stat(join(m.mountpoint, `r.${v}`))).mode & 0o777).toBe(0o444);
    expect(await ok('qemu-img', ['check', '-f', 'vhdx', join(m.mountpoint, 'r.vhdx')])).toMatch(/No errors were found/);
    expect(await ok('qemu-io', ['-r', '-f', 'vhdx', '-c', 'read -P 0 0 64k', join(m.mountpoint, 'r.vhdx')])).not.toMatch(/Pattern verification failed/);
    const w = await run('qemu-io', ['-f', 'vhdx', '-c', 'write 0 64k', join(m.mountpoint, 'r.vhdx')]);
    expect(w.stderr + w.stdout).toMatch(/Read-only file system/);
    expect(await virtualSize('vpc', join(m.mountpoint, 'r.vhd'))).toBe(8 * MiB);
    await m.unmount();
    expect((await readdir(ro)).filter((f) => f.includes('overlay'))).toEqual([]);
  });

  it('--views on the mount overrides descriptors; a store a view cannot express fails the mount clearly', async () => {
    const other = join(dir, 'other-src');
    await mkdir(other);
    expect((await vdiskfs(['create', 'flat', join(other, 'x.vdisk'), '--size', '4M'])).code).toBe(0);
    const m = await mountVdiskfs(other, ['--views', 'raw,vhd']);
    expect((await readdir(m.mountpoint)).filter((f) => !f.startsWith('.')).sort()).toEqual(['x.raw', 'x.vhd']);
    await m.unmount();
    // big is 2 TiB: asking every store for a VHD cannot work, and nothing gets mounted. (Read-only:
    // the stores are mounted writable elsewhere in this file, and a second writer is refused.)
    const failMnt = await mkdtemp(join(tmpdir(), 'vdiskfs-mnt-'));
    onCleanup(() => rm(failMnt, { recursive: true, force: true }));
    const r = await vdiskfs(['mount', source, failMnt, '--read-only', '--views', 'raw,vhd', '--log-file', join(dir, 'fail.log')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/store big: cannot show it as a VHD: a VHD can describe at most 2040 GiB/);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(failMnt);
  });
});

describe('the format modules read files qemu-img made', () => {
  it('VHDX: headers, region table, metadata, BAT, payload and the log entry of an allocation', async () => {
    const f = join(dir, 'qemu.vhdx');
    await ok('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=dynamic,block_size=8M', f, '1G']);
    await ok('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x42 8M 4k', f]);
    const b = new Uint8Array(await readFile(f));
    expect(vhdx.decodeFileIdentifier(b).creator).toMatch(/QEMU/);
    const { header } = vhdx.selectCurrentHeader(b.subarray(vhdx.HEADER1_OFFSET), b.subarray(vhdx.HEADER2_OFFSET));
    expect(header).toMatchObject({ logGuid: NULL_GUID, version: 1, logVersion: 0 });
    const regions = vhdx.decodeRegionTable(b.subarray(vhdx.REGION_TABLE1_OFFSET));
    const batRegion = regions.find((r) => r.guid === vhdx.REGION_GUID_BAT)!;
    const metaRegion = regions.find((r) => r.guid === vhdx.REGION_GUID_METADATA)!;
    const region = b.subarray(metaRegion.fileOffset, metaRegion.fileOffset + metaRegion.length);
    const meta = vhdx.decodeMetadataItems(vhdx.decodeMetadataTable(region, metaRegion.length), (o, n) => region.subarray(o, o + n));
    expect(meta).toMatchObject({ virtualDiskSize: 1 << 30, logicalSectorSize: 512, fileParameters: { blockSize: 8 * MiB, hasParent: false } });
    const g = vhdx.batGeometry({ virtualSize: meta.virtualDiskSize, blockSize: meta.fileParameters.blockSize, logicalSectorSize: 512 });
    const entry = (block: number) => vhdx.decodeBatEntry(b, batRegion.fileOffset + vhdx.payloadBatIndex(block, g.chunkRatio) * 8);
    expect(entry(0).state).toBeLessThan(vhdx.PayloadBlockState.FULLY_PRESENT);
    const e1 = entry(1);
    expect(e1.state).toBe(vhdx.PayloadBlockState.FULLY_PRESENT);
    expect(b.subarray(e1.fileOffset, e1.fileOffset + 4096).every((x) => x === 0x42)).toBe(true);
    // The allocation went through the log (QEMU logs BAT updates): decode that entry.
    const log = b.subarray(header.logOffset, header.logOffset + header.logLength);
    const h = vhdx.decodeLogEntryHeader(log);
    expect(vhdx.logEntryChecksumOk(log)).toBe(true);
    expect(h.descriptorCount).toBeGreaterThan(0);
    const descriptors = Array.from({ length: h.descriptorCount }, (_, i) => vhdx.decodeLogDescriptor(log, vhdx.logDescriptorOffset(i)));
    const data = descriptors.find((d): d is Extract<vhdx.VhdxLogDescriptor, { kind: 'data' }> => d.kind === 'data');
    if (!data) throw new Error('the log entry has no data descriptor');
    expect(data.fileOffset).toBe(batRegion.fileOffset);
    const sector = vhdx.decodeLogDataSector(log.subarray(vhdx.logDescriptorSectors(h.descriptorCount) * 4096));
    expect(vhdx.logSequenceMatches(h.sequenceNumber, sector)).toBe(true);
    const restored = vhdx.restoreLoggedSector(data, sector);
    expect(vhdx.decodeBatEntry(restored, vhdx.payloadBatIndex(1, g.chunkRatio) * 8)).toEqual(e1);
  });

  it('VHD: footer (both copies), dynamic header, BAT and MSB-first bitmap of a dynamic disk', async () => {
    const f = join(dir, 'qemu.vhd');
    await ok('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', f, '64M']);
    await ok('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x24 2M 4k', f]);
    const b = new Uint8Array(await readFile(f));
    const footer = vhd.decodeVhdFooter(b.subarray(b.length - 512));
    expect(footer).toMatchObject({ currentSize: 64 * MiB, diskType: vhd.VhdDiskType.DYNAMIC, dataOffset: 512, creatorApplication: 'qem2' });
    expect(vhd.decodeVhdFooter(b.subarray(0, 512))).toEqual(footer);
    const dyn = vhd.decodeVhdDynamicHeader(b.subarray(512));
    expect(dyn).toMatchObject({ blockSize: 2 * MiB, maxTableEntries: 32 });
    const bat = vhd.decodeVhdBat(b.subarray(dyn.tableOffset), dyn.maxTableEntries);
    expect(bat[0]).toBe(vhd.VHD_BAT_UNUSED);
    expect(bat[1]).not.toBe(vhd.VHD_BAT_UNUSED);
    const bitmap = b.subarray(bat[1]! * 512, bat[1]! * 512 + vhd.vhdBlockBitmapSize(dyn.blockSize));
    expect(vhd.vhdBitmapGet(bitmap, 0)).toBe(true);
    const at = vhd.vhdSectorOffset(bat[1]!, dyn.blockSize, 0);
    expect(b.subarray(at, at + 4096).every((x) => x === 0x24)).toBe(true);
  });
});
