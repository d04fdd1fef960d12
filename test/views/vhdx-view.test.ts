import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { checked, readOnly, type BlockDevice } from '../../src/devices/block-device.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { vhdxView, vhdxLayoutFor } from '../../src/views/vhdx-view.js';
import type { View } from '../../src/views/view.js';
import { GiB, MiB, TiB } from '../../src/formats/bytes.js';
import { decodeHeader, encodeHeader, selectCurrentHeader, type VhdxHeader } from '../../src/formats/vhdx.js';
import { crc32cWithZeroedField } from '../../src/formats/crc32c.js';
import { describeDeviceConformance } from '../support/conformance.js';
import { scratchDir } from '../support/tmp.js';
import { Random } from '../support/random.js';
import { fakeDescriptor, failingRange, untouchableDevice } from './helpers.js';

const dir = await scratchDir('vdiskfs-vhdx-view-');
let n = 0;

async function makeView(device: BlockDevice, options: { name?: string; viewOptions?: Record<string, Record<string, unknown>>; id?: string } = {}) {
  const descriptor = fakeDescriptor(dir, options.name ?? `s${n++}`, options);
  const dev = checked(device);
  const view = await vhdxView.create({ device: dev, descriptor, siblings: [] });
  return { view, descriptor, dev, layout: vhdxLayoutFor({ device: dev, descriptor }) };
}

async function readAt(view: View, offset: number, length: number): Promise<Uint8Array> {
  const b = new Uint8Array(length);
  await view.read(b, offset);
  return b;
}

/** What QEMU does on its first write: read a header, bump it, new GUIDs, new CRC, write 80 bytes. */
async function qemuStyleHeaderUpdate(view: View, slot: number, sequence: bigint, dataWriteGuid: string): Promise<void> {
  const h = await readAt(view, slot, 4096);
  const cur = decodeHeader(h);
  const next: VhdxHeader = { ...cur, sequenceNumber: sequence, fileWriteGuid: 'abababab-0000-4000-8000-000000000001', dataWriteGuid };
  const enc = encodeHeader(next);
  await view.write(enc.subarray(0, 80), slot);
}

// The view's payload, seen as a BlockDevice, must behave exactly like the device under it.
describeDeviceConformance('VHDX view payload', {
  sizes: [MiB, 3 * MiB + 512, 5 * MiB + 4096],
  granularity: 512,
  create: async (size) => {
    const { view, layout } = await makeView(new MemoryDevice(size));
    const start = layout.dataStart;
    return {
      size,
      capabilities: { writable: true, flush: false, discard: false, preferredBlockSize: 512 },
      read: (dest, offset) => view.read(dest, start + offset),
      write: (src, offset) => view.write(src, start + offset),
      close: () => view.close!(),
    } satisfies BlockDevice;
  },
});

