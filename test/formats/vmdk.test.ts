import { describe, expect, it } from 'vitest';
import { encodeVmdkDescriptor, flatVmdkDescriptor, parseVmdkDescriptor, vmdkDescriptorSize } from '../../src/formats/vmdk.js';
import { GiB } from '../../src/formats/bytes.js';

describe('VMDK descriptor', () => {
  it('writes a monolithicFlat descriptor with one FLAT extent and parses it back', () => {
    const d = flatVmdkDescriptor({ size: 10 * GiB, file: 'disk.raw', cid: 0xdeadbeef, uuid: '01234567-89ab-cdef-0123-456789abcdef' });
    const text = encodeVmdkDescriptor(d);
    expect(text).toMatch(/^# Disk DescriptorFile\n/);
    expect(text).toContain('createType="monolithicFlat"');
    expect(text).toContain('CID=deadbeef');
    expect(text).toContain('parentCID=ffffffff');
    expect(text).toContain(`RW ${(10 * GiB) / 512} FLAT "disk.raw" 0\n`);
    expect(text).toContain('ddb.uuid.image = "01234567-89ab-cdef-0123-456789abcdef"');
    const back = parseVmdkDescriptor(text + '\0\0\0');
    expect(back).toEqual(d);
    expect(vmdkDescriptorSize(back)).toBe(10 * GiB);
  });

  it('refuses sizes that are not whole sectors, and text that is not a descriptor', () => {
    expect(() => flatVmdkDescriptor({ size: 1000, file: 'x', cid: 1, uuid: 'x' })).toThrow(/multiple of 512/);
    expect(() => parseVmdkDescriptor('hello world')).toThrow(/cannot parse/);
    expect(() => parseVmdkDescriptor('# Disk DescriptorFile\nversion=1\n')).toThrow(/no extents/);
    expect(() => encodeVmdkDescriptor({ ...flatVmdkDescriptor({ size: 512, file: 'a"b', cid: 1, uuid: 'u' }) })).toThrow(/quote/);
  });
});
