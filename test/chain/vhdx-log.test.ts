/**
 * VHDX log replay against hand-built entries: zero descriptors stay ranges (a ZeroLength from the
 * file is never expanded into memory), are bounded by LastFileOffset, and later descriptors win.
 */
import { describe, expect, it } from 'vitest';
import {
  LOG_SECTOR_SIZE, encodeLogDataSector, encodeLogDescriptor, encodeLogEntry, logDescriptorOffset, logDescriptorSectors,
  type VhdxLogDescriptor,
} from '../../src/formats/vhdx.js';
import { randomGuid } from '../../src/formats/guid.js';
import { replayLog } from '../../src/stores/chain/vhdx-log.js';

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
