import { describe, expect, it } from 'vitest';
import { VhdxLayout, defaultVhdxBlockSize } from '../../src/views/vhdx-layout.js';
import { GiB, MiB, TiB } from '../../src/formats/bytes.js';
import {
  batGeometry, decodeBatEntry, decodeFileIdentifier, decodeMetadataItems, decodeMetadataTable, decodeRegionTable, selectCurrentHeader,
} from '../../src/formats/vhdx.js';
import { NULL_GUID } from '../../src/formats/guid.js';

/** The spec digest's worked example (§1.10), with the header test-vector GUIDs. */
const worked = () =>
  new VhdxLayout({
    virtualSize: 10 * GiB,
    blockSize: 32 * MiB,
    physicalSectorSize: 4096,
    diskId: '01234567-89ab-cdef-0123-456789abcdef',
    fileWriteGuid: '11111111-2222-3333-4444-555555555555',
    dataWriteGuid: '66666666-7777-8888-9999-aaaaaaaaaaaa',
  });

function bytes(layout: VhdxLayout, offset: number, length: number): Buffer {
  const b = new Uint8Array(length);
  layout.generate(b, offset);
  return Buffer.from(b);
}

describe('VHDX layout: the worked 10 GiB example, byte for byte', () => {
  const l = worked();
  const hex = (offset: number, length: number) => bytes(l, offset, length).toString('hex');
  const u64 = (offset: number) => bytes(l, offset, 8).readBigUInt64LE();

  it('places every object where the digest says, and sizes the file to cover the last block', () => {
    expect(l.geometry).toMatchObject({ chunkRatio: 128, payloadBlocks: 320, entries: 322 });
    expect([l.logOffset, l.batOffset, l.metadataOffset, l.dataStart]).toEqual([0x100000, 0x200000, 0x300000, 0x400000]);
    expect(l.fileSize).toBe(0x280400000);
    expect(l.fileSize).toBe(10_741_612_544);
  });

  it('file identifier at 0: "vhdxfile" and a UTF-16 creator', () => {
    expect(bytes(l, 0, 8).toString()).toBe('vhdxfile');
    expect(bytes(l, 8, 14).toString('utf16le')).toBe('vdiskfs');
  });

  it('headers at 0x10000 (seq 1) and 0x20000 (seq 2) with the digest test-vector checksums', () => {
    const h1 = bytes(l, 0x10000, 4096);
    const h2 = bytes(l, 0x20000, 4096);
    expect(h1.subarray(0, 4).toString()).toBe('head');
    expect(h1.readUInt32LE(4)).toBe(0xa01cf6d7);
    expect(h2.readUInt32LE(4)).toBe(0x22f924bf);
    expect(h1.readBigUInt64LE(8)).toBe(1n);
    expect(h2.readBigUInt64LE(8)).toBe(2n);
    expect(selectCurrentHeader(h1, h2)).toMatchObject({ index: 2, header: { logGuid: NULL_GUID, logOffset: 0x100000, logLength: 0x100000, version: 1, logVersion: 0 } });
    expect(bytes(l, 0x11000, 0xf000).every((b) => b === 0)).toBe(true);
  });

  it('region tables at 0x30000 and 0x40000, identical, CRC 0x24453396', () => {
    const t1 = bytes(l, 0x30000, 0x10000);
    expect(t1.readUInt32LE(4)).toBe(0x24453396);
    expect(Buffer.compare(t1, bytes(l, 0x40000, 0x10000))).toBe(0);
    expect(decodeRegionTable(t1).map((e) => [e.fileOffset, e.length, e.required])).toEqual([[0x200000, 0x100000, true], [0x300000, 0x100000, true]]);
    expect(bytes(l, 0x50000, 0xb0000).every((b) => b === 0)).toBe(true); // reserved
    expect(bytes(l, 0x100000, 0x100000).every((b) => b === 0)).toBe(true); // the log
  });

  it('BAT values at 0x200000 exactly as listed in the digest', () => {
    const at = (i: number) => u64(0x200000 + i * 8);
    expect(at(0)).toBe(0x0000000000400006n);
    expect(at(1)).toBe(0x0000000002400006n);
    expect(at(127)).toBe(0x00000000fe400006n);
    expect(at(128)).toBe(0n);
    expect(at(129)).toBe(0x0000000100400006n);
    expect(at(256)).toBe(0x00000001fe400006n);
    expect(at(257)).toBe(0n);
    expect(at(258)).toBe(0x0000000200400006n);
    expect(at(321)).toBe(0x000000027e400006n);
    expect(at(322)).toBe(0n);
    expect(bytes(l, 0x200000 + 322 * 8, 0x100000 - 322 * 8).every((b) => b === 0)).toBe(true);
  });

  it('metadata at 0x300000: table of 5, items at 0x310000 as in the digest', () => {
    const t = bytes(l, 0x300000, 0x10000);
    expect(t.subarray(0, 8).toString()).toBe('metadata');
    expect(t.readUInt16LE(10)).toBe(5);
    expect(hex(0x310000, 8)).toBe('0000000200000000');
    expect(hex(0x310008, 8)).toBe('0000008002000000');
    expect(hex(0x310010, 16)).toBe('67452301ab89efcd0123456789abcdef');
    expect(hex(0x310020, 4)).toBe('00020000');
    expect(hex(0x310024, 4)).toBe('00100000');
    expect([...t.subarray(32, 32 * 6)].filter((_, i) => i % 32 === 24)).toEqual([4, 6, 6, 6, 6]);
    const region = bytes(l, 0x300000, 0x100000);
    const meta = decodeMetadataItems(decodeMetadataTable(region, 0x100000), (o, n) => region.subarray(o, o + n));
    expect(meta).toEqual({
      fileParameters: { blockSize: 32 * MiB, leaveBlockAllocated: false, hasParent: false },
      virtualDiskSize: 10 * GiB,
      virtualDiskId: '01234567-89ab-cdef-0123-456789abcdef',
      logicalSectorSize: 512,
      physicalSectorSize: 4096,
    });
  });

  it('generates any range the same as the whole (BAT entries cut at the edges)', () => {
    const whole = bytes(l, 0, l.dataStart);
    for (const [off, len] of [[0x200000 - 3, 20], [0x200003, 5], [0x200000 + 127 * 8 + 1, 30], [0x2ffffd, 10], [0x30fff0, 64], [0, 1], [0x3ffff0, 16]] as const) {
      expect(Buffer.compare(bytes(l, off, len), whole.subarray(off, off + len)), `range ${off}+${len}`).toBe(0);
    }
  });
});

