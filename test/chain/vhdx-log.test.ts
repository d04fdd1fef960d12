/**
 * VHDX log replay against hand-built entries: zero descriptors stay ranges (a ZeroLength from the
 * file is never expanded into memory), are bounded by LastFileOffset, and later descriptors win.
 */
import { describe, expect, it } from 'vitest';
import {
  LOG_SECTOR_SIZE, decodeLogEntryHeader, encodeLogDataSector, encodeLogDescriptor, encodeLogEntry, logDescriptorOffset, logDescriptorSectors,
  type VhdxLogDescriptor,
} from '../../src/formats/vhdx.js';
import { randomGuid } from '../../src/formats/guid.js';
import { buildLogEntry, replayLog } from '../../src/stores/chain/vhdx-log.js';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeHeader, decodeRegionTable, encodeHeader, encodeRegionTable, REGION_GUID_METADATA } from '../../src/formats/vhdx.js';
import { createLayerFile } from '../../src/stores/chain/images.js';
import { VhdxImage } from '../../src/stores/chain/vhdx-image.js';
import { scratchDir } from '../support/tmp.js';

const TiB = 2 ** 40;
const MiB = 2 ** 20;
const logGuid = randomGuid();

type Step = { zero: [number, number] } | { data: [number, number] }; // [fileOffset, length] / [fileOffset, fill byte]

/** A 1 MiB ring holding one entry (sequence 1, its own tail) with the given descriptors in order. */
function ringWith(steps: Step[], lastFileOffset: number): Uint8Array {
  const dataCount = steps.filter((s) => 'data' in s).length;
  const descSectors = logDescriptorSectors(steps.length);
  const entryLength = (descSectors + dataCount) * LOG_SECTOR_SIZE;
  const ring = new Uint8Array(MiB);
  const entry = ring.subarray(0, entryLength);
  let dataIndex = 0;
  steps.forEach((s, i) => {
    let d: VhdxLogDescriptor;
    if ('zero' in s) d = { kind: 'zero', fileOffset: s.zero[0], zeroLength: s.zero[1], sequenceNumber: 1n };
    else {
      const sector = new Uint8Array(LOG_SECTOR_SIZE).fill(s.data[1]);
      d = { kind: 'data', fileOffset: s.data[0], leadingBytes: sector.subarray(0, 8), trailingBytes: sector.subarray(LOG_SECTOR_SIZE - 4), sequenceNumber: 1n };
      entry.set(encodeLogDataSector(sector, 1n), (descSectors + dataIndex++) * LOG_SECTOR_SIZE);
    }
    encodeLogDescriptor(entry, logDescriptorOffset(i), d);
  });
  encodeLogEntry(entry, { entryLength, tail: 0, sequenceNumber: 1n, descriptorCount: steps.length, logGuid, flushedFileOffset: 4 * MiB, lastFileOffset });
  return ring;
}

describe('VHDX log replay', () => {
  it('keeps a 1 TiB zero descriptor as one range, without allocating for it', () => {
    const before = process.memoryUsage().rss;
    const replay = replayLog(ringWith([{ zero: [4 * MiB, TiB] }], 2 * TiB), logGuid, 'big.vhdx')!;
    expect(replay.zeroRanges).toEqual([{ fileOffset: 4 * MiB, length: TiB }]);
    expect(replay.sectors.size).toBe(0);
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * MiB);
  });

  it('refuses a zero descriptor past the entry\'s LastFileOffset, naming the file', () => {
    expect(() => replayLog(ringWith([{ zero: [4 * MiB, TiB] }], 16 * MiB), logGuid, 'small.vhdx'))
      .toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/^small\.vhdx: .*zero descriptor.*LastFileOffset/) }));
  });

  it('applies descriptors in order: a later zero range drops an earlier sector, a later sector survives an earlier zero', () => {
    const replay = replayLog(ringWith([
      { data: [8192, 0xaa] },
      { zero: [0, 4 * LOG_SECTOR_SIZE] },
      { data: [4096, 0xbb] },
    ], 4 * MiB), logGuid, 'order.vhdx')!;
    expect([...replay.sectors.keys()]).toEqual([4096]);
    expect(replay.sectors.get(4096)!.every((b) => b === 0xbb)).toBe(true);
    expect(replay.zeroRanges).toEqual([{ fileOffset: 0, length: 4 * LOG_SECTOR_SIZE }]);
  });
});

const dir = await scratchDir('vdiskfs-vhdx-log-');

describe('VHDX open with a replayed log', () => {
  /**
   * A 4 MiB VHDX whose live log rewrites the region table so the metadata region is 1 GiB long,
   * in an entry that claims the file was 2 GiB (LastFileOffset): nothing past the real file exists.
   */
  async function liar(): Promise<string> {
    const path = join(dir, `liar-${Math.random().toString(16).slice(2)}.vhdx`);
    await createLayerFile(path, { format: 'vhdx', size: 4 * MiB });
    const bytes = Buffer.from(await readFile(path));
    const headers = [0x10000, 0x20000].map((at) => decodeHeader(bytes.subarray(at, at + 4096)));
    const current = headers[0]!.sequenceNumber > headers[1]!.sequenceNumber ? headers[0]! : headers[1]!;
    const regions = decodeRegionTable(bytes.subarray(0x30000, 0x40000)).map((r) => (r.guid === REGION_GUID_METADATA ? { ...r, length: 1 << 30 } : r));
    const table = encodeRegionTable(regions);
    const entry = buildLogEntry({ sectors: [{ fileOffset: 0x30000, data: table.subarray(0, 4096) }], sequenceNumber: 1n, logGuid, tail: 0, fileSize: 2 ** 31 });
    // What the file had flushed is its real size; only LastFileOffset claims more.
    encodeLogEntry(entry, { ...decodeLogEntryHeader(entry.subarray(0, 4096)), flushedFileOffset: bytes.length });
    Buffer.from(entry).copy(bytes, current.logOffset);
    const withLog = { ...current, logGuid };
    Buffer.from(encodeHeader({ ...withLog, sequenceNumber: current.sequenceNumber + 1n })).copy(bytes, 0x10000);
    Buffer.from(encodeHeader({ ...withLog, sequenceNumber: current.sequenceNumber + 2n })).copy(bytes, 0x20000);
    await writeFile(path, bytes);
    return path;
  }

  for (const writable of [false, true]) {
    it(`refuses metadata past the real end of the file, whatever LastFileOffset says (${writable ? 'writable' : 'read-only'})`, async () => {
      const path = await liar();
      const before = await readFile(path);
      await expect(VhdxImage.open(path, { writable })).rejects.toMatchObject({ message: expect.stringMatching(/liar-.*\.vhdx.*metadata .* past the end of the file/) });
      expect((await readFile(path)).equals(before), 'a refused open changes nothing').toBe(true);
    });
  }
});
