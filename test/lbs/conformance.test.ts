import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { describeDeviceConformance, compareAll } from '../support/conformance.js';
import { checked, type BlockDevice } from '../../src/devices/block-device.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { LbsDevice } from '../../src/stores/lbs/lbs-core.js';
import { NodeFile } from '../../src/stores/lbs/files.js';
import { createLbsStore } from '../../src/stores/lbs/create.js';
import { formatMemStore, openMem, type MemStore } from './mem-files.js';
import { Random } from '../support/random.js';
import { scratchDir } from '../support/tmp.js';

const stores = new WeakMap<BlockDevice, MemStore>();

function memTarget(blockSize: number, clusterSize: number, overprovision = 25) {
  return {
    create: async (size: number) => {
      const s = await formatMemStore({ size, blockSize, clusterSize, overprovision });
      const dev = await openMem(s);
      stores.set(dev, s);
      return dev;
    },
    reopen: async (dev: BlockDevice) => {
      const s = stores.get(dev)!;
      await dev.close!();
      const again = await openMem(s);
      stores.set(again, s);
      return again;
    },
  };
}

// Sizes must be multiples of 512 (a store's rule); the odd ones are not multiples of the block size.
describeDeviceConformance('lbs 4k blocks / 1M clusters', { sizes: [4 << 20, 3 * 4096 + 512, 7 * 1024 * 1024 + 1536], ...memTarget(4096, 1 << 20) });
describeDeviceConformance('lbs 512 B blocks / 4k clusters', { sizes: [512, 1536, 300 * 1024 + 512], ...memTarget(512, 4096) });
describeDeviceConformance('lbs 4k blocks / 16k clusters, 5% over-provisioning', { sizes: [1 << 20, 100 * 4096 + 2560], ...memTarget(4096, 16384, 5), operations: 1500 });

const dir = await scratchDir('vdiskfs-lbs-');
let n = 0;
describeDeviceConformance('lbs over real files', {
  sizes: [2 << 20, 123 * 4096 + 512],
  create: async (size) => {
    const i = n++;
    const c = await createLbsStore({ descriptorPath: join(dir, `s${i}.vdisk`), dataPath: join(dir, `s${i}.data`), metaDir: dir, size, clusterSize: 64 * 1024, allowSameFilesystem: true });
    return LbsDevice.open(await NodeFile.open(c.dataPath, { what: 'data' }), await NodeFile.open(c.logPath, { what: 'log' }), { expectedId: c.id });
  },
});

describe('lbs cleaner under long random overwrites', () => {
  for (const [bs, cs, op] of [
    [512, 4096, 25],
    [4096, 32768, 10],
    [4096, 16384, 5],
  ] as const) {
    it(`${bs} B blocks, ${cs} B clusters, ${op}% over-provisioning: matches the reference, cleans many times, and survives reopen`, async () => {
      const size = 96 * bs + 512 * 3;
      const s = await formatMemStore({ size, blockSize: bs, clusterSize: cs, overprovision: op });
      let dev = await openMem(s, { autoBarrierBytes: 8192 });
      const ref = new MemoryDevice(size);
      const rnd = new Random(bs * 31 + op);
      const physical = dev.map.physicalBlocks * bs;
      let written = 0;
      let runs = 0;
      let cleaned = 0;
      for (let i = 0; written < physical * 12; i++) {
        const len = 1 + rnd.int(Math.min(size, 4 * bs));
        const off = rnd.int(size - len + 1);
        const data = rnd.int(10) === 0 ? new Uint8Array(len) : rnd.bytes(len);
        await dev.write(data, off);
        await ref.write(data, off);
        written += len;
        if (rnd.int(50) === 0) await dev.flush();
        if (rnd.int(20) === 0) {
          const a = new Uint8Array(len);
          const b = new Uint8Array(len);
          await dev.read(a, off);
          await ref.read(b, off);
          expect(Buffer.compare(a, b)).toBe(0);
        }
        if (rnd.int(400) === 0) {
          const c = (dev.stats() as any).cleaner;
          runs += c.runs;
          cleaned += c.clustersCleaned;
          await dev.close();
          dev = await openMem(s, { autoBarrierBytes: 8192 });
        }
      }
      await compareAll(dev, ref);
      const st = dev.stats() as any;
      await dev.close();
      dev = await openMem(s);
      runs += st.cleaner.runs;
      cleaned += st.cleaner.clustersCleaned;
      await compareAll(dev, ref);
      const st2 = dev.stats() as any;
      await dev.close();
      // Written 12× the physical space: the cleaner ran many times and freed many clusters.
      expect(runs).toBeGreaterThan(10);
      expect(cleaned).toBeGreaterThan(st.clusters.total * 3);
      expect(st2.clusters.free + st2.clusters.used).toBe(st2.clusters.total);
      expect(st.blocks.failed).toBe(0);
    });
  }

  it('concurrent writes, reads and flushes interleave safely while the cleaner runs', async () => {
    const bs = 512;
    const size = 64 * bs;
    const s = await formatMemStore({ size, blockSize: bs, clusterSize: 4096, overprovision: 10 });
    const dev = checked(await openMem(s, { autoBarrierBytes: 4096 }));
    const ref = new MemoryDevice(size);
    const rnd = new Random(77);
    for (let round = 0; round < 60; round++) {
      const ops: Promise<void>[] = [];
      const expected: { off: number; data: Uint8Array }[] = [];
      for (let i = 0; i < 40; i++) {
        const len = 1 + rnd.int(3 * bs);
        const off = rnd.int(size - len + 1);
        const data = rnd.bytes(len);
        ops.push(dev.write(data, off));
        await ref.write(data, off);
        expected.push({ off, data });
        if (i % 7 === 0) ops.push(dev.flush());
      }
      // A read issued after a write resolved must see it (reads do not queue behind writes).
      await Promise.all(ops);
      const last = expected[expected.length - 1]!;
      const back = new Uint8Array(last.data.length);
      await dev.read(back, last.off);
      expect(Buffer.compare(back, last.data)).toBe(0);
    }
    await compareAll(dev, ref);
    expect(((dev.stats!() as any).cleaner.clustersCleaned as number)).toBeGreaterThan(0);
    await dev.close();
  });
});
