import { describe, expect, it } from 'vitest';
import { checked, type BlockDevice } from '../../src/devices/block-device.js';
import { describeDeviceConformance } from '../support/conformance.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { vhdView } from '../../src/views/vhd-view.js';
import { vmdkView } from '../../src/views/vmdk-view.js';
import { diskIdentity } from '../../src/views/identity.js';
import type { View } from '../../src/views/view.js';
import { GiB, MiB } from '../../src/formats/bytes.js';
import { decodeVhdFooter, encodeVhdFooter, VhdDiskType } from '../../src/formats/vhd.js';
import { parseVmdkDescriptor } from '../../src/formats/vmdk.js';
import { scratchDir } from '../support/tmp.js';
import { Random } from '../support/random.js';
import { fakeDescriptor, failingRange, untouchableDevice } from './helpers.js';

const dir = await scratchDir('vdiskfs-vhd-view-');
let n = 0;

async function readAt(view: View, offset: number, length: number): Promise<Uint8Array> {
  const b = new Uint8Array(length);
  await view.read(b, offset);
  return b;
}

// The VHD view's payload (at offset 0) must behave exactly like the device under it.
describeDeviceConformance('VHD view payload', {
  sizes: [512, MiB, 3 * MiB + 512],
  granularity: 512,
  create: async (size) => {
    const view = await vhdView.create({ device: checked(new MemoryDevice(size)), descriptor: fakeDescriptor(dir, `c${n++}`), siblings: [] });
    return {
      size,
      capabilities: { writable: true, flush: false, discard: false, preferredBlockSize: 512 },
      read: (dest, offset) => view.read(dest, offset),
      write: (src, offset) => view.write(src, offset),
      close: () => view.close!(),
    } satisfies BlockDevice;
  },
});

describe('VHD view', () => {
  it('is the payload then a valid fixed footer with creator "win " and the exact size', async () => {
    const mem = new MemoryDevice(3 * MiB + 512);
    const data = new Random(5).bytes(mem.size);
    await mem.write(data, 0);
    const descriptor = fakeDescriptor(dir, `v${n++}`);
    const view = await vhdView.create({ device: checked(mem), descriptor, siblings: [] });
    expect(view.size).toBe(mem.size + 512);
    const all = await readAt(view, 0, view.size);
    expect(Buffer.compare(Buffer.from(all.subarray(0, mem.size)), Buffer.from(data))).toBe(0);
    const f = decodeVhdFooter(all.subarray(mem.size));
    expect(f).toMatchObject({ creatorApplication: 'win ', currentSize: mem.size, originalSize: mem.size, diskType: VhdDiskType.FIXED, dataOffset: undefined, uniqueId: diskIdentity(descriptor) });
    // A read straddling the last payload bytes and the footer.
    const straddle = await readAt(view, mem.size - 3, 11);
    expect([...straddle.subarray(0, 3)]).toEqual([...data.subarray(mem.size - 3)]);
    expect(Buffer.from(straddle.subarray(3)).toString()).toBe('conectix');
    await view.close!();
  });

  it('accepts a valid footer rewrite (kept across reopen) and refuses a corrupting one', async () => {
    const mem = new MemoryDevice(MiB);
    const descriptor = fakeDescriptor(dir, `v${n++}`);
    let view = await vhdView.create({ device: checked(mem), descriptor, siblings: [] });
    const footer = decodeVhdFooter(await readAt(view, MiB, 512));
    await view.write(encodeVhdFooter({ ...footer, timestamp: 4242 }), MiB);
    const bad = encodeVhdFooter({ ...footer, timestamp: 1 });
    bad[100] = 1; // checksum no longer matches
    await expect(view.write(bad, MiB)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/checksum/) });
    await expect(view.write(encodeVhdFooter({ ...footer, currentSize: 2 * MiB }), MiB)).rejects.toThrow(/size must stay/);
    // A straddling write refused in the footer does not reach the payload either.
    const straddle = new Uint8Array(1024).fill(9);
    await expect(view.write(straddle, MiB - 512)).rejects.toMatchObject({ code: 'EINVAL' });
    expect((await readAt(view, MiB - 512, 512)).every((b) => b === 0)).toBe(true);
    await view.flush();
    await view.close!();
    view = await vhdView.create({ device: checked(mem), descriptor, siblings: [] });
    expect(decodeVhdFooter(await readAt(view, MiB, 512)).timestamp).toBe(4242);
    await view.close!();
  });

  it('refuses a store larger than 2040 GiB, and gives EIO for an unreadable range only', async () => {
    await expect(vhdView.create({ device: checked(untouchableDevice(2041 * GiB)), descriptor: fakeDescriptor(dir, 'big'), siblings: [] })).rejects.toThrow(/store big: cannot show it as a VHD: a VHD can describe at most 2040 GiB/);
    const view = await vhdView.create({ device: checked(failingRange(new MemoryDevice(MiB), 4096, 8192)), descriptor: fakeDescriptor(dir, `v${n++}`), siblings: [] });
    await expect(readAt(view, 5000, 10)).rejects.toMatchObject({ code: 'EIO' });
    await readAt(view, 8192, MiB - 8192 + 512);
    await view.close!();
  });
});