describe('VHDX view', () => {
  it('maps payload onto the store and pads the last block with zeros', async () => {
    const mem = new MemoryDevice(3 * MiB + 512);
    const { view, layout } = await makeView(mem, { viewOptions: { vhdx: { blockSize: '2M' } } });
    expect(layout.blockSize).toBe(2 * MiB);
    expect(view.size).toBe(layout.dataStart + 4 * MiB);
    const data = new Random(1).bytes(mem.size);
    await mem.write(data, 0);
    // A read straddling the generated metadata and the payload.
    const straddle = await readAt(view, layout.dataStart - 100, 300);
    const meta = new Uint8Array(100);
    layout.generate(meta, layout.dataStart - 100);
    expect(Buffer.compare(Buffer.from(straddle.subarray(0, 100)), Buffer.from(meta))).toBe(0);
    expect(Buffer.compare(Buffer.from(straddle.subarray(100)), Buffer.from(data.subarray(0, 200)))).toBe(0);
    // The last partial block: the payload's last bytes, then zeros to EOF.
    const tail = await readAt(view, layout.dataStart + mem.size - 10, view.size - (layout.dataStart + mem.size - 10));
    expect(Buffer.compare(Buffer.from(tail.subarray(0, 10)), Buffer.from(data.subarray(mem.size - 10)))).toBe(0);
    expect(tail.subarray(10).every((b) => b === 0)).toBe(true);
    // Zeros into the padding are accepted (copy tools write them); data is refused.
    await view.write(new Uint8Array(512), view.size - 512);
    await expect(view.write(new Uint8Array(512).fill(1), view.size - 512)).rejects.toMatchObject({ code: 'EPERM' });
    await view.close!();
  });

  it('derives stable identities from the descriptor id', async () => {
    const id = '0f0e0d0c-0b0a-4908-8706-050403020100';
    const a = await makeView(new MemoryDevice(MiB), { id });
    const b = await makeView(new MemoryDevice(MiB), { id });
    const c = await makeView(new MemoryDevice(MiB));
    const head = async (v: View) => Buffer.from(await readAt(v, 0, 0x50000));
    expect(Buffer.compare(await head(a.view), await head(b.view))).toBe(0);
    expect(Buffer.compare(await head(a.view), await head(c.view))).not.toBe(0);
    await Promise.all([a.view.close!(), b.view.close!(), c.view.close!()]);
  });

  it('keeps QEMU-style header updates in the overlay across reopen', async () => {
    const mem = new MemoryDevice(4 * MiB);
    const first = await makeView(mem, { name: 'persist' });
    const overlayFile = join(dir, 'persist.vhdx-overlay');
    expect(existsSync(overlayFile)).toBe(false); // reads never create it
    await readAt(first.view, 0, first.layout.dataStart);
    expect(existsSync(overlayFile)).toBe(false);
    // Header 2 (seq 2) is current, so QEMU writes header 1 first, then header 2.
    await qemuStyleHeaderUpdate(first.view, 0x10000, 3n, 'cdcdcdcd-0000-4000-8000-000000000001');
    await qemuStyleHeaderUpdate(first.view, 0x20000, 4n, 'cdcdcdcd-0000-4000-8000-000000000002');
    await first.view.write(Uint8Array.of(0x5a), first.layout.dataStart + 12345);
    await first.view.flush();
    await first.view.close!();
    expect(existsSync(overlayFile)).toBe(true);

    const second = await vhdxView.create({ device: checked(mem), descriptor: first.descriptor, siblings: [] });
    const h1 = await readAt(second, 0x10000, 4096);
    const h2 = await readAt(second, 0x20000, 4096);
    expect(selectCurrentHeader(h1, h2)).toMatchObject({ index: 2, header: { sequenceNumber: 4n, dataWriteGuid: 'cdcdcdcd-0000-4000-8000-000000000002' } });
    expect((await readAt(second, first.layout.dataStart + 12345, 1))[0]).toBe(0x5a);
    // Bytes 80–4095 stayed zero, as QEMU's CRC assumed.
    expect(h1.subarray(80).every((b) => b === 0)).toBe(true);
    await second.close!();
  });

  it('refuses a header write that breaks the checksum, with EINVAL, changing nothing', async () => {
    const { view, descriptor } = await makeView(new MemoryDevice(MiB));
    const before = await readAt(view, 0x10000, 4096);
    const bad = Uint8Array.from(before.subarray(0, 80));
    bad[8] = 9; // sequence number changed without a new checksum
    await expect(view.write(bad, 0x10000)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/header 1 would no longer be valid \(checksum/) });
    // A split header write (two pieces) is refused too: the first piece alone leaves a bad CRC.
    const good = encodeHeader({ ...decodeHeader(before), sequenceNumber: 7n, dataWriteGuid: 'cdcdcdcd-0000-4000-8000-000000000007' });
    await expect(view.write(good.subarray(0, 40), 0x10000)).rejects.toMatchObject({ code: 'EINVAL' });
    // Moving the log is refused even with a valid checksum.
    const moved = encodeHeader({ ...decodeHeader(before), sequenceNumber: 7n, logOffset: 8 * MiB });
    await expect(view.write(moved.subarray(0, 80), 0x10000)).rejects.toThrow(/log must stay/);
    expect(Buffer.compare(Buffer.from(await readAt(view, 0x10000, 4096)), Buffer.from(before))).toBe(0);
    expect(existsSync(join(dir, `${descriptor.name}.vhdx-overlay`))).toBe(false);
    await view.close!();
  });

  it('refuses changes to the region tables, BAT, metadata and signature, but accepts identical rewrites and free areas', async () => {
    const mem = new MemoryDevice(8 * MiB);
    const { view, layout } = await makeView(mem);
    const bat = await readAt(view, layout.batOffset, 64);
    await view.write(bat, layout.batOffset); // identical: fine
    const moved = Uint8Array.from(bat);
    moved[9] ^= 0x10; // BAT entry 1 would point elsewhere
    await expect(view.write(moved, layout.batOffset)).rejects.toMatchObject({ code: 'EPERM', message: expect.stringMatching(/change the BAT/) });
    const rt = await readAt(view, 0x30000, 65536);
    await view.write(rt, 0x30000);
    rt[40] ^= 1;
    await expect(view.write(rt, 0x30000)).rejects.toMatchObject({ code: 'EPERM' });
    await expect(view.write(Uint8Array.of(0xff), layout.metadataOffset + 0x10000)).rejects.toMatchObject({ code: 'EPERM' });
    await expect(view.write(Buffer.from('vhdxfilf'), 0)).rejects.toMatchObject({ code: 'EINVAL' });
    // The log and reserved areas take anything, and keep it.
    await view.write(Buffer.from('loge-test'), layout.logOffset);
    await view.write(Buffer.from('creator!'.padEnd(16, '\0'), 'utf16le'), 8);
    expect(Buffer.from(await readAt(view, layout.logOffset, 9)).toString()).toBe('loge-test');
    // A write straddling the end of the metadata area and the payload, refused in the metadata
    // part, leaves the payload untouched.
    const lastMeta = await readAt(view, layout.metadataOffset, 0x10028);
    const straddle = new Uint8Array(0x10028 + 16).fill(0x77);
    straddle.set(lastMeta.subarray(0, 0x10020), 0);
    await expect(view.write(straddle, layout.metadataOffset)).rejects.toMatchObject({ code: 'EPERM' });
    await view.close!();
  });

  it('replaces a torn last overlay record by the previous valid page', async () => {
    const mem = new MemoryDevice(MiB);
    const first = await makeView(mem, { name: 'torn' });
    await qemuStyleHeaderUpdate(first.view, 0x10000, 3n, 'cdcdcdcd-0000-4000-8000-000000000003');
    await qemuStyleHeaderUpdate(first.view, 0x10000, 5n, 'cdcdcdcd-0000-4000-8000-000000000005');
    await first.view.close!();
    const path = join(dir, 'torn.vhdx-overlay');
    const bytes = await readFile(path);
    await writeFile(path, bytes.subarray(0, bytes.length - 100)); // the second record is torn
    const second = await vhdxView.create({ device: checked(mem), descriptor: first.descriptor, siblings: [] });
    expect(decodeHeader(await readAt(second, 0x10000, 4096)).sequenceNumber).toBe(3n);
    await second.close!();
    expect((await stat(path)).size).toBe(64 + 32 + 4096); // the torn tail was cut off
  });

  it('sets aside an overlay that no longer fits the layout', async () => {
    const mem = new MemoryDevice(4 * MiB);
    const first = await makeView(mem, { name: 'stale' });
    await qemuStyleHeaderUpdate(first.view, 0x10000, 3n, 'cdcdcdcd-0000-4000-8000-000000000003');
    await first.view.close!();
    const changed = { ...first.descriptor, descriptor: { ...first.descriptor.descriptor, viewOptions: { vhdx: { blockSize: 2 * MiB } } } };
    const second = await vhdxView.create({ device: checked(mem), descriptor: changed, siblings: [] });
    expect(decodeHeader(await readAt(second, 0x10000, 4096)).sequenceNumber).toBe(1n);
    await second.close!();
    expect((await readdir(dir)).some((f) => f.startsWith('stale.vhdx-overlay.stale-'))).toBe(true);
  });

  it('compacts an overlay with many superseded records on open', async () => {
    const mem = new MemoryDevice(MiB);
    let { view, descriptor } = await makeView(mem, { name: 'compact' });
    for (let i = 0; i < 30; i++) await qemuStyleHeaderUpdate(view, 0x10000 + (i % 2) * 0x10000, BigInt(3 + i), 'cdcdcdcd-0000-4000-8000-000000000003');
    await view.close!();
    const path = join(dir, 'compact.vhdx-overlay');
    expect((await stat(path)).size).toBe(64 + 30 * (32 + 4096));
    view = await vhdxView.create({ device: checked(mem), descriptor, siblings: [] });
    expect((await stat(path)).size).toBe(64 + 2 * (32 + 4096));
    expect(decodeHeader(await readAt(view, 0x20000, 4096)).sequenceNumber).toBe(32n);
    await qemuStyleHeaderUpdate(view, 0x10000, 33n, 'cdcdcdcd-0000-4000-8000-000000000003');
    await view.close!();
    const again = await vhdxView.create({ device: checked(mem), descriptor, siblings: [] });
    expect(decodeHeader(await readAt(again, 0x10000, 4096)).sequenceNumber).toBe(33n);
    await again.close!();
  });

  it('is read-only over a read-only store and never creates an overlay', async () => {
    const { view, descriptor } = await makeView(readOnly(new MemoryDevice(MiB)));
    expect(view.writable).toBe(false);
    await expect(view.write(new Uint8Array(80), 0x10000)).rejects.toMatchObject({ code: 'EROFS' });
    expect(existsSync(join(dir, `${descriptor.name}.vhdx-overlay`))).toBe(false);
    await view.close!();
  });

  it('gives EIO for an unreadable payload range only', async () => {
    const mem = new MemoryDevice(4 * MiB);
    const { view, layout } = await makeView(failingRange(mem, 2 * MiB, 2 * MiB + 4096));
    await expect(readAt(view, layout.dataStart + 2 * MiB + 100, 10)).rejects.toMatchObject({ code: 'EIO' });
    await expect(readAt(view, layout.dataStart + 2 * MiB - 10, 20)).rejects.toMatchObject({ code: 'EIO' });
    await readAt(view, layout.dataStart + 2 * MiB + 4096, 4096);
    await readAt(view, 0, layout.dataStart);
    await view.close!();
  });

  it('builds a 2 TiB view without touching the payload', async () => {
    const dev = untouchableDevice(2 * TiB);
    const { view, layout } = await makeView(dev);
    expect(layout.geometry.payloadBlocks).toBe(65536);
    expect(view.size).toBe(layout.dataStart + 2 * TiB);
    const meta = await readAt(view, 0, layout.dataStart);
    expect(Buffer.from(meta.subarray(0, 8)).toString()).toBe('vhdxfile');
    // The BAT entry of the last block points at the last block.
    const last = payloadEntry(meta, layout.batOffset, 65535 + Math.floor(65535 / 128));
    expect(last).toBe(layout.dataStart + 65535 * 32 * MiB);
    expect(dev.reads).toBe(0);
    await view.close!();
  });

  it('refuses a store a VHDX cannot express, naming the store', async () => {
    await expect(makeView(untouchableDevice(64 * TiB + 4096), { name: 'huge' })).rejects.toThrow(/store huge: cannot show it as a VHDX: a VHDX can describe at most 64 TiB/);
    await expect(makeView(new MemoryDevice(GiB), { viewOptions: { vhdx: { blockSize: '3M' } } })).rejects.toThrow(/power of 2/);
  });

  it('keeps header checksums valid after updates (CRC over the whole 4 KiB)', async () => {
    const { view } = await makeView(new MemoryDevice(MiB));
    await qemuStyleHeaderUpdate(view, 0x10000, 3n, 'cdcdcdcd-0000-4000-8000-000000000009');
    const h = await readAt(view, 0x10000, 4096);
    expect(new DataView(h.buffer).getUint32(4, true)).toBe(crc32cWithZeroedField(h, 4));
    await view.close!();
  });
});

function payloadEntry(meta: Uint8Array, batOffset: number, index: number): number {
  const v = new DataView(meta.buffer, meta.byteOffset);
  const lo = v.getUint32(batOffset + index * 8, true);
  const hi = v.getUint32(batOffset + index * 8 + 4, true);
  expect(lo & 7).toBe(6);
  return hi * 2 ** 32 + ((lo & 0xfff00000) >>> 0);
}