describe('VHDX layout: sizes', () => {
  const ids = { diskId: NULL_GUID, fileWriteGuid: NULL_GUID, dataWriteGuid: NULL_GUID };

  it('chooses block sizes from the disk size', () => {
    expect(defaultVhdxBlockSize(MiB)).toBe(MiB);
    expect(defaultVhdxBlockSize(100 * MiB)).toBe(MiB);
    expect(defaultVhdxBlockSize(GiB)).toBe(8 * MiB);
    expect(defaultVhdxBlockSize(10 * GiB)).toBe(32 * MiB);
    expect(defaultVhdxBlockSize(2 * TiB)).toBe(32 * MiB);
    expect(defaultVhdxBlockSize(40 * TiB)).toBe(64 * MiB);
  });

  it('covers a whole last block when the size is not a multiple of the block size', () => {
    const l = new VhdxLayout({ virtualSize: 5 * MiB + 512, blockSize: 2 * MiB, ...ids });
    expect(l.geometry.payloadBlocks).toBe(3);
    expect(l.fileSize).toBe(l.dataStart + 6 * MiB);
  });

  it('describes a tiny 1 MiB disk', () => {
    const l = new VhdxLayout({ virtualSize: MiB, ...ids });
    expect(l.blockSize).toBe(MiB);
    expect(l.fileSize).toBe(5 * MiB);
    expect(decodeBatEntry(bytes(l, l.batOffset, 8), 0)).toEqual({ state: 6, fileOffset: 4 * MiB });
  });

  it('describes 64 TiB (the maximum) quickly, generating BAT ranges on demand', () => {
    const t0 = Date.now();
    const l = new VhdxLayout({ virtualSize: 64 * TiB, ...ids });
    const g = batGeometry({ virtualSize: 64 * TiB, blockSize: 64 * MiB, logicalSectorSize: 512 });
    expect(l.batLength).toBe(g.regionLength);
    const lastIndex = g.entries - 1;
    const e = decodeBatEntry(bytes(l, l.batOffset + lastIndex * 8, 8), 0);
    expect(e).toEqual({ state: 6, fileOffset: l.dataStart + (g.payloadBlocks - 1) * 64 * MiB });
    expect(l.fileSize).toBe(l.dataStart + 64 * TiB);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('refuses sizes a VHDX cannot express, with a clear error', () => {
    expect(() => new VhdxLayout({ virtualSize: 64 * TiB + 512, ...ids })).toThrow(/at most 64 TiB/);
    expect(() => new VhdxLayout({ virtualSize: MiB + 100, ...ids })).toThrow(/multiple of its 512-byte sector/);
    expect(() => new VhdxLayout({ virtualSize: GiB, blockSize: 3 * MiB, ...ids })).toThrow(/power of 2/);
    expect(() => new VhdxLayout({ virtualSize: GiB, physicalSectorSize: 1024, ...ids })).toThrow();
  });
});
