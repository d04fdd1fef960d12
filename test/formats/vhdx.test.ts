import { describe, expect, it } from 'vitest';
import {
  BAT_ENTRY_SIZE, HEADER_SIZE, KNOWN_METADATA_ITEMS, METADATA_GUID_PARENT_LOCATOR, METADATA_TABLE_SIZE, PARENT_LOCATOR_TYPE_VHDX,
  PayloadBlockState, REGION_GUID_BAT, REGION_GUID_METADATA, REGION_TABLE_SIZE, batGeometry, blockOfBatIndex, checkHeader,
  decodeBatEntry, decodeFileIdentifier, decodeFileParameters, decodeHeader, decodeLogDataSector, decodeLogDescriptor,
  decodeLogEntryHeader, decodeMetadataItems, decodeMetadataTable, decodeParentLocator, decodeRegionTable, decodeSectorSize,
  decodeVirtualDiskId, decodeVirtualDiskSize, encodeBatEntry, encodeFileIdentifier, encodeFileParameters, encodeHeader,
  encodeLogDataSector, encodeLogDescriptor, encodeLogEntry, encodeMetadataTable, encodeParentLocator, encodeRegionTable,
  encodeSectorSize, encodeVirtualDiskId, encodeVirtualDiskSize, isSectorBitmapIndex, logDescriptorOffset, logDescriptorSectors,
  logEntryChecksumOk, logSequenceMatches, parentLocatorValue, parseParentLinkage, payloadBatIndex, restoreLoggedSector,
  sectorBitmapBatIndex, sectorBitmapGet, sectorBitmapSet, sectorBitmapSetRange, sectorBitmapSlice, selectCurrentHeader,
  validateDiskParameters, type VhdxHeader, type VhdxMetadataEntry,
} from '../../src/formats/vhdx.js';
import { NULL_GUID } from '../../src/formats/guid.js';
import { GiB, MiB, TiB } from '../../src/formats/bytes.js';

const u32 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getUint32(off, true);

const vectorHeader: VhdxHeader = {
  sequenceNumber: 1n,
  fileWriteGuid: '11111111-2222-3333-4444-555555555555',
  dataWriteGuid: '66666666-7777-8888-9999-aaaaaaaaaaaa',
  logGuid: NULL_GUID,
  logVersion: 0,
  version: 1,
  logLength: 0x100000,
  logOffset: 0x100000,
};

describe('VHDX file identifier', () => {
  it('round-trips and starts with "vhdxfile"', () => {
    const b = encodeFileIdentifier({ creator: 'vdiskfs 0.1' });
    expect(b.length).toBe(64 * 1024);
    expect(Buffer.from(b.subarray(0, 8)).toString()).toBe('vhdxfile');
    expect(Buffer.from(b.subarray(8, 30)).toString('utf16le')).toBe('vdiskfs 0.1');
    expect(decodeFileIdentifier(b)).toEqual({ creator: 'vdiskfs 0.1' });
    expect(() => decodeFileIdentifier(new Uint8Array(64 * 1024))).toThrow(/not a VHDX file/);
  });
});

