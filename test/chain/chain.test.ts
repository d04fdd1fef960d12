/**
 * Chains with real content in every layer: snapshots, undo, commit through the store and the CLI
 * operations, sector-granular bitmaps, zero writes and discards hiding the parent, shared parents,
 * and bad input (missing, moved or replaced parents, loops, truncation, bad checksums, unknown
 * required structures) refused with a clear error and nothing modified.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { copyFile, readFile, rename, truncate, writeFile, stat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { checked, type CheckedDevice } from '../../src/devices/block-device.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { loadDescriptor } from '../../src/stores/descriptor.js';
import { chainStore } from '../../src/stores/chain/chain-store.js';
import { ChainDevice } from '../../src/stores/chain/chain-device.js';
import { commitChain, createChainStore, snapshotChain, undoChain } from '../../src/stores/chain/operations.js';
import { createLayerFile, openLayer } from '../../src/stores/chain/images.js';
import { openChainFrom } from '../../src/stores/chain/parent-resolver.js';
import type { LayerFormat } from '../../src/stores/chain/layer.js';
import { crc32c } from '../../src/formats/crc32c.js';
import { decodeHeader, encodeHeader } from '../../src/formats/vhdx.js';
import { decodeVhdFooter, encodeVhdFooter } from '../../src/formats/vhd.js';
import { compareAll } from '../support/conformance.js';
import { Random } from '../support/random.js';
import { scratchDir } from '../support/tmp.js';

const dir = await scratchDir('vdiskfs-chain-ops-');
let n = 0;
const MiB = 1 << 20;

async function sha(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** A base file of `format` filled with random data through our own writer. */
async function makeBase(format: LayerFormat, size: number, rnd: Random, ref?: CheckedDevice): Promise<string> {
  const path = join(dir, `base${n++}.${format}`);
  await createLayerFile(path, { format, size, blockSize: format === 'vhdx' ? MiB : 256 * 1024 });
  const dev = checked(new ChainDevice(await openChainFrom(path, true, openLayer), false));
  for (let i = 0; i < 20; i++) {
    const len = 1 + rnd.int(300_000);
    const off = rnd.int(size - len);
    const data = rnd.bytes(len);
    await dev.write(data, off);
    await ref?.write(data, off);
  }
  await dev.close();
  return path;
}

async function randomWrites(dev: CheckedDevice, ref: CheckedDevice, rnd: Random, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const len = 1 + rnd.int(rnd.int(3) === 0 ? 400_000 : 5000);
    const off = rnd.int(dev.size - len);
    const kind = rnd.int(5);
    if (kind === 0) {
      await dev.discard(off, len);
      await ref.discard(off, len);
    } else {
      const data = kind === 1 ? new Uint8Array(len) : rnd.bytes(len);
      await dev.write(data, off);
      await ref.write(data, off);
    }
  }
}

async function openStore(descriptor: string, readOnly = false): Promise<CheckedDevice> {
  return checked(await chainStore.open(await loadDescriptor(descriptor), { readOnly }));
}

