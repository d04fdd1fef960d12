/**
 * The flat store: one raw image file, sparse, exactly the disk's size. The simplest store and the
 * baseline every other store is measured against.
 */
import { open, rm, stat } from 'node:fs/promises';
import { basename, resolve, relative, dirname } from 'node:path';
import { FileDevice } from '../../devices/file-device.js';
import { acquirePidLock } from '../../util/pid-lock.js';
import type { BlockDevice } from '../../devices/block-device.js';
import { assertAbsent, descriptorLockPath, storeInteger, storePath, writeNewDescriptor, type LoadedDescriptor } from '../descriptor.js';
import type { StoreKind } from '../store-kind.js';
import { VdiskError } from '../../errors.js';

export const flatStore: StoreKind = {
  kind: 'flat',
  summary: 'one raw image file (sparse), the disk byte for byte',
  async open(loaded, options) {
    const path = storePath(loaded, loaded.descriptor.store.path, 'path');
    const size = storeInteger(loaded, 'size', { min: 1 });
    if (options.readOnly) return FileDevice.open(path, { readOnly: true, expectedSize: size });
    // One writer at a time: two mounts writing one image would each cache and clobber the other.
    const release = await acquirePidLock(
      descriptorLockPath(loaded),
      (pid) => `store ${loaded.name} is open for writing by process ${pid} (mounted?); unmount it first, or mount --read-only`,
    );
    let device: FileDevice;
    try {
      device = await FileDevice.open(path, { expectedSize: size });
    } catch (err) {
      await release();
      throw err;
    }
    return withRelease(device, release);
  },
  async describe(loaded: LoadedDescriptor) {
    const path = storePath(loaded, loaded.descriptor.store.path, 'path');
    const allocatedBytes = await stat(path).then((st) => st.blocks * 512, () => undefined);
    return { file: path, size: storeInteger(loaded, 'size', { min: 1 }), allocatedBytes };
  },
};

export interface CreateFlatOptions {
  descriptorPath: string;
  size: number;
  /** The image file; default NAME.img beside the descriptor. */
  imagePath?: string;
  views?: string[];
}

/** Creates a sparse image file and its descriptor; refuses to overwrite either. */
export async function createFlatStore(options: CreateFlatOptions): Promise<{ descriptorPath: string; imagePath: string }> {
  const descriptorPath = resolve(options.descriptorPath);
  if (!Number.isSafeInteger(options.size) || options.size <= 0) {
    throw new VdiskError('EINVAL', `the size must be a positive number of bytes, got ${options.size}`);
  }
  if (options.size % 512 !== 0) {
    throw new VdiskError('EINVAL', `the size must be a multiple of 512 bytes (a disk sector), got ${options.size}`);
  }
  const imagePath = resolve(options.imagePath ?? descriptorPath.replace(/\.vdisk$/, '') + '.img');
  await assertAbsent(descriptorPath);
  await assertAbsent(imagePath);
  const fh = await open(imagePath, 'wx', 0o600);
  try {
    await fh.truncate(options.size);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const rel = relative(dirname(descriptorPath), imagePath);
  try {
    await writeNewDescriptor(descriptorPath, {
      kind: 'flat',
      views: options.views,
      store: { path: rel.startsWith('..') ? imagePath : rel || basename(imagePath), size: options.size },
    });
  } catch (err) {
    await rm(imagePath, { force: true });
    throw err;
  }
  return { descriptorPath, imagePath };
}

/** The device, with `release` run after it closes. */
function withRelease(device: FileDevice, release: () => Promise<void>): BlockDevice {
  return {
    size: device.size,
    capabilities: device.capabilities,
    read: (dest, offset) => device.read(dest, offset),
    write: (src, offset) => device.write(src, offset),
    discard: (offset, length) => device.discard(offset, length),
    flush: () => device.flush(),
    close: async () => {
      try {
        await device.close();
      } finally {
        await release();
      }
    },
    stats: () => device.stats(),
  };
}
