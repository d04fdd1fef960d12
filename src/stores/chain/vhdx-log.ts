/**
 * The VHDX metadata log (MS-VHDX §2.3; digest §1.5): replay on open, and writing entries for our
 * own BAT and sector-bitmap updates. QEMU's block/vhdx-log.c is the reference behaviour.
 *
 * Replay: scan the ring for valid entries ("loge", CRC, our LogGuid, every descriptor and data
 * sector consistent); the valid entry with the highest sequence number is the head; walk from its
 * Tail forward through entries numbered one apart up to the head; apply their descriptors in order.
 * A read-only opener keeps the result as an in-memory overlay of 4 KiB sectors and never writes.
 *
 * Writing: each entry we write is a complete sequence on its own (Tail = its own offset), because
 * we apply it and flush before writing the next one.
 */
import { VdiskError } from '../../errors.js';
import { MiB } from '../../formats/bytes.js';
import {
  LOG_SECTOR_SIZE, decodeLogDataSector, decodeLogDescriptor, decodeLogEntryHeader,
  encodeLogDataSector, encodeLogDescriptor, encodeLogEntry, logDescriptorOffset, logDescriptorSectors,
  logEntryChecksumOk, logSequenceMatches, restoreLoggedSector, type VhdxLogDescriptor, type VhdxLogEntryHeader,
} from '../../formats/vhdx.js';
import { hasSignature } from '../../formats/bytes.js';
import type { Guid } from '../../formats/guid.js';

export interface LogReplay {
  /**
   * Zeroed ranges (zero descriptors), to apply before `sectors`. Kept as ranges, never expanded:
   * a ZeroLength comes from the file and may be anything up to LastFileOffset.
   */
  zeroRanges: { fileOffset: number; length: number }[];
  /** Sector after-images by file offset (4 KiB aligned), applied after `zeroRanges`. */
  sectors: Map<number, Uint8Array>;
  /** The file must be at least this long after replay. */
  lastFileOffset: number;
  flushedFileOffset: number;
  entries: number;
}

interface ParsedEntry {
  offset: number;
  header: VhdxLogEntryHeader;
  descriptors: { d: VhdxLogDescriptor; data?: Uint8Array }[];
}

/** Reads `length` bytes of the ring starting at `offset`, wrapping at the end. */
function ringSlice(log: Uint8Array, offset: number, length: number): Uint8Array {
  if (offset + length <= log.length) return log.subarray(offset, offset + length);
  const out = new Uint8Array(length);
  const first = log.length - offset;
  out.set(log.subarray(offset), 0);
  out.set(log.subarray(0, length - first), first);
  return out;
}

function parseEntry(log: Uint8Array, offset: number, logGuid: Guid): ParsedEntry | undefined {
  if (!hasSignature(log, offset, 'loge')) return undefined;
  let header: VhdxLogEntryHeader;
  try {
    header = decodeLogEntryHeader(log.subarray(offset, offset + LOG_SECTOR_SIZE));
  } catch {
    return undefined;
  }
  if (header.logGuid !== logGuid || header.entryLength > log.length) return undefined;
  const entry = ringSlice(log, offset, header.entryLength);
  try {
    if (!logEntryChecksumOk(entry)) return undefined;
    const descSectors = logDescriptorSectors(header.descriptorCount);
    const descriptors: ParsedEntry['descriptors'] = [];
    let dataIndex = 0;
    for (let i = 0; i < header.descriptorCount; i++) {
      const d = decodeLogDescriptor(entry, logDescriptorOffset(i));
      if (d.sequenceNumber !== header.sequenceNumber) return undefined;
      if (d.kind === 'data') {
        const at = (descSectors + dataIndex++) * LOG_SECTOR_SIZE;
        if (at + LOG_SECTOR_SIZE > entry.length) return undefined;
        const ds = decodeLogDataSector(entry.subarray(at, at + LOG_SECTOR_SIZE));
        if (!logSequenceMatches(header.sequenceNumber, ds)) return undefined;
        descriptors.push({ d, data: restoreLoggedSector(d, ds) });
      } else {
        descriptors.push({ d });
      }
    }
    return { offset, header, descriptors };
  } catch {
    return undefined;
  }
}

/**
 * Replays a log image (the whole ring, `log`) for `logGuid`. Returns undefined when the ring holds
 * no valid entry for this GUID (nothing to replay: what a writer that crashed right after setting
 * LogGuid leaves behind; QEMU treats it the same way).
 */