for (const format of ['vhd', 'vhdx'] as LayerFormat[]) {
  describe(`chain of ${format.toUpperCase()} files`, () => {
    const size = 5 * MiB + 3 * 512; // not a multiple of any block size

    it('snapshots while open (5 layers), undo, commit: always equal to a reference that got the same writes', async () => {
      const rnd = new Random(format === 'vhd' ? 11 : 12);
      const ref = checked(new MemoryDevice(size));
      const base = await makeBase(format, size, rnd, ref);
      const baseHash = await sha(base);
      const descriptor = join(dir, `snap-${format}.vdisk`);
      await createChainStore({ descriptorPath: descriptor, parentPath: base, blockSize: format === 'vhdx' ? MiB : 64 * 1024 });
      let dev = await openStore(descriptor);
      await cmp(dev, ref, 'step 1');
      for (let layer = 0; layer < 3; layer++) {
        await randomWrites(dev, ref, rnd, 30);
        await compareAll(dev, ref).catch((e) => { throw new Error(`layer ${layer}: ${e.message}`); });
        await (dev.inner as ChainDevice).snapshot();
        await cmp(dev, ref, 'step 2');
      }
      expect((dev.inner as ChainDevice).layers.length).toBe(5);
      await randomWrites(dev, ref, rnd, 30);
      await cmp(dev, ref, 'before close');
      await dev.close();
      // Reopened, and read-only: the same.
      dev = await openStore(descriptor, true);
      await cmp(dev, ref, 'step 3');
      await dev.close();
      expect(await sha(base)).toBe(baseHash);

      // undo discards only what was written since the last snapshot.
      const atSnapshot = checked(new MemoryDevice(size));
      dev = await openStore(descriptor);
      await (dev.inner as ChainDevice).snapshot();
      await copyAll(dev, atSnapshot);
      await randomWrites(dev, ref, rnd, 20);
      await dev.close();
      const u = await undoChain(descriptor);
      await expect(stat(u.discarded)).rejects.toMatchObject({ code: 'ENOENT' });
      dev = await openStore(descriptor, true);
      await cmp(dev, atSnapshot, 'step 4');
      expect((dev.inner as ChainDevice).layers.length).toBe(6);
      await dev.close();

      // Write into the fresh top, then commit it (and the next) down: content unchanged.
      dev = await openStore(descriptor);
      await randomWrites(dev, atSnapshot, rnd, 20);
      await dev.close();
      for (let k = 0; k < 2; k++) {
        const r = await commitChain(descriptor);
        expect(r.bytes).toBeGreaterThan(0);
        dev = await openStore(descriptor, true);
        await cmp(dev, atSnapshot, 'step 5');
        expect((dev.inner as ChainDevice).layers.length).toBe(5 - k);
        await dev.close();
      }
      expect(await sha(base)).toBe(baseHash);
      const info = await chainStore.describe(await loadDescriptor(descriptor));
      expect(info.depth).toBe(4);
      expect((info.chain as { format: string }[])[3]!.format).toBe(`${format} dynamic`);
    });

    it('sector-granular bitmaps: 512-byte writes inside a block leave the parent visible around them', async () => {
      const rnd = new Random(21);
      const ref = checked(new MemoryDevice(size));
      const base = await makeBase(format, size, rnd, ref);
      const descriptor = join(dir, `sector-${format}-${n++}.vdisk`);
      await createChainStore({ descriptorPath: descriptor, parentPath: base });
      const dev = await openStore(descriptor);
      for (const sector of [0, 1, 7, 8, 9, 100, 4095, 4096, 4097, 8191]) {
        const data = rnd.bytes(512);
        await dev.write(data, sector * 512);
        await ref.write(data, sector * 512);
      }
      await compareAll(dev, ref);
      await dev.close();
      const again = await openStore(descriptor, true);
      await compareAll(again, ref);
      const top = (again.inner as ChainDevice).layers[0]!;
      const ranges: [number, number][] = [];
      for await (const r of top.presentRanges()) {
        const last = ranges[ranges.length - 1];
        if (last && last[0] + last[1] === r[0]) last[1] += r[1];
        else ranges.push([...r]);
      }
      // VHDX records single sectors; VHD writes whole bitmap bytes (4 KiB, see vhd-image.ts).
      expect(ranges).toEqual(
        format === 'vhdx'
          ? [[0, 1024], [7 * 512, 3 * 512], [100 * 512, 512], [4095 * 512, 3 * 512], [8191 * 512, 512]]
          : [[0, 8192], [96 * 512, 4096], [4088 * 512, 16 * 512], [8184 * 512, 4096]],
      );
      await again.close();
    });

    it('zero writes and discards in a child hide the parent', async () => {
      const rnd = new Random(31);
      const base = await makeBase(format, size, rnd);
      const descriptor = join(dir, `zero-${format}-${n++}.vdisk`);
      await createChainStore({ descriptorPath: descriptor, parentPath: base });
      const dev = await openStore(descriptor);
      const whole = new Uint8Array(size);
      await dev.read(whole, 0);
      expect(whole.some((b) => b !== 0)).toBe(true);
      await dev.write(new Uint8Array(size), 0); // zeros over everything, whole blocks too
      await dev.close();
      const d2 = await openStore(descriptor);
      const got = new Uint8Array(size).fill(1);
      await d2.read(got, 0);
      expect(got.every((b) => b === 0)).toBe(true);
      await d2.close();
      // And a discard of a range, after a snapshot, over a fresh child.
      await undoChain(descriptor);
      const d3 = await openStore(descriptor);
      await d3.discard(1000, 3 * MiB);
      await d3.close();
      const d4 = await openStore(descriptor, true);
      const part = new Uint8Array(3 * MiB).fill(1);
      await d4.read(part, 1000);
      expect(part.every((b) => b === 0)).toBe(true);
      await d4.close();
    });
  });
}

