/**
 * The null store: reads return zeros and writes are dropped. It exists to measure the front ends
 * themselves (`make bench` prints its row beside every store as the ceiling of the FUSE layer),
 * and is never what a user wants for data: `create null` says so.
 */
import type { BlockDevice } from '../../devices/block-device.js';
import { storeInteger, writeNewDescriptor, type LoadedDescriptor } from '../descriptor.js';
import type { StoreKind } from '../store-kind.js';

export const nullStore: StoreKind = {
  kind: 'null',
  summary: 'reads zeros, drops writes: the ceiling of the front ends, for benchmarks (keeps no data)',
  async open(loaded: LoadedDescriptor, options) {
    const size = storeInteger(loaded, 'size', { min: 1 });
    const device: BlockDevice = {
      size,
      capabilities: { writable: !options.readOnly, flush: false, discard: true, preferredBlockSize: 512 },
      read: (dest) => {
        dest.fill(0);
        return Promise.resolve();
      },
      write: () => Promise.resolve(),
      discard: () => Promise.resolve(),
    };
    return device;
  },
  async describe(loaded) {
    return { size: storeInteger(loaded, 'size', { min: 1 }), note: 'keeps no data: reads return zeros, writes are dropped' };
  },
};

export async function createNullStore(descriptorPath: string, size: number): Promise<void> {
  await writeNewDescriptor(descriptorPath, { kind: 'null', store: { size } });
}
