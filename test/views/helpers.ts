/** Helpers for view tests: a descriptor in a scratch directory, devices that fail or refuse reads. */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { BlockDevice } from '../../src/devices/block-device.js';
import { VdiskError } from '../../src/errors.js';
import type { LoadedDescriptor } from '../../src/stores/descriptor.js';

export function fakeDescriptor(dir: string, name: string, options: { id?: string; viewOptions?: Record<string, Record<string, unknown>> } = {}): LoadedDescriptor {
  return {
    path: join(dir, `${name}.vdisk`),
    name,
    dir,
    descriptor: { vdiskfs: 1, kind: 'flat', id: options.id ?? randomUUID(), store: {}, viewOptions: options.viewOptions },
  };
}

/** A huge device whose reads always fail: building views over it must not read the payload. */
export function untouchableDevice(size: number): BlockDevice & { reads: number } {
  const dev = {
    size,
    reads: 0,
    capabilities: { writable: true, flush: false, discard: false, preferredBlockSize: 4096 },
    async read() {
      dev.reads++;
      throw new VdiskError('EIO', 'the payload must not be read');
    },
    async write() {
      throw new VdiskError('EIO', 'the payload must not be written');
    },
  };
  return dev;
}

/** Wraps a device so that reads touching [badStart, badEnd) fail with EIO (like an LBS checksum failure). */
export function failingRange(inner: BlockDevice, badStart: number, badEnd: number): BlockDevice {
  return {
    size: inner.size,
    capabilities: inner.capabilities,
    async read(dest, offset) {
      if (offset < badEnd && offset + dest.length > badStart) throw new VdiskError('EIO', `block at ${badStart} failed its checksum`);
      return inner.read(dest, offset);
    },
    write: inner.write?.bind(inner),
  };
}