describe('VHDX header', () => {
  it('matches the spec digest test vectors (seq 1 → 0xA01CF6D7, seq 2 → 0x22F924BF)', () => {
    const h1 = encodeHeader(vectorHeader);
    expect(h1.length).toBe(HEADER_SIZE);
    expect(u32(h1, 4)).toBe(0xa01cf6d7);
    expect(u32(encodeHeader({ ...vectorHeader, sequenceNumber: 2n }), 4)).toBe(0x22f924bf);
    expect(Buffer.from(h1.subarray(0, 4)).toString()).toBe('head');
  });

  it('round-trips and reports every kind of damage', () => {
    const h = encodeHeader({ ...vectorHeader, sequenceNumber: 0x123456789abcdefn, logGuid: '0a0b0c0d-0000-1111-2222-333344445555' });
    expect(decodeHeader(h)).toEqual({ ...vectorHeader, sequenceNumber: 0x123456789abcdefn, logGuid: '0a0b0c0d-0000-1111-2222-333344445555' });
    const flip = (at: number) => {
      const c = Uint8Array.from(h);
      c[at]! ^= 1;
      return c;
    };
    expect(checkHeader(h)).toBeUndefined();
    expect(checkHeader(flip(0))).toMatch(/signature/);
    expect(checkHeader(flip(100))).toMatch(/checksum/);
    expect(checkHeader(encodeHeader({ ...vectorHeader, version: 2 }))).toMatch(/version is 2/);
    expect(checkHeader(encodeHeader({ ...vectorHeader, logVersion: 1 }))).toMatch(/log version/);
    expect(checkHeader(encodeHeader({ ...vectorHeader, logOffset: 0 }))).toMatch(/log offset/);
    expect(() => decodeHeader(flip(100), 'header 1')).toThrow(/header 1: checksum/);
  });

  it('selects the current header by sequence number', () => {
    const a = encodeHeader({ ...vectorHeader, sequenceNumber: 5n });
    const b = encodeHeader({ ...vectorHeader, sequenceNumber: 6n });
    expect(selectCurrentHeader(a, b).index).toBe(2);
    expect(selectCurrentHeader(b, a).index).toBe(1);
    const broken = Uint8Array.from(b);
    broken[200] = 1;
    expect(selectCurrentHeader(a, broken)).toMatchObject({ index: 1, header: { sequenceNumber: 5n } });
    expect(selectCurrentHeader(a, Uint8Array.from(a)).index).toBe(1);
    const sameSeqOther = encodeHeader({ ...vectorHeader, sequenceNumber: 5n, dataWriteGuid: NULL_GUID });
    expect(() => selectCurrentHeader(a, sameSeqOther)).toThrow(/same sequence number/);
    expect(() => selectCurrentHeader(new Uint8Array(4096), broken)).toThrow(/no valid VHDX header/);
  });
});

describe('VHDX region table', () => {
  const entries = [
    { guid: REGION_GUID_BAT, fileOffset: 0x200000, length: 0x100000, required: true },
    { guid: REGION_GUID_METADATA, fileOffset: 0x300000, length: 0x100000, required: true },
  ];

  it('matches the spec digest test vector (CRC 0x24453396)', () => {
    const t = encodeRegionTable(entries);
    expect(t.length).toBe(REGION_TABLE_SIZE);
    expect(u32(t, 4)).toBe(0x24453396);
    expect(u32(t, 8)).toBe(2);
    expect(Buffer.from(t.subarray(16, 32)).toString('hex')).toBe('6677c22d23f600429d64115e9bfd4a08');
  });

  it('round-trips and refuses damage, misalignment and overlap', () => {
    expect(decodeRegionTable(encodeRegionTable(entries))).toEqual(entries);
    const t = encodeRegionTable(entries);
    t[40000] = 1;
    expect(() => decodeRegionTable(t)).toThrow(/checksum/);
    expect(() => decodeRegionTable(encodeRegionTable([{ ...entries[0]!, fileOffset: 0x180000 }]))).toThrow(/multiple of 1 MiB/);
    expect(() => decodeRegionTable(encodeRegionTable([entries[0]!, { ...entries[1]!, fileOffset: 0x200000 }]))).toThrow(/overlap/);
    expect(() => decodeRegionTable(encodeRegionTable([entries[0]!, entries[0]!]))).toThrow(/twice/);
  });
});

