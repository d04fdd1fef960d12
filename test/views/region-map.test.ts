import { describe, expect, it } from 'vitest';
import { RegionMap, bytesRegion, payloadRegion, zeroRegion, type Region } from '../../src/views/region-map.js';
import { checked } from '../../src/devices/block-device.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { Random } from '../support/random.js';

async function sample() {
  const rnd = new Random(42);
  const header = rnd.bytes(1000);
  const device = checked(new MemoryDevice(5000));
  const payload = rnd.bytes(5000);
  await device.write(payload, 0);
  // header 1000 | payload device[100, 4100) | zeros 700
  const map = new RegionMap([
    bytesRegion('header', 0, header),
    payloadRegion('payload', 1000, device, 100, 4000),
    zeroRegion('padding', 5000, 700, { acceptZeroWrites: true }),
  ]);
  const expected = new Uint8Array(5700);
  expected.set(header, 0);
  expected.set(payload.subarray(100, 4100), 1000);
  return { map, expected, device, header };
}

describe('RegionMap', () => {
  it('refuses regions that are not contiguous', () => {
    expect(() => new RegionMap([zeroRegion('a', 0, 10), zeroRegion('b', 11, 10)])).toThrow(/contiguous/);
    expect(() => new RegionMap([zeroRegion('a', 0, 0)])).toThrow(/length 0/);
    expect(() => new RegionMap([])).toThrow();
  });

  it('finds the region of every offset by binary search', () => {
    const regions: Region[] = [];
    for (let i = 0; i < 37; i++) regions.push(zeroRegion(`r${i}`, i * 10, 10));
    const map = new RegionMap(regions);
    for (let off = 0; off < 370; off++) expect(map.indexAt(off)).toBe(Math.floor(off / 10));
    expect(map.size).toBe(370);
  });

  it('reads correctly at and across every boundary, including EOF', async () => {
    const { map, expected } = await sample();
    expect(map.size).toBe(5700);
    const points = [0, 1, 999, 1000, 1001, 4999, 5000, 5001, 5699, 5700];
    for (const a of points) {
      for (const b of points) {
        for (const da of [-1, 0, 1]) {
          for (const db of [-1, 0, 1]) {
            const start = a + da;
            const end = b + db;
            if (start < 0 || end > 5700 || end <= start) continue;
            const got = new Uint8Array(end - start).fill(0xee);
            await map.read(got, start);
            expect(Buffer.compare(Buffer.from(got), Buffer.from(expected.subarray(start, end))), `read [${start}, ${end})`).toBe(0);
          }
        }
      }
    }
    await expect(map.read(new Uint8Array(2), 5699)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(map.read(new Uint8Array(1), -1)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('writes payload through to the device at the mapped offset', async () => {
    const { map, device } = await sample();
    await map.write(Uint8Array.of(1, 2, 3), 1000);
    const got = new Uint8Array(3);
    await device.read(got, 100);
    expect([...got]).toEqual([1, 2, 3]);
  });

  it('accepts zeros in the padding, and a write straddling payload and padding', async () => {
    const { map, device } = await sample();
    const src = new Uint8Array(20);
    src.fill(9, 0, 10);
    await map.write(src, 4990);
    const got = new Uint8Array(10);
    await device.read(got, 4090);
    expect(got.every((b) => b === 9)).toBe(true);
  });

  it('refuses a straddling write that one region refuses, changing nothing anywhere', async () => {
    const { map, device, expected } = await sample();
    // Non-zero bytes past the payload: the padding refuses, so the payload part must not land either.
    await expect(map.write(new Uint8Array(20).fill(7), 4990)).rejects.toMatchObject({ code: 'EPERM' });
    // A write into the read-only header region.
    await expect(map.write(new Uint8Array(20).fill(7), 990)).rejects.toMatchObject({ code: 'EPERM' });
    const got = new Uint8Array(5700);
    await map.read(got, 0);
    expect(Buffer.compare(Buffer.from(got), Buffer.from(expected))).toBe(0);
    const raw = new Uint8Array(20);
    await device.read(raw, 90);
    expect(raw.some((b) => b === 7)).toBe(false);
  });
});
