import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { open, writeFile } from 'node:fs/promises';
import { describeDeviceConformance } from './support/conformance.js';
import { MemoryDevice } from '../src/devices/memory-device.js';
import { FileDevice } from '../src/devices/file-device.js';
import { checked, readOnly } from '../src/devices/block-device.js';
import { scratchDir } from './support/tmp.js';

const dir = await scratchDir();
let n = 0;

describeDeviceConformance('MemoryDevice', {
  sizes: [1, 513, 1 << 20, 3 * 65536 + 77],
  create: async (size) => new MemoryDevice(size),
});

describeDeviceConformance('FileDevice', {
  sizes: [1, 4097, 1 << 20, 5 * 1000 * 1000 + 3],
  create: async (size) => {
    const path = join(dir, `f${n++}.img`);
    const fh = await open(path, 'wx');
    await fh.truncate(size);
    await fh.close();
    return FileDevice.open(path, { expectedSize: size });
  },
  reopen: async (dev) => {
    const f = dev as FileDevice;
    await f.close();
    return FileDevice.open(f.path, { expectedSize: f.size });
  },
});

describe('FileDevice errors', () => {
  it('names a missing file', async () => {
    await expect(FileDevice.open(join(dir, 'nope.img'))).rejects.toThrow(/nope\.img does not exist/);
  });
  it('refuses a file of the wrong size', async () => {
    const p = join(dir, 'short.img');
    await writeFile(p, Buffer.alloc(1000));
    await expect(FileDevice.open(p, { expectedSize: 4096 })).rejects.toThrow(/is 1000 bytes, but its descriptor says 4096/);
  });
});

describe('checked() and readOnly()', () => {
  it('refuses writes to a read-only device with EROFS', async () => {
    const dev = checked(readOnly(new MemoryDevice(4096)));
    await expect(dev.write(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'EROFS' });
    await expect(dev.discard(0, 1)).rejects.toMatchObject({ code: 'EROFS' });
  });
  it('supplies discard as zero writes when a device has none', async () => {
    const mem = new MemoryDevice(3 << 20);
    const noDiscard = { size: mem.size, capabilities: mem.capabilities, read: mem.read.bind(mem), write: mem.write.bind(mem) };
    const dev = checked(noDiscard);
    await dev.write(new Uint8Array(3 << 20).fill(7), 0);
    await dev.discard(1, (3 << 20) - 2);
    const out = new Uint8Array(3 << 20);
    await dev.read(out, 0);
    expect(out[0]).toBe(7);
    expect(out[(3 << 20) - 1]).toBe(7);
    expect(out.subarray(1, (3 << 20) - 1).every((b) => b === 0)).toBe(true);
  });
  it('refuses use after close', async () => {
    const dev = checked(new MemoryDevice(10));
    await dev.close();
    await expect(dev.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'EBADF' });
  });
});