describe('VHDX BAT', () => {
  it('encodes entries as byteOffset | state', () => {
    const b = new Uint8Array(16);
    encodeBatEntry(b, 0, { state: PayloadBlockState.FULLY_PRESENT, fileOffset: 0x100400000 });
    expect(Buffer.from(b.subarray(0, 8)).readBigUInt64LE()).toBe(0x100400006n);
    expect(decodeBatEntry(b, 0)).toEqual({ state: 6, fileOffset: 0x100400000 });
    encodeBatEntry(b, 8, { state: PayloadBlockState.ZERO, fileOffset: 0 });
    expect(decodeBatEntry(b, 8)).toEqual({ state: 2, fileOffset: 0 });
    expect(() => encodeBatEntry(b, 0, { state: 6, fileOffset: 12345 })).toThrow(RangeError);
  });

  it('computes the worked-example geometry (10 GiB, 32 MiB blocks)', () => {
    const g = batGeometry({ virtualSize: 10 * GiB, blockSize: 32 * MiB, logicalSectorSize: 512 });
    expect(g).toMatchObject({ chunkRatio: 128, payloadBlocks: 320, sectorBitmapBlocks: 3, entries: 322, regionLength: MiB });
    expect(batGeometry({ virtualSize: 10 * GiB, blockSize: 32 * MiB, logicalSectorSize: 512, differencing: true }).entries).toBe(387);
    expect(payloadBatIndex(127, 128)).toBe(127);
    expect(payloadBatIndex(128, 128)).toBe(129);
    expect(payloadBatIndex(319, 128)).toBe(321);
    expect(sectorBitmapBatIndex(0, 128)).toBe(128);
    expect(sectorBitmapBatIndex(1, 128)).toBe(257);
    expect(isSectorBitmapIndex(257, 128)).toBe(true);
    expect(isSectorBitmapIndex(258, 128)).toBe(false);
    expect(blockOfBatIndex(258, 128)).toBe(256);
    for (let i = 0; i < 1000; i++) expect(blockOfBatIndex(payloadBatIndex(i, 128), 128)).toBe(i);
    // 4 KiB logical sectors: CR = 32 GiB / B.
    expect(batGeometry({ virtualSize: 10 * GiB, blockSize: 32 * MiB, logicalSectorSize: 4096 }).chunkRatio).toBe(1024);
  });

  it('grows the BAT region past 1 MiB for huge disks', () => {
    const g = batGeometry({ virtualSize: 64 * TiB, blockSize: MiB, logicalSectorSize: 512 });
    expect(g.payloadBlocks).toBe(64 * 1024 * 1024);
    expect(g.entries).toBe(64 * 1024 * 1024 + Math.floor((64 * 1024 * 1024 - 1) / 4096));
    expect(g.regionLength).toBe(Math.ceil((g.entries * BAT_ENTRY_SIZE) / MiB) * MiB);
  });

  it('refuses sizes and block sizes a VHDX cannot express', () => {
    expect(() => validateDiskParameters(64 * TiB + 512, 32 * MiB, 512)).toThrow(/at most 64 TiB/);
    expect(() => validateDiskParameters(1000, 32 * MiB, 512)).toThrow(/multiple of its 512-byte sector/);
    expect(() => validateDiskParameters(GiB, 3 * MiB, 512)).toThrow(/power of 2/);
    expect(() => validateDiskParameters(GiB, 512 * MiB, 512)).toThrow(/power of 2/);
    expect(() => validateDiskParameters(GiB, MiB, 1024)).toThrow(/512 or 4096/);
  });

  it('addresses sector bitmaps LSB-first with per-block slices', () => {
    const g = batGeometry({ virtualSize: 10 * GiB, blockSize: 32 * MiB, logicalSectorSize: 512 });
    expect(sectorBitmapSlice(0, g)).toEqual({ offset: 0, length: 8192 });
    expect(sectorBitmapSlice(129, g)).toEqual({ offset: 8192, length: 8192 });
    const bm = new Uint8Array(4);
    sectorBitmapSet(bm, 0, true);
    sectorBitmapSet(bm, 9, true);
    expect([...bm]).toEqual([0x01, 0x02, 0, 0]);
    expect(sectorBitmapGet(bm, 9)).toBe(true);
    expect(sectorBitmapGet(bm, 8)).toBe(false);
    sectorBitmapSetRange(bm, 3, 20, true);
    expect([...bm]).toEqual([0xf9, 0xff, 0x7f, 0]);
    sectorBitmapSetRange(bm, 4, 9, false);
    expect([...bm]).toEqual([0x09, 0xe0, 0x7f, 0]);
  });
});