describe('VMDK view', () => {
  it('is a monolithicFlat descriptor pointing at NAME.raw with the right sector count', async () => {
    const descriptor = fakeDescriptor(dir, 'web');
    const view = await vmdkView.create({ device: checked(untouchableDevice(10 * GiB)), descriptor, siblings: ['web.raw', 'web.vmdk'] });
    expect(view.size).toBe(10240);
    const text = Buffer.from(await readAt(view, 0, view.size)).toString();
    const d = parseVmdkDescriptor(text);
    expect(d.createType).toBe('monolithicFlat');
    expect(d.extents).toEqual([{ access: 'RW', sectors: (10 * GiB) / 512, type: 'FLAT', file: 'web.raw', offset: 0 }]);
    expect(d.ddb.get('ddb.uuid.image')).toBe(diskIdentity(descriptor));
    await view.close!();
  });

  it('needs the raw view', async () => {
    await expect(vmdkView.create({ device: checked(new MemoryDevice(MiB)), descriptor: fakeDescriptor(dir, 'solo'), siblings: ['solo.vmdk'] })).rejects.toThrow(/raw view must be shown too/);
  });

  it('accepts rewrites that keep the extent and refuses ones that change it', async () => {
    const descriptor = fakeDescriptor(dir, 'rw');
    const view = await vmdkView.create({ device: checked(new MemoryDevice(MiB)), descriptor, siblings: ['rw.raw'] });
    const text = Buffer.from(await readAt(view, 0, view.size)).toString().replace(/\0+$/, '');
    const changedUuid = text.replace(/ddb.uuid.modification = "[^"]*"/, 'ddb.uuid.modification = "11111111-2222-3333-4444-555555555555"');
    expect(changedUuid.length).toBe(text.length);
    await view.write(Buffer.from(changedUuid), 0);
    expect(Buffer.from(await readAt(view, 0, view.size)).toString().replace(/\0+$/, '')).toBe(changedUuid);
    // What QEMU does on its first write: the whole 10 KiB block with a new CID, NUL-padded.
    const qemu = Buffer.alloc(10240);
    qemu.write(changedUuid.replace(/^CID=.*$/m, 'CID=1234abcd'));
    await view.write(qemu, 0);
    expect(parseVmdkDescriptor(Buffer.from(await readAt(view, 0, view.size)).toString()).cid).toBe(0x1234abcd);
    const otherFile = changedUuid.replace('"rw.raw"', '"xx.raw"');
    await expect(view.write(Buffer.from(otherFile), 0)).rejects.toThrow(/extent must stay/);
    await view.close!();
  });
});
