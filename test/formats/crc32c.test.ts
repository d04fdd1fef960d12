import { describe, expect, it } from 'vitest';
import { crc32c, crc32cFinish, crc32cUpdate, crc32cWithZeroedField } from '../../src/formats/crc32c.js';
import { Random } from '../support/random.js';

/** Bit-at-a-time reference, obviously right. */
function slowCrc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

describe('CRC-32C', () => {
  it('matches the standard check value', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });

  it('matches the RFC 3720 (iSCSI) test vectors', () => {
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('is 0 for empty input and agrees with a bit-at-a-time reference at every length', () => {
    expect(crc32c(new Uint8Array(0))).toBe(0);
    const rnd = new Random(7);
    for (let n = 0; n < 100; n++) {
      const data = rnd.bytes(n * 13 + (n % 9));
      expect(crc32c(data)).toBe(slowCrc32c(data));
    }
  });

  it('can be computed incrementally and over a range', () => {
    const data = new Random(3).bytes(10_000);
    let c = 0xffffffff;
    for (let i = 0; i < data.length; i += 777) c = crc32cUpdate(c, data, i, Math.min(data.length, i + 777));
    expect(crc32cFinish(c)).toBe(crc32c(data));
    expect(crc32c(data, 100, 5000)).toBe(crc32c(data.subarray(100, 5000)));
  });

  it('computes with a zeroed checksum field without touching the input', () => {
    const data = new Random(9).bytes(4096);
    const copy = Uint8Array.from(data);
    const zeroed = Uint8Array.from(data);
    zeroed.fill(0, 4, 8);
    expect(crc32cWithZeroedField(data, 4)).toBe(crc32c(zeroed));
    expect(data).toEqual(copy);
  });
});