describe('VHDX metadata', () => {
  const entries: VhdxMetadataEntry[] = [
    { itemId: KNOWN_METADATA_ITEMS.fileParameters.guid, offset: 0x10000, length: 8, isUser: false, isVirtualDisk: false, isRequired: true },
    { itemId: KNOWN_METADATA_ITEMS.virtualDiskSize.guid, offset: 0x10008, length: 8, isUser: false, isVirtualDisk: true, isRequired: true },
    { itemId: KNOWN_METADATA_ITEMS.virtualDiskId.guid, offset: 0x10010, length: 16, isUser: false, isVirtualDisk: true, isRequired: true },
    { itemId: KNOWN_METADATA_ITEMS.logicalSectorSize.guid, offset: 0x10020, length: 4, isUser: false, isVirtualDisk: true, isRequired: true },
    { itemId: KNOWN_METADATA_ITEMS.physicalSectorSize.guid, offset: 0x10024, length: 4, isUser: false, isVirtualDisk: true, isRequired: true },
  ];

  it('encodes the table with the flags QEMU writes (0x4, then 0x6)', () => {
    const t = encodeMetadataTable(entries);
    expect(t.length).toBe(METADATA_TABLE_SIZE);
    expect(Buffer.from(t.subarray(0, 8)).toString()).toBe('metadata');
    expect(new DataView(t.buffer).getUint16(10, true)).toBe(5);
    expect(u32(t, 32 + 24)).toBe(4);
    expect(u32(t, 64 + 24)).toBe(6);
    expect(decodeMetadataTable(t, MiB)).toEqual(entries);
  });

  it('refuses overlapping, misplaced and oversized items', () => {
    const clash = [...entries, { ...entries[0]!, itemId: '00000000-0000-0000-0000-000000000001', offset: 0x10004 }];
    expect(() => decodeMetadataTable(encodeMetadataTable(clash), MiB)).toThrow(/overlap/);
    expect(() => decodeMetadataTable(encodeMetadataTable([{ ...entries[0]!, offset: 0x100 }]), MiB)).toThrow(/inside the table/);
    expect(() => decodeMetadataTable(encodeMetadataTable([{ ...entries[0]!, offset: MiB - 4 }]), MiB)).toThrow(/passes the end/);
  });

  it('encodes the items as in the spec digest worked example', () => {
    expect(Buffer.from(encodeFileParameters({ blockSize: 32 * MiB, leaveBlockAllocated: false, hasParent: false })).toString('hex')).toBe('0000000200000000');
    expect(Buffer.from(encodeVirtualDiskSize(10 * GiB)).toString('hex')).toBe('0000008002000000');
    expect(Buffer.from(encodeSectorSize(512)).toString('hex')).toBe('00020000');
    expect(Buffer.from(encodeSectorSize(4096)).toString('hex')).toBe('00100000');
  });

  it('round-trips every item and decodes a whole region', () => {
    expect(decodeFileParameters(encodeFileParameters({ blockSize: MiB, leaveBlockAllocated: true, hasParent: true }))).toEqual({ blockSize: MiB, leaveBlockAllocated: true, hasParent: true });
    expect(() => decodeFileParameters(encodeFileParameters({ blockSize: 3 * MiB, leaveBlockAllocated: false, hasParent: false }))).toThrow(/power of 2/);
    expect(decodeVirtualDiskSize(encodeVirtualDiskSize(2 * TiB))).toBe(2 * TiB);
    expect(() => decodeVirtualDiskSize(encodeVirtualDiskSize(65 * TiB))).toThrow(/64 TiB/);
    expect(decodeVirtualDiskId(encodeVirtualDiskId('01234567-89ab-cdef-0123-456789abcdef'))).toBe('01234567-89ab-cdef-0123-456789abcdef');
    expect(decodeSectorSize(encodeSectorSize(4096), 'physical')).toBe(4096);
    expect(() => decodeSectorSize(Uint8Array.of(0, 4, 0, 0), 'logical')).toThrow(/1024, expected 512 or 4096/);

    const region = new Uint8Array(MiB);
    region.set(encodeMetadataTable(entries), 0);
    region.set(encodeFileParameters({ blockSize: 32 * MiB, leaveBlockAllocated: false, hasParent: false }), 0x10000);
    region.set(encodeVirtualDiskSize(10 * GiB), 0x10008);
    region.set(encodeVirtualDiskId('01234567-89ab-cdef-0123-456789abcdef'), 0x10010);
    region.set(encodeSectorSize(512), 0x10020);
    region.set(encodeSectorSize(4096), 0x10024);
    const item = (off: number, len: number) => region.subarray(off, off + len);
    expect(decodeMetadataItems(decodeMetadataTable(region, MiB), item)).toEqual({
      fileParameters: { blockSize: 32 * MiB, leaveBlockAllocated: false, hasParent: false },
      virtualDiskSize: 10 * GiB,
      virtualDiskId: '01234567-89ab-cdef-0123-456789abcdef',
      logicalSectorSize: 512,
      physicalSectorSize: 4096,
    });
    expect(() => decodeMetadataItems(entries.slice(1), item)).toThrow(/fileParameters is missing/);
    const unknown = [...entries, { ...entries[0]!, itemId: '99999999-0000-0000-0000-000000000000', offset: 0x10100 }];
    expect(() => decodeMetadataItems(unknown, item)).toThrow(/unknown required item/);
    region.set(encodeFileParameters({ blockSize: 32 * MiB, leaveBlockAllocated: false, hasParent: true }), 0x10000);
    expect(() => decodeMetadataItems(entries, item)).toThrow(/without a parent locator/);
  });

  it('round-trips a parent locator with offsets relative to the item', () => {
    const loc = {
      locatorType: PARENT_LOCATOR_TYPE_VHDX,
      entries: [
        { key: 'parent_linkage', value: '{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}' },
        { key: 'relative_path', value: '..\\base.vhdx' },
        { key: 'absolute_win32_path', value: '\\\\?\\C:\\vms\\base.vhdx' },
      ],
    };
    const b = encodeParentLocator(loc);
    expect(Buffer.from(b.subarray(0, 16)).toString('hex')).toBe('b7ef4ab09ed1814ab78925b8e9445913');
    expect(new DataView(b.buffer).getUint16(18, true)).toBe(3);
    const keyOffset = u32(b, 20);
    expect(keyOffset).toBe(20 + 3 * 12);
    expect(Buffer.from(b.subarray(keyOffset, keyOffset + 28)).toString('utf16le')).toBe('parent_linkage');
    expect(decodeParentLocator(b)).toEqual(loc);
    expect(parentLocatorValue(loc, 'relative_path')).toBe('..\\base.vhdx');
    expect(parentLocatorValue(loc, 'Relative_Path')).toBeUndefined();
    expect(parseParentLinkage('{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}')).toBe('83ed0ec3-24c8-49a6-a959-5e4bf1288bfb');
    expect(() => encodeParentLocator({ locatorType: PARENT_LOCATOR_TYPE_VHDX, entries: [loc.entries[0]!, loc.entries[0]!] })).toThrow(/twice/);
    const broken = Uint8Array.from(b);
    new DataView(broken.buffer).setUint32(20, 5000, true);
    expect(() => decodeParentLocator(broken)).toThrow(/outside the item/);
    expect(METADATA_GUID_PARENT_LOCATOR).toBe(KNOWN_METADATA_ITEMS.parentLocator.guid);
  });
});

