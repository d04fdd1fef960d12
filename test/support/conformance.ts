/**
 * The BlockDevice conformance suite: one set of checks that every store runs. Random reads and
 * writes of random sizes at random (often unaligned) offsets are applied both to the device under
 * test and to a MemoryDevice, and every read is compared byte for byte.
 *
 * Usage, in a store's test file:
 *   describeDeviceConformance('lbs 4k/64k', { sizes: [1 << 20, 3 * 4096 + 512], open: async (size) => … });
 */
import { describe, expect, it } from 'vitest';
import { checked, type BlockDevice, type CheckedDevice } from '../../src/devices/block-device.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { Random } from './random.js';

export interface ConformanceTarget {
  /** Disk sizes to run at; include odd ones (not a multiple of the store's block size). */
  sizes: number[];
  /** Creates a fresh, zero-filled device of `size` bytes. */
  create(size: number): Promise<BlockDevice>;
  /** Closes and reopens the device (to check persistence); omit for volatile devices. */
  reopen?(device: BlockDevice): Promise<BlockDevice>;
  /** Operations per random workload (default 400). */
  operations?: number;
  /** Largest single request (default 160 KiB, a bit over FUSE's 128 KiB). */
  maxRequest?: number;
  /** Sizes in bytes are multiples of this (default 1). */
  granularity?: number;
}

export function describeDeviceConformance(name: string, target: ConformanceTarget): void {
  describe(`BlockDevice conformance: ${name}`, () => {
    for (const size of target.sizes) {
      describe(`size ${size}`, () => {
        it('reads zeros when fresh, and reports its size', async () => {
          const dev = checked(await target.create(size));
          try {
            expect(dev.size).toBe(size);
            const buf = new Uint8Array(Math.min(size, 256 * 1024)).fill(0xaa);
            await dev.read(buf, 0);
            expect(buf.every((b) => b === 0)).toBe(true);
            const tail = new Uint8Array(Math.min(size, 1000)).fill(0xaa);
            await dev.read(tail, size - tail.length);
            expect(tail.every((b) => b === 0)).toBe(true);
          } finally {
            await dev.close();
          }
        });

        it('matches the reference under random unaligned reads and writes', async () => {
          const rnd = new Random(size ^ 0x5eed);
          const dev = checked(await target.create(size));
          const ref = checked(new MemoryDevice(size));
          try {
            await randomWorkload(rnd, dev, ref, target);
            await compareAll(dev, ref);
          } finally {
            await dev.close();
          }
        });

        it('keeps the first and last byte apart, and refuses ranges past the end', async () => {
          const dev = checked(await target.create(size));
          try {
            await dev.write(Uint8Array.of(0x11), 0);
            await dev.write(Uint8Array.of(0x22), size - 1);
            const a = new Uint8Array(1);
            await dev.read(a, 0);
            expect(a[0]).toBe(size > 1 ? 0x11 : 0x22);
            await dev.read(a, size - 1);
            expect(a[0]).toBe(0x22);
            await expect(dev.read(new Uint8Array(2), size - 1)).rejects.toMatchObject({ code: 'ENOSPC' });
            await expect(dev.write(new Uint8Array(2), size - 1)).rejects.toMatchObject({ code: 'ENOSPC' });
            await expect(dev.read(new Uint8Array(1), -1)).rejects.toMatchObject({ code: 'EINVAL' });
          } finally {
            await dev.close();
          }
        });

        it('concurrent writes to different ranges and overlapping writes in order', async () => {
          const rnd = new Random(size * 7 + 1);
          const dev = checked(await target.create(size));
          const ref = checked(new MemoryDevice(size));
          try {
            const ops: Promise<void>[] = [];
            for (let i = 0; i < 64; i++) {
              const len = 1 + rnd.int(Math.min(size, 9000));
              const off = rnd.int(size - len + 1);
              const data = rnd.bytes(len);
              // Issue without awaiting: the store must apply writes in arrival order.
              ops.push(dev.write(data, off));
              await ref.write(data, off);
            }
            await Promise.all(ops);
            await compareAll(dev, ref);
          } finally {
            await dev.close();
          }
        });

        it('discard reads back as zeros', async () => {
          const rnd = new Random(size + 99);
          const dev = checked(await target.create(size));
          try {
            const data = rnd.bytes(Math.min(size, 200_000));
            await dev.write(data, 0);
            const off = Math.min(777, Math.floor(data.length / 3));
            const len = Math.floor(data.length / 2);
            await dev.discard(off, len);
            const got = new Uint8Array(data.length);
            await dev.read(got, 0);
            const want = Uint8Array.from(data);
            want.fill(0, off, off + len);
            expect(Buffer.compare(Buffer.from(got), Buffer.from(want))).toBe(0);
          } finally {
            await dev.close();
          }
        });

        if (target.reopen) {
          it('keeps flushed writes across close and reopen', async () => {
            const rnd = new Random(size + 12345);
            let dev: BlockDevice = await target.create(size);
            const ref = checked(new MemoryDevice(size));
            await randomWorkload(rnd, checked(dev), ref, target);
            await checked(dev).flush();
            dev = await target.reopen!(dev);
            const c = checked(dev);
            try {
              await compareAll(c, ref);
            } finally {
              await c.close();
            }
          });
        }
      });
    }
  });
}

async function randomWorkload(rnd: Random, dev: CheckedDevice, ref: CheckedDevice, target: ConformanceTarget): Promise<void> {
  const size = dev.size;
  const ops = target.operations ?? 400;
  const maxReq = Math.min(size, target.maxRequest ?? 160 * 1024);
  for (let i = 0; i < ops; i++) {
    const kind = rnd.int(10);
    // Mostly small requests, some large; offsets often unaligned, sometimes at the very end.
    const len = rnd.int(4) === 0 ? 1 + rnd.int(maxReq) : 1 + rnd.int(Math.min(maxReq, 8192));
    const off = rnd.int(8) === 0 ? size - len : rnd.int(size - len + 1);
    if (kind < 5) {
      const data = rnd.int(6) === 0 ? new Uint8Array(len) : rnd.bytes(len); // zero blocks too
      await dev.write(data, off);
      await ref.write(data, off);
    } else if (kind < 9) {
      const a = new Uint8Array(len);
      const b = new Uint8Array(len);
      await dev.read(a, off);
      await ref.read(b, off);
      if (Buffer.compare(Buffer.from(a), Buffer.from(b)) !== 0) {
        expect.fail(`read of ${len} bytes at ${off} differs from the reference (op ${i})`);
      }
    } else {
      await dev.flush();
    }
  }
}

export async function compareAll(dev: BlockDevice, ref: BlockDevice): Promise<void> {
  const step = 1 << 20;
  for (let off = 0; off < dev.size; off += step) {
    const n = Math.min(step, dev.size - off);
    const a = new Uint8Array(n);
    const b = new Uint8Array(n);
    await dev.read(a, off);
    await ref.read(b, off);
    if (Buffer.compare(Buffer.from(a), Buffer.from(b)) !== 0) {
      let i = 0;
      while (a[i] === b[i]) i++;
      expect.fail(`device differs from the reference at byte ${off + i}`);
    }
  }
}