export function replayLog(log: Uint8Array, logGuid: Guid, where: string): LogReplay | undefined {
  const valid = new Map<number, ParsedEntry>();
  for (let off = 0; off < log.length; off += LOG_SECTOR_SIZE) {
    const e = parseEntry(log, off, logGuid);
    if (e) valid.set(off, e);
  }
  if (valid.size === 0) return undefined;
  const heads = [...valid.values()].sort((a, b) => (a.header.sequenceNumber > b.header.sequenceNumber ? -1 : 1));
  for (const head of heads) {
    // Walk from the head's tail to the head.
    const seq: ParsedEntry[] = [];
    let at = head.header.tail;
    let ok = false;
    for (let guard = 0; guard <= valid.size; guard++) {
      const e = valid.get(at);
      if (!e) break;
      if (seq.length && e.header.sequenceNumber !== seq[seq.length - 1]!.header.sequenceNumber + 1n) break;
      seq.push(e);
      if (e === head) {
        ok = true;
        break;
      }
      at = (at + e.header.entryLength) % log.length;
    }
    if (!ok) continue;
    const sectors = new Map<number, Uint8Array>();
    const zeroRanges: LogReplay['zeroRanges'] = [];
    for (const e of seq) {
      for (const { d, data } of e.descriptors) {
        if (d.kind === 'data') {
          sectors.set(d.fileOffset, data!);
          continue;
        }
        const end = d.fileOffset + d.zeroLength;
        if (end > e.header.lastFileOffset) {
          throw new VdiskError('EINVAL', `${where}: a VHDX log zero descriptor covers ${d.fileOffset}+${d.zeroLength} bytes, past the entry's LastFileOffset ${e.header.lastFileOffset}; the file is corrupt`);
        }
        // Later descriptors win: earlier after-images inside the zeroed range are dropped
        // (bounded by the sectors the ring holds, never by ZeroLength).
        for (const off of sectors.keys()) if (off >= d.fileOffset && off < end) sectors.delete(off);
        if (d.zeroLength > 0) zeroRanges.push({ fileOffset: d.fileOffset, length: d.zeroLength });
      }
    }
    return { zeroRanges, sectors, lastFileOffset: head.header.lastFileOffset, flushedFileOffset: head.header.flushedFileOffset, entries: seq.length };
  }
  throw new VdiskError('EINVAL', `${where}: the VHDX log has entries but no complete sequence; the file is corrupt`);
}

/**
 * Builds one log entry carrying after-images of 4 KiB sectors. Returns the entry's bytes
 * (a multiple of 4 KiB).
 */
export function buildLogEntry(options: {
  sectors: { fileOffset: number; data: Uint8Array }[];
  sequenceNumber: bigint;
  logGuid: Guid;
  tail: number;
  fileSize: number;
}): Uint8Array {
  const count = options.sectors.length;
  const descSectors = logDescriptorSectors(count);
  const entryLength = (descSectors + count) * LOG_SECTOR_SIZE;
  const entry = new Uint8Array(entryLength);
  options.sectors.forEach((s, i) => {
    encodeLogDescriptor(entry, logDescriptorOffset(i), {
      kind: 'data',
      leadingBytes: s.data.subarray(0, 8),
      trailingBytes: s.data.subarray(LOG_SECTOR_SIZE - 4, LOG_SECTOR_SIZE),
      fileOffset: s.fileOffset,
      sequenceNumber: options.sequenceNumber,
    });
    entry.set(encodeLogDataSector(s.data, options.sequenceNumber), (descSectors + i) * LOG_SECTOR_SIZE);
  });
  const fileEnd = Math.ceil(options.fileSize / MiB) * MiB;
  encodeLogEntry(entry, {
    entryLength,
    tail: options.tail,
    sequenceNumber: options.sequenceNumber,
    descriptorCount: count,
    logGuid: options.logGuid,
    flushedFileOffset: fileEnd,
    lastFileOffset: fileEnd,
  });
  return entry;
}

/** The largest number of 4 KiB sectors one entry may carry in a log of `logLength` bytes. */
export function maxSectorsPerEntry(logLength: number): number {
  let n = Math.floor(logLength / LOG_SECTOR_SIZE) - 1;
  while (n > 0 && (logDescriptorSectors(n) + n) * LOG_SECTOR_SIZE > logLength) n--;
  return n;
}