describe('VHDX log', () => {
  it('needs ceil((count + 2) / 128) descriptor sectors', () => {
    expect(logDescriptorSectors(0)).toBe(1);
    expect(logDescriptorSectors(126)).toBe(1);
    expect(logDescriptorSectors(127)).toBe(2);
    expect(logDescriptorSectors(254)).toBe(2);
  });

  it('round-trips an entry with a zero and a data descriptor', () => {
    const seq = 0x1_0000_0005n;
    const logGuid = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
    const sector = new Uint8Array(4096).map((_, i) => (i * 7) & 0xff);
    const entry = new Uint8Array(8192);
    const dataDesc = { kind: 'data' as const, leadingBytes: sector.slice(0, 8), trailingBytes: sector.slice(4092), fileOffset: 0x200000, sequenceNumber: seq };
    encodeLogDescriptor(entry, logDescriptorOffset(0), { kind: 'zero', zeroLength: 8192, fileOffset: 0x300000, sequenceNumber: seq });
    encodeLogDescriptor(entry, logDescriptorOffset(1), dataDesc);
    entry.set(encodeLogDataSector(sector, seq), 4096);
    encodeLogEntry(entry, { entryLength: 8192, tail: 0, sequenceNumber: seq, descriptorCount: 2, logGuid, flushedFileOffset: 0x500000, lastFileOffset: 0x500000 });

    const h = decodeLogEntryHeader(entry);
    expect(h).toMatchObject({ entryLength: 8192, tail: 0, sequenceNumber: seq, descriptorCount: 2, logGuid, flushedFileOffset: 0x500000, lastFileOffset: 0x500000 });
    expect(logEntryChecksumOk(entry)).toBe(true);
    expect(decodeLogDescriptor(entry, logDescriptorOffset(0))).toEqual({ kind: 'zero', zeroLength: 8192, fileOffset: 0x300000, sequenceNumber: seq });
    const d = decodeLogDescriptor(entry, logDescriptorOffset(1));
    expect(d).toEqual(dataDesc);
    const ds = decodeLogDataSector(entry.subarray(4096));
    expect(logSequenceMatches(seq, ds)).toBe(true);
    expect(logSequenceMatches(seq + 1n, ds)).toBe(false);
    expect(restoreLoggedSector(dataDesc, ds)).toEqual(sector);

    entry[5000]! ^= 0xff;
    expect(logEntryChecksumOk(entry)).toBe(false);
    expect(() => decodeLogDescriptor(new Uint8Array(32), 0)).toThrow(/neither "zero" nor "desc"/);
  });
});
