import { describe, expect, it } from 'vitest';
import {
  FooterField, VHD_BAT_UNUSED, VHD_FOOTER_SIZE, VhdDiskType, VhdPlatformCode, checkVhdFooter, chsGeometry, chsSize,
  dateFromVhdTimestamp, decodeLocatorPath, decodeVhdBat, decodeVhdDynamicHeader, decodeVhdFooter, encodeLocatorPath,
  encodeVhdBat, encodeVhdDynamicHeader, encodeVhdFooter, fixedVhdFooter, newVhdFooter, platformCodeName, validateVhdSize, vhdBatSize,
  vhdBitmapGet, vhdBitmapSet, vhdBitmapSetRange, vhdBlockBitmapSize, vhdChecksum, vhdSectorOffset, vhdTimestamp,
} from '../../src/formats/vhd.js';
import { GiB, MiB } from '../../src/formats/bytes.js';

describe('VHD CHS geometry', () => {
  it('matches the spec digest examples (cross-checked with QEMU)', () => {
    expect(chsGeometry(64 * MiB)).toEqual({ cylinders: 963, heads: 8, sectorsPerTrack: 17 });
    expect(64 * MiB - chsSize(chsGeometry(64 * MiB))).toBe(53248);
    expect(chsGeometry(GiB)).toEqual({ cylinders: 2080, heads: 16, sectorsPerTrack: 63 });
    expect(chsGeometry(10 * GiB)).toEqual({ cylinders: 20805, heads: 16, sectorsPerTrack: 63 });
    expect(10 * GiB - chsSize(chsGeometry(10 * GiB))).toBe(40960);
    expect(chsGeometry(127 * GiB)).toEqual({ cylinders: 65278, heads: 16, sectorsPerTrack: 255 });
    expect(chsGeometry(2000 * GiB)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  });
});

describe('VHD footer', () => {
  const id = '0123abcd-4567-89ef-fedc-ba9876543210';

  it('encodes a fixed footer: cookie, all-ones data offset, creator "win ", valid checksum', () => {
    const f = encodeVhdFooter(fixedVhdFooter({ size: 10 * GiB, uniqueId: id, timestamp: 1234 }));
    const b = Buffer.from(f);
    expect(f.length).toBe(VHD_FOOTER_SIZE);
    expect(b.subarray(0, 8).toString()).toBe('conectix');
    expect(b.readUInt32BE(FooterField.features)).toBe(2);
    expect(b.readUInt32BE(FooterField.fileFormatVersion)).toBe(0x10000);
    expect(b.subarray(16, 24).toString('hex')).toBe('ffffffffffffffff');
    expect(b.subarray(28, 32).toString()).toBe('win ');
    expect(Number(b.readBigUInt64BE(FooterField.currentSize))).toBe(10 * GiB);
    expect(b.readUInt16BE(56)).toBe(20805);
    expect(b[58]).toBe(16);
    expect(b[59]).toBe(63);
    expect(b.readUInt32BE(FooterField.diskType)).toBe(VhdDiskType.FIXED);
    expect(b.subarray(68, 84).toString('hex')).toBe('0123abcd456789effedcba9876543210');
    // The checksum is the one's complement of the byte sum with the field zeroed.
    let sum = 0;
    for (let i = 0; i < 512; i++) if (i < 64 || i >= 68) sum += f[i]!;
    expect(b.readUInt32BE(FooterField.checksum)).toBe(~sum >>> 0);
    expect(vhdChecksum(f, FooterField.checksum)).toBe(~sum >>> 0);
  });

  it('round-trips and reports damage', () => {
    const footer = { ...fixedVhdFooter({ size: 64 * MiB, uniqueId: id }), diskType: VhdDiskType.DYNAMIC, dataOffset: 512, savedState: true, creatorApplication: 'qemu' };
    const f = encodeVhdFooter(footer);
    expect(decodeVhdFooter(f)).toEqual(footer);
    const bad = Uint8Array.from(f);
    bad[100] = 1;
    expect(checkVhdFooter(bad)).toMatch(/checksum/);
    expect(() => decodeVhdFooter(bad)).toThrow(/VHD footer: checksum/);
    expect(decodeVhdFooter(bad, { verify: false }).currentSize).toBe(64 * MiB);
    const noCookie = Uint8Array.from(f);
    noCookie[0] = 0;
    expect(checkVhdFooter(noCookie)).toMatch(/cookie/);
  });

  it('makes dynamic and differencing footers that point at the dynamic header', () => {
    const f = newVhdFooter({ size: 64 * MiB, uniqueId: id, diskType: VhdDiskType.DIFFERENCING });
    expect(f).toMatchObject({ dataOffset: 512, diskType: 4, creatorApplication: 'win ' });
    expect(decodeVhdFooter(encodeVhdFooter(f))).toEqual(f);
    expect(() => newVhdFooter({ size: 64 * MiB, uniqueId: id, diskType: 5 })).toThrow(RangeError);
  });

  it('refuses sizes a VHD cannot describe', () => {
    expect(() => validateVhdSize(2041 * GiB)).toThrow(/at most 2040 GiB/);
    expect(() => validateVhdSize(1000)).toThrow(/multiple of 512/);
    expect(() => validateVhdSize(2040 * GiB)).not.toThrow();
  });

  it('converts timestamps from the 2000 epoch', () => {
    expect(vhdTimestamp(new Date('2000-01-01T00:00:10Z'))).toBe(10);
    expect(dateFromVhdTimestamp(86400).toISOString()).toBe('2000-01-02T00:00:00.000Z');
  });
});

describe('VHD dynamic header, BAT and bitmaps', () => {
  it('round-trips a differencing header with parent locators', () => {
    const h = {
      tableOffset: 1536,
      headerVersion: 0x10000,
      maxTableEntries: 32,
      blockSize: 2 * MiB,
      parentUniqueId: '11112222-3333-4444-5555-666677778888',
      parentTimestamp: 777,
      parentUnicodeName: 'base.vhd',
      parentLocators: [
        { platformCode: VhdPlatformCode.W2RU, platformDataSpace: 512, platformDataLength: 20, platformDataOffset: 4096 },
        { platformCode: VhdPlatformCode.W2KU, platformDataSpace: 512, platformDataLength: 40, platformDataOffset: 4608 },
        ...Array.from({ length: 6 }, () => ({ platformCode: 0, platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 })),
      ],
    };
    const b = encodeVhdDynamicHeader(h);
    expect(b.length).toBe(1024);
    expect(Buffer.from(b.subarray(0, 8)).toString()).toBe('cxsparse');
    expect(Buffer.from(b.subarray(64, 80)).toString('utf16le')).not.toBe('base.vhd'); // big-endian, not LE
    expect(Buffer.from(b.subarray(64, 80)).swap16().toString('utf16le')).toBe('base.vhd');
    expect(Buffer.from(b.subarray(576, 580)).toString()).toBe('W2ru');
    expect(decodeVhdDynamicHeader(b)).toEqual(h);
    b[900] = 1;
    expect(() => decodeVhdDynamicHeader(b)).toThrow(/checksum/);
    expect(decodeVhdDynamicHeader(b, { verifyChecksum: false }).blockSize).toBe(2 * MiB);
    expect(platformCodeName(VhdPlatformCode.W2KU)).toBe('W2ku');
    expect(decodeLocatorPath(VhdPlatformCode.W2RU, encodeLocatorPath('.\\base.vhd'))).toBe('.\\base.vhd');
    expect(decodeLocatorPath(VhdPlatformCode.MACX, Buffer.from('file://./base.vhd\0'))).toBe('file://./base.vhd');
  });

  it('pads the BAT with 0xFF to 512 bytes, big-endian entries', () => {
    const bat = encodeVhdBat([3, VHD_BAT_UNUSED, 0x1234]);
    expect(bat.length).toBe(512);
    expect(Buffer.from(bat.subarray(0, 12)).toString('hex')).toBe('00000003ffffffff00001234');
    expect(bat.subarray(12).every((x) => x === 0xff)).toBe(true);
    expect([...decodeVhdBat(bat, 3)]).toEqual([3, VHD_BAT_UNUSED, 0x1234]);
    expect(vhdBatSize(128)).toBe(512);
    expect(vhdBatSize(129)).toBe(1024);
  });

  it('sizes bitmaps and addresses sectors MSB-first', () => {
    expect(vhdBlockBitmapSize(2 * MiB)).toBe(512);
    expect(vhdBlockBitmapSize(8 * MiB)).toBe(2048);
    expect(vhdBlockBitmapSize(4096)).toBe(512);
    expect(vhdSectorOffset(3, 2 * MiB, 2)).toBe(3 * 512 + 512 + 1024);
    const bm = new Uint8Array(3);
    vhdBitmapSet(bm, 0, true);
    vhdBitmapSet(bm, 9, true);
    expect([...bm]).toEqual([0x80, 0x40, 0]);
    expect(vhdBitmapGet(bm, 9)).toBe(true);
    expect(vhdBitmapGet(bm, 1)).toBe(false);
    vhdBitmapSetRange(bm, 3, 18, true);
    expect([...bm]).toEqual([0x9f, 0xff, 0xf8]); // sectors 3–20
  });
});