describe('commit is resumable', () => {
  for (const format of ['vhd', 'vhdx'] as LayerFormat[]) {
    it(`${format}: interrupted mid-copy, the store refuses to open until commit is run again, then equals the chain before`, async () => {
      const rnd = new Random(81);
      const size = 6 * MiB;
      const ref = checked(new MemoryDevice(size));
      const base = await makeBase(format, size, rnd, ref);
      const d = join(dir, `resume-${format}.vdisk`);
      await createChainStore({ descriptorPath: d, parentPath: base });
      let dev = await openStore(d);
      await randomWrites(dev, ref, rnd, 40);
      await dev.close();
      await snapshotChain(d);
      dev = await openStore(d);
      await randomWrites(dev, ref, rnd, 40);
      await dev.close();
      // "Crash" after part of the copy: the progress callback throws.
      let calls = 0;
      await expect(
        commitChain(d, () => {
          if (++calls === 3) throw new Error('simulated crash');
        }),
      ).rejects.toThrow('simulated crash');
      expect((await loadDescriptor(d)).descriptor.store.commit).toBeDefined();
      await expect(openStore(d, true)).rejects.toThrow(/commit .* was interrupted; run "vdiskfs commit/);
      const r = await commitChain(d);
      expect(r.bytes).toBeGreaterThan(0);
      const after = await loadDescriptor(d);
      expect(after.descriptor.store.commit).toBeUndefined();
      expect((after.descriptor.store.layers as string[]).length).toBe(2);
      dev = await openStore(d, true);
      await cmp(dev, ref, 'after resumed commit');
      await dev.close();
    });
  }
});

async function cmp(a: CheckedDevice, b: CheckedDevice, step: string): Promise<void> {
  await compareAll(a, b).catch((e: Error) => {
    throw new Error(`${step}: ${e.message}`);
  });
}

async function copyAll(from: CheckedDevice, to: CheckedDevice): Promise<void> {
  const buf = new Uint8Array(MiB);
  for (let off = 0; off < from.size; off += MiB) {
    const b = buf.subarray(0, Math.min(MiB, from.size - off));
    await from.read(b, off);
    await to.write(b, off);
  }
}

describe('shared parents', () => {
  it('two chains over one parent are open at once; the parent is never written', async () => {
    const rnd = new Random(41);
    const size = 4 * MiB;
    const ref = checked(new MemoryDevice(size));
    const base = await makeBase('vhdx', size, rnd, ref);
    const h = await sha(base);
    const a = join(dir, 'share-a.vdisk');
    const b = join(dir, 'share-b.vdisk');
    await createChainStore({ descriptorPath: a, parentPath: base });
    await createChainStore({ descriptorPath: b, parentPath: base });
    const da = await openStore(a);
    const db = await openStore(b);
    const refB = checked(new MemoryDevice(size));
    await copyAll(ref, refB);
    await randomWrites(da, ref, rnd, 30);
    await randomWrites(db, refB, rnd, 30);
    await compareAll(da, ref);
    await compareAll(db, refB);
    await da.close();
    await db.close();
    expect(await sha(base)).toBe(h);
  });

  it('a second writer of one store is refused while the first holds it', async () => {
    const base = join(dir, `lock-base.vhd`);
    await createLayerFile(base, { format: 'vhd', size: MiB });
    const d = join(dir, 'lock.vdisk');
    await createChainStore({ descriptorPath: d, parentPath: base });
    const first = await openStore(d);
    await expect(openStore(d)).rejects.toMatchObject({ code: 'EBUSY' });
    await expect(snapshotChain(d)).rejects.toThrow(/in use by process/);
    await first.close();
    await snapshotChain(d);
  });
});

describe('bad input: a clear error, nothing modified', () => {
  async function chainOf(format: LayerFormat): Promise<{ base: string; child: string; descriptor: string }> {
    const rnd = new Random(51 + n);
    const base = await makeBase(format, 3 * MiB, rnd);
    const descriptor = join(dir, `bad-${n++}.vdisk`);
    const r = await createChainStore({ descriptorPath: descriptor, parentPath: base });
    const dev = await openStore(descriptor);
    await dev.write(rnd.bytes(5000), 12345);
    await dev.close();
    return { base, child: r.childPath, descriptor };
  }

  async function expectRefused(descriptor: string, files: string[], pattern: RegExp): Promise<void> {
    const before = await Promise.all(files.map(sha));
    await expect(openStore(descriptor)).rejects.toThrow(pattern);
    await expect(openStore(descriptor, true)).rejects.toThrow(pattern);
    expect(await Promise.all(files.map(sha))).toEqual(before);
  }

  for (const format of ['vhd', 'vhdx'] as LayerFormat[]) {
    it(`${format}: a missing or moved parent names the paths tried`, async () => {
      const { base, child, descriptor } = await chainOf(format);
      await rename(base, `${base}.moved`);
      await expectRefused(descriptor, [child], new RegExp(`missing or was moved; tried: ${base.replace(/[.]/g, '\\.')}`));
    });

    it(`${format}: a parent whose identity does not match`, async () => {
      const { base, child, descriptor } = await chainOf(format);
      await rename(base, `${base}.orig`);
      await createLayerFile(base, { format, size: 3 * MiB });
      await expectRefused(descriptor, [child, base], /identity .* is not the one the child recorded/);
    });

    it(`${format}: a truncated child`, async () => {
      const { base, child, descriptor } = await chainOf(format);
      const st = await stat(child);
      await truncate(child, st.size - (format === 'vhd' ? 4096 : 2 * MiB));
      await expectRefused(descriptor, [child, base], /truncated/);
    });

    it(`${format}: a loop in the chain`, async () => {
      // a → b → a: b is a child of a; then a is replaced by a child of b that carries a's identity.
      const a = join(dir, `loop-a-${n}.${format}`);
      const b = join(dir, `loop-b-${n++}.${format}`);
      await createLayerFile(a, { format, size: MiB });
      const la = await openLayer(a, false);
      const idA = la.identity;
      await createLayerFile(b, { format, size: MiB, parent: la });
      await la.close();
      const lb = await openLayer(b, false);
      const a2 = `${a}.new`;
      await createLayerFile(a2, { format, size: MiB, parent: lb });
      await lb.close();
      const bytes = Buffer.from(await readFile(a2));
      if (format === 'vhdx') {
        for (const at of [0x10000, 0x20000]) {
          const h = decodeHeader(bytes.subarray(at, at + 4096));
          Buffer.from(encodeHeader({ ...h, dataWriteGuid: idA })).copy(bytes, at);
        }
      } else {
        const f = decodeVhdFooter(bytes.subarray(bytes.length - 512));
        const enc = Buffer.from(encodeVhdFooter({ ...f, uniqueId: idA }));
        enc.copy(bytes, 0);
        enc.copy(bytes, bytes.length - 512);
      }
      await writeFile(a, bytes);
      await expect(openChainFrom(a, false, openLayer)).rejects.toThrow(/loops: .* is its own ancestor/);
    });
  }

  it('vhdx: a child with a live log (needs replay) and a missing parent: refused before anything is replayed', async () => {
    const base = await makeBase('vhdx', 3 * MiB, new Random(71));
    const child = join(dir, `live-${n++}.vhdx`);
    const p = await openLayer(base, false);
    await createLayerFile(child, { format: 'vhdx', size: 3 * MiB, parent: p });
    await p.close();
    const dev = checked(new ChainDevice(await openChainFrom(child, true, openLayer), false, {}, 0));
    await dev.write(new Random(72).bytes(70_000), 5000);
    await dev.flush();
    // A copy taken mid-session: LogGuid set, the log holding the last entry.
    const live = join(dir, `live-copy-${n++}.vhdx`);
    await copyFile(child, live);
    await dev.close();
    const bytes = await readFile(live);
    expect(bytes.readUInt32LE(0x20000 + 48) | bytes.readUInt32LE(0x10000 + 48)).not.toBe(0);
    // Readable as it is (replayed in memory), with the parent present:
    const ro = await openChainFrom(live, false, openLayer);
    for (const l of ro) await l.close();
    await rename(base, `${base}.away`);
    const h = await sha(live);
    await expect(openChainFrom(live, true, openLayer)).rejects.toThrow(/missing or was moved/);
    expect(await sha(live)).toBe(h);
  });

  it('vhd: a bad footer checksum (both copies) and a bad dynamic header checksum', async () => {
    const { base, child, descriptor } = await chainOf('vhd');
    const st = await stat(child);
    const fh = await open(child, 'r+');
    await fh.write(Uint8Array.of(0x5a), 0, 1, st.size - 512 + 100);
    await fh.write(Uint8Array.of(0x5a), 0, 1, 100);
    await fh.close();
    await expectRefused(descriptor, [child, base], /checksum/);
    const { child: c2, descriptor: d2, base: b2 } = await chainOf('vhd');
    const fh2 = await open(c2, 'r+');
    await fh2.write(Uint8Array.of(0x5a), 0, 1, 512 + 200);
    await fh2.close();
    await expectRefused(d2, [c2, b2], /dynamic header: checksum/);
  });

  it('vhdx: bad header checksums, an unknown required region, an unknown required metadata item', async () => {
    const { base, child, descriptor } = await chainOf('vhdx');
    const orig = await readFile(child);
    const corrupt = Buffer.from(orig);
    corrupt[0x10000 + 100]! ^= 1;
    corrupt[0x20000 + 100]! ^= 1;
    await writeFile(child, corrupt);
    await expectRefused(descriptor, [child, base], /no valid VHDX header/);

    // An extra region with Required set: rewrite both region tables with a CRC that matches.
    const withRegion = Buffer.from(orig);
    for (const at of [0x30000, 0x40000]) {
      const t = withRegion.subarray(at, at + 0x10000);
      const count = t.readUInt32LE(8);
      const e = 16 + count * 32;
      Buffer.from('0123456789abcdef0123456789abcdef', 'hex').copy(t, e);
      t.writeBigUInt64LE(BigInt(0x7f00000), e + 16);
      t.writeUInt32LE(0x100000, e + 24);
      t.writeUInt32LE(1, e + 28);
      t.writeUInt32LE(count + 1, 8);
      t.writeUInt32LE(0, 4);
      t.writeUInt32LE(crc32c(t), 4);
    }
    await writeFile(child, withRegion);
    await expectRefused(descriptor, [child, base], /region .* is marked required but vdiskfs does not know it/);

    // An unknown metadata item with IsRequired.
    const withItem = Buffer.from(orig);
    const metaOffset = Number(withItem.readBigUInt64LE(0x30000 + 16 + 32 + 16)); // second region entry: metadata
    const mt = withItem.subarray(metaOffset, metaOffset + 0x10000);
    const count = mt.readUInt16LE(10);
    const e = 32 + count * 32;
    Buffer.from('fedcba9876543210fedcba9876543210', 'hex').copy(mt, e);
    mt.writeUInt32LE(0x20000, e + 16);
    mt.writeUInt32LE(8, e + 20);
    mt.writeUInt32LE(4, e + 24);
    mt.writeUInt16LE(count + 1, 10);
    await writeFile(child, withItem);
    await expectRefused(descriptor, [child, base], /unknown required item/);
    await writeFile(child, orig);
    const ok = await openStore(descriptor, true);
    await ok.close();
  });

  it('the CLI exits non-zero with the message', async () => {
    const { main } = await import('../../src/cli/main.js');
    const { base, descriptor } = await chainOf('vhdx');
    await rename(base, `${base}.gone`);
    let err = '';
    const write = process.stderr.write;
    process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
    try {
      expect(await main(['snapshot', descriptor])).toBe(1);
      expect(await main(['commit', descriptor])).toBe(1);
      expect(await main(['info', descriptor])).toBe(1);
    } finally {
      process.stderr.write = write;
    }
    expect(err).toMatch(/missing or was moved; tried: /);
    await rename(`${base}.gone`, base);
    expect(await main(['snapshot', descriptor])).toBe(0);
  });
});


describe('background flush and idle snapshots', () => {
  for (const format of ['vhd', 'vhdx'] as LayerFormat[]) {
    it(`${format}: unflushed writes reach the file by themselves (background flush)`, async () => {
      const size = 4 * MiB;
      const base = join(dir, `auto-base-${n++}.${format}`);
      await createLayerFile(base, { format, size });
      const descriptor = join(dir, `auto-${n++}.vdisk`);
      await createChainStore({ descriptorPath: descriptor, parentPath: base });
      const loaded = await loadDescriptor(descriptor);
      const layers = await openChainFrom(join(dir, (loaded.descriptor.store as { top: string }).top), true, openLayer);
      const dev = checked(new ChainDevice(layers, false, {}, 50));
      const data = new Random(61).bytes(100_000);
      await dev.write(data, 3 * MiB);
      await new Promise((r) => setTimeout(r, 400));
      // Another reader of the files (read-only; a VHDX log is replayed in memory) sees the data.
      const other = checked(new ChainDevice(await openChainFrom(layers[0]!.path, false, openLayer), true));
      const got = new Uint8Array(data.length);
      await other.read(got, 3 * MiB);
      await other.close();
      expect(Buffer.compare(got, data)).toBe(0);
      await dev.close();
    });
  }

  it('snapshot({ ifChanged }) leaves an unwritten top alone', async () => {
    const base = join(dir, `idle-base.vhdx`);
    await createLayerFile(base, { format: 'vhdx', size: MiB });
    const d = join(dir, 'idle.vdisk');
    await createChainStore({ descriptorPath: d, parentPath: base });
    const dev = await openStore(d);
    const chain = dev.inner as ChainDevice;
    const top = chain.layers[0]!.path;
    expect(await chain.snapshot({ ifChanged: true })).toBe(top);
    expect(chain.layers).toHaveLength(2);
    await dev.write(new Uint8Array(512).fill(1), 0);
    expect(await chain.snapshot({ ifChanged: true })).not.toBe(top);
    expect(chain.layers).toHaveLength(3);
    await dev.close();
  });
});

describe('create chain --child', () => {
  it('puts the child where asked (a relative locator up and across), refuses another format or an existing file', async () => {
    const { main } = await import('../../src/cli/main.js');
    const { mkdir } = await import('node:fs/promises');
    const base = join(dir, 'childopt-base.vhd');
    await createLayerFile(base, { format: 'vhd', size: 2 * MiB });
    await mkdir(join(dir, 'elsewhere'), { recursive: true });
    const child = join(dir, 'elsewhere', 'mine.vhd');
    const out: string[] = [];
    const write = process.stdout.write;
    const errWrite = process.stderr.write;
    process.stdout.write = ((s: string) => (out.push(s), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (out.push(s), true)) as typeof process.stderr.write;
    try {
      expect(await main(['create', 'chain', join(dir, 'childopt.vdisk'), '--parent', base, '--child', child])).toBe(0);
      expect(await main(['create', 'chain', join(dir, 'childopt2.vdisk'), '--parent', base, '--child', join(dir, 'x.vhdx')])).toBe(1);
      expect(await main(['create', 'chain', join(dir, 'childopt3.vdisk'), '--parent', base, '--child', child])).toBe(1);
    } finally {
      process.stdout.write = write;
      process.stderr.write = errWrite;
    }
    expect(out.join('')).toMatch(/the child must be one too/);
    expect(out.join('')).toMatch(/already exists/);
    const layers = await openChainFrom(child, false, openLayer);
    expect(layers.map((l) => l.path)).toEqual([child, base]);
    for (const l of layers) await l.close();
    await expect(stat(join(dir, 'childopt2.vdisk'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('vdiskfs check on a chain', () => {
  it('passes on a good chain, fails (exit 1) on a truncated layer, naming it', async () => {
    const { main } = await import('../../src/cli/main.js');
    const base = await makeBase('vhdx', 3 * MiB, new Random(91));
    const d = join(dir, 'check.vdisk');
    const r = await createChainStore({ descriptorPath: d, parentPath: base });
    const dev = await openStore(d);
    await dev.write(new Random(92).bytes(300_000), 1000);
    await dev.close();
    const out: string[] = [];
    const w = process.stdout.write;
    const e = process.stderr.write;
    process.stdout.write = ((s: string) => (out.push(s), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (out.push(s), true)) as typeof process.stderr.write;
    try {
      expect(await main(['check', d])).toBe(0);
      await truncate(r.childPath, (await stat(r.childPath)).size - MiB);
      expect(await main(['check', d])).toBe(1);
    } finally {
      process.stdout.write = w;
      process.stderr.write = e;
    }
    expect(out.join('')).toContain(r.childPath);
    expect(out.join('')).toMatch(/truncated/);
  });
});

describe('zero writes into a dynamic base', () => {
  for (const format of ['vhd', 'vhdx'] as LayerFormat[]) {
    it(`${format}: allocate nothing for zeros over unallocated blocks, but do overwrite data`, async () => {
      const path = join(dir, `zb-${n++}.${format}`);
      await createLayerFile(path, { format, size: 8 * MiB, blockSize: MiB });
      const dev = checked(new ChainDevice(await openChainFrom(path, true, openLayer), false));
      const before = (await stat(path)).size;
      await dev.write(new Uint8Array(3 * MiB + 512), 1000);
      await dev.flush();
      expect((await stat(path)).size).toBe(before);
      const data = new Random(95).bytes(5000);
      await dev.write(data, 2 * MiB);
      await dev.write(new Uint8Array(5000), 2 * MiB + 100);
      await dev.close();
      const again = checked(new ChainDevice(await openChainFrom(path, false, openLayer), true));
      const got = new Uint8Array(5100);
      await again.read(got, 2 * MiB);
      await again.close();
      expect(Buffer.compare(got.subarray(0, 100), data.subarray(0, 100))).toBe(0);
      expect(got.subarray(100).every((b) => b === 0)).toBe(true);
    });
  }
});
