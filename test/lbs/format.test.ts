import { describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import {
  BARRIER_SIZE,
  ChecksumId,
  DATA_HEADER_FIELDS,
  LOG_HEADER_SIZE,
  MAP_FIXED,
  MAP_PER_BLOCK,
  MAP_ZERO,
  barrierHashMatches,
  decodeBarrier,
  decodeDataHeader,
  decodeLogHeader,
  decodeMapEntry,
  encodeBarrier,
  encodeDataHeader,
  encodeLogHeader,
  encodeMapEntry,
  mapEntrySize,
  readPrefix,
} from '../../src/stores/lbs/format.js';
import { fletcher32, fletcher32Run, sha256_32, checksumByName } from '../../src/stores/lbs/checksums.js';
import { makeSimdFletcherRun } from '../../src/stores/lbs/fletcher-simd.js';
import { BlockMap } from '../../src/stores/lbs/block-map.js';
import { lbsGeometry } from '../../src/stores/lbs/create.js';
import { formatMemStore, openMem } from './mem-files.js';
import { Random } from '../support/random.js';

const g = { blockSize: 4096, clusterSize: 1 << 20, clusterCount: 10240, logicalSize: 8 * 2 ** 30, dataOffset: 4096 };

describe('lbs format', () => {
  it('round-trips both headers, with the documented sizes', () => {
    const id = randomUUID();
    const dh = encodeDataHeader({ ...g, version: 1, flags: 0, storeId: id, createdAt: 1234 });
    expect(dh.length).toBe(4096);
    expect(dh.subarray(DATA_HEADER_FIELDS).every((b) => b === 0)).toBe(true);
    expect(dh.toString('latin1', 0, 8)).toBe('VDLBSDAT');
    expect(decodeDataHeader(dh, 'd')).toMatchObject({ ...g, storeId: id, createdAt: 1234, version: 1 });
    const lh = encodeLogHeader({ ...g, version: 1, flags: 0, storeId: id, checksum: ChecksumId.Sha256_32, checksumSize: 4, encryption: 0, keyId: 0, generation: 3, createdAt: 99 });
    expect(lh.length).toBe(LOG_HEADER_SIZE);
    expect(decodeLogHeader(lh, 'l')).toMatchObject({ ...g, storeId: id, checksum: 2, generation: 3 });
    const bad = Buffer.from(lh);
    bad[20] ^= 1;
    expect(() => decodeLogHeader(bad, 'l')).toThrow(/header is damaged/);
    expect(() => decodeDataHeader(lh, 'x.data')).toThrow(/x\.data is not an LBS data file/);
  });

  it('encodes map entries and barriers at the documented sizes, and detects any changed byte', () => {
    const b = Buffer.alloc(4096);
    const cks = Uint32Array.of(1, 2, 3);
    const ts = Float64Array.of(2 ** 40 + 1, 2 ** 40 + 2, 2 ** 40 + 3);
    const n1 = encodeMapEntry(b, 0, { flags: 0, lbnStart: 7, pbnStart: 2 ** 31 + 5, count: 3 }, cks, ts, 0);
    expect(n1).toBe(MAP_FIXED + 3 * MAP_PER_BLOCK);
    const n2 = encodeMapEntry(b, n1, { flags: MAP_ZERO, lbnStart: 100, pbnStart: 0, count: 50 }, undefined, Float64Array.of(77), 0);
    expect(n2).toBe(mapEntrySize(50, true));
    expect(decodeMapEntry(b, 0)).toMatchObject({ lbnStart: 7, pbnStart: 2 ** 31 + 5, count: 3, checksums: cks, timestamps: ts });
    expect(decodeMapEntry(b, n1)).toMatchObject({ flags: MAP_ZERO, lbnStart: 100, count: 50, firstTimestamp: 77 });
    const barrier = encodeBarrier(b.subarray(0, n1 + n2), 5, 1000, 2);
    expect(barrier.length).toBe(BARRIER_SIZE);
    barrier.copy(b, n1 + n2);
    expect(readPrefix(b, n1 + n2, 4096)).toMatchObject({ type: 2, length: BARRIER_SIZE });
    expect(decodeBarrier(b, n1 + n2)).toMatchObject({ sequence: 5, clock: 1000, entryCount: 2 });
    expect(barrierHashMatches(b, 0, n1 + n2)).toBe(true);
    for (const at of [0, 13, n1 + 20, n1 + n2 + 20]) {
      const c = Buffer.from(b);
      c[at] ^= 0x10;
      expect(barrierHashMatches(c, 0, n1 + n2)).toBe(false);
    }
  });

  it('checksums: Fletcher-32 matches the published vector, both are stable on unaligned views', () => {
    expect(fletcher32(Buffer.from('abcdefgh'))).toBe(0xebe19591);
    const rnd = new Random(3);
    const block = rnd.bytes(4097);
    const aligned = new Uint8Array(4096);
    aligned.set(block.subarray(1));
    for (const f of [fletcher32, sha256_32]) expect(f(block.subarray(1))).toBe(f(aligned));
    expect(checksumByName('SHA256').name).toBe('sha256');
  });

  it('the WebAssembly SIMD Fletcher-32 equals the JS one, bit for bit, for every block size', () => {
    const simd = makeSimdFletcherRun();
    expect(simd).toBeDefined(); // Node 20 has WebAssembly SIMD; the JS loop is only a fallback
    expect(checksumByName('fletcher32').run).not.toBe(fletcher32Run); // the store uses the SIMD one
    const rnd = new Random(8);
    for (const bs of [512, 1024, 2048, 4096, 16384, 65536, 1 << 20]) {
      const count = Math.max(1, Math.min(33, (3 << 20) / bs));
      for (const kind of ['random', 'ones', 'zeros', 'sparse']) {
        const buf = new Uint8Array(bs * count + 1).subarray(1); // unaligned on purpose
        if (kind === 'random') buf.set(rnd.bytes(buf.length));
        else if (kind === 'ones') buf.fill(0xff);
        else if (kind === 'sparse') for (let i = 0; i < buf.length; i += 997) buf[i] = rnd.int(256);
        const a = new Uint32Array(count);
        const b = new Uint32Array(count);
        simd!(buf, bs, count, a);
        fletcher32Run(buf, bs, count, b);
        expect(a).toEqual(b);
        expect(a[0]).toBe(fletcher32(buf.subarray(0, bs)));
      }
    }
  });

  it('default geometry: 8 GiB → 25 % more clusters, and at most 21 bytes of RAM per logical block', () => {
    const geo = lbsGeometry({ size: 8 * 2 ** 30 });
    expect(geo.clusterCount).toBe(10240);
    const map = new BlockMap(Math.ceil(geo.logicalSize / geo.blockSize), geo.clusterCount, geo.clusterSize / geo.blockSize);
    expect(map.bytesPerLogicalBlock()).toBeLessThanOrEqual(21.05);
  });

  it('replays a log of many entries and rolls back a tail whose barrier does not match', async () => {
    const s = await formatMemStore({ size: 1 << 20, blockSize: 512, clusterSize: 4096 });
    const dev = await openMem(s);
    const rnd = new Random(11);
    for (let i = 0; i < 200; i++) {
      await dev.write(rnd.bytes(512), 512 * rnd.int(2048));
      if (i % 50 === 49) await dev.flush();
    }
    await dev.close();
    const again = await openMem(s);
    expect(again.replay).toMatchObject({ sequence: 4, rolledBackEntries: 0, rolledBackBytes: 0 });
    expect(again.replay.entries).toBeGreaterThan(150);
    await again.close();
    // Flip one byte inside the last group's entries: that group is rolled back, no more.
    s.log.data[s.log.length - BARRIER_SIZE - 5] ^= 1;
    const third = await openMem(s, { readOnly: true });
    expect(third.replay.sequence).toBe(3);
    expect(third.replay.rolledBackEntries).toBeGreaterThan(0);
  });
});

describe('lbs log: verified groups that this version cannot apply are errors, not rollbacks', () => {
  async function withGroup(entry: Buffer) {
    const s = await formatMemStore({ size: 64 * 1024, blockSize: 4096, clusterSize: 16384 });
    const barrier = encodeBarrier(entry, 1, 5, 1);
    await s.log.write(Buffer.concat([entry, barrier]), 0, entry.length + barrier.length, s.log.length);
    return s;
  }

  it('an unknown entry type', async () => {
    const e = Buffer.alloc(16);
    e.writeUInt8(7, 0);
    e.writeUInt32LE(16, 4);
    await expect(openMem(await withGroup(e))).rejects.toThrow(/entry type 7 at offset 512 is not known to this vdiskfs \(written by a newer version\?\)/);
  });

  it('unknown map flags, and a map entry outside the store', async () => {
    const e = Buffer.alloc(mapEntrySize(1, false));
    encodeMapEntry(e, 0, { flags: 0, lbnStart: 99999, pbnStart: 0, count: 1 }, Uint32Array.of(1), Float64Array.of(1), 0);
    await expect(openMem(await withGroup(e))).rejects.toThrow(/the entry at offset 512 maps blocks outside the store/);
    e.writeUInt8(0x80, 1);
    await expect(openMem(await withGroup(e))).rejects.toThrow(/map entry at offset 512 is malformed although its barrier verifies/);
  });
});

describe('lbs log damaged in the middle', () => {
  it('is not cut off by a writable open (refused), and a read-only open rolls back to before the damage', async () => {
    const s = await formatMemStore({ size: 64 * 1024, blockSize: 4096, clusterSize: 16384 });
    const dev = await openMem(s);
    for (let i = 0; i < 4; i++) {
      await dev.write(new Uint8Array(4096).fill(i + 1), i * 4096);
      await dev.flush();
    }
    await dev.close();
    const before = s.log.snapshot();
    s.log.data[512 + 20] ^= 0x01; // inside the first group
    await expect(openMem(s)).rejects.toThrow(/is damaged at offset 512: barrier 1 does not verify, yet barrier 4 follows, so this is not a torn write/);
    expect(s.log.length).toBe(before.length); // nothing was cut
    const ro = await openMem(s, { readOnly: true });
    expect(ro.replay).toMatchObject({ sequence: 0, laterBarrier: 4 });
    await ro.close();
    // Damage in the last group is indistinguishable from a torn append: rolled back, as after a crash.
    s.log.data[512 + 20] ^= 0x01;
    s.log.data[s.log.length - 10] ^= 0x01;
    const again = await openMem(s);
    expect(again.replay).toMatchObject({ sequence: 3, laterBarrier: 0 });
    await again.close();
  });
});
