/**
 * The metadata log: appending entries and barriers, and replaying it on open.
 *
 * Entries are collected in RAM between barriers (coalesced into runs: consecutive LBNs on
 * consecutive PBNs become one entry) and reach the file only as one write of
 * `entries + barrier`, followed by fdatasync. A failed append is cut off again (truncate to the
 * previous end), so the file never holds a torn group in front of later good ones.
 *
 * Replay streams the file through a window that starts at the current group, verifies each group
 * against its barrier before applying any entry of it, and stops at the first thing that is not a
 * well-formed entry or a valid barrier: everything after the last valid barrier is rolled back.
 */
import type { LbsFile } from './files.js';
import {
  BARRIER_MAGIC,
  BARRIER_SIZE,
  ENTRY_PREFIX,
  EntryType,
  LOG_HEADER_SIZE,
  MAP_KNOWN_FLAGS,
  MAP_MAX_RUN,
  MAP_ZERO,
  barrierHashMatches,
  decodeBarrier,
  decodeMapEntry,
  encodeBarrier,
  encodeMapEntry,
  mapEntrySize,
  readPrefix,
  type MapEntry,
} from './format.js';
import { VdiskError } from '../../errors.js';

/** Longest run one entry collects before it is closed (keeps the open-run arrays small). */
const RUN_CAP = 4096;

export class LogWriter {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private used = 0;
  private count = 0;
  // The open run.
  private runOpen = false;
  private runFlags = 0;
  private runLbn = 0;
  private runPbn = 0;
  private runCount = 0;
  private readonly runChecksums = new Uint32Array(RUN_CAP);
  private readonly runTimestamps = new Float64Array(RUN_CAP);

  /** Bytes written to the log file by this writer. */
  bytesWritten = 0;
  entriesWritten = 0;
  barriersWritten = 0;

  constructor(
    private readonly file: LbsFile,
    /** Where the next group goes: the end of the last valid barrier. */
    public end: number,
    /** The sequence number of the last barrier in the file (0: none yet). */
    public sequence: number,
  ) {}

  /** Records one block's new mapping (pbn ignored for zero blocks). */
  add(lbn: number, pbn: number, checksum: number, timestamp: number, flags: number): void {
    const zero = (flags & MAP_ZERO) !== 0;
    if (
      this.runOpen &&
      flags === this.runFlags &&
      lbn === this.runLbn + this.runCount &&
      this.runCount < RUN_CAP &&
      (zero ? timestamp === this.runTimestamps[0]! + this.runCount : pbn === this.runPbn + this.runCount)
    ) {
      this.runChecksums[this.runCount] = checksum;
      this.runTimestamps[this.runCount] = timestamp;
      this.runCount++;
      return;
    }
    this.closeRun();
    this.runOpen = true;
    this.runFlags = flags;
    this.runLbn = lbn;
    this.runPbn = zero ? 0 : pbn;
    this.runCount = 1;
    this.runChecksums[0] = checksum;
    this.runTimestamps[0] = timestamp;
  }

  /** Entries waiting for a barrier, and roughly how many bytes they take. */
  get pendingEntries(): number {
    return this.count + (this.runOpen ? 1 : 0);
  }

  get pendingBytes(): number {
    return this.used + (this.runOpen ? mapEntrySize(this.runCount, (this.runFlags & MAP_ZERO) !== 0) : 0);
  }

  private closeRun(): void {
    if (!this.runOpen) return;
    const zero = (this.runFlags & MAP_ZERO) !== 0;
    this.reserve(mapEntrySize(this.runCount, zero));
    this.used += encodeMapEntry(
      this.buf,
      this.used,
      { flags: this.runFlags, lbnStart: this.runLbn, pbnStart: this.runPbn, count: this.runCount },
      zero ? undefined : this.runChecksums,
      this.runTimestamps,
      0,
    );
    this.count++;
    this.runOpen = false;
  }

  private reserve(n: number): void {
    if (this.used + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.used + n));
    this.buf.copy(next, 0, 0, this.used);
    this.buf = next;
  }

  /**
   * Appends the pending entries and a barrier as one write, then fdatasyncs the log. The caller
   * must have made the data file durable first. On failure the file is cut back to where it was
   * and the entries stay pending, so a later barrier can still commit them.
   */
  async commit(clock: number): Promise<void> {
    this.closeRun();
    const sequence = this.sequence + 1;
    const barrier = encodeBarrier(this.buf.subarray(0, this.used), sequence, clock, this.count);
    this.reserve(BARRIER_SIZE);
    barrier.copy(this.buf, this.used);
    const length = this.used + BARRIER_SIZE;
    try {
      await this.file.write(this.buf, 0, length, this.end);
      await this.file.datasync();
    } catch (err) {
      await this.file.truncate(this.end).catch(() => {});
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        throw new VdiskError('ENOSPC', 'the metadata log\'s filesystem is full: the barrier was not written (free space on the protected mount, then flush again)', { cause: err });
      }
      throw new VdiskError('EIO', `appending to the metadata log failed: ${(err as Error).message}`, { cause: err });
    }
    this.end += length;
    this.sequence = sequence;
    this.bytesWritten += length;
    this.entriesWritten += this.count;
    this.barriersWritten++;
    this.used = 0;
    this.count = 0;
    if (this.buf.length > 4 << 20) this.buf = Buffer.allocUnsafe(64 * 1024); // give back a burst's memory
  }
}

export interface ReplayResult {
  /** File offset just after the last valid barrier (where the next group goes). */
  end: number;
  /** The last valid barrier's sequence number and clock (0 if none). */
  sequence: number;
  clock: number;
  /** Map entries applied. */
  entries: number;
  /** Entries (and bytes) after the last valid barrier, rolled back. */
  rolledBackEntries: number;
  rolledBackBytes: number;
  /**
   * The highest barrier sequence number found in the rolled-back bytes beyond the next one (0 if
   * none). A torn append holds at most the next barrier, so a later one means the log was damaged
   * in the middle, not cut short by a crash.
   */
  laterBarrier: number;
}

const WINDOW = 8 << 20;

/**
 * Replays the log: calls `apply` for each map entry of each verified group, in order. Throws only
 * for what rollback cannot explain: a verified group holding something this version does not
 * understand, or an I/O error.
 */
export async function replayLog(file: LbsFile, where: string, apply: (e: MapEntry, at: number) => void): Promise<ReplayResult> {
  const fileSize = await file.size();
  let win = Buffer.allocUnsafe(WINDOW);
  let winStart = LOG_HEADER_SIZE; // file offset of win[0]
  let winLen = 0;
  let groupStart = LOG_HEADER_SIZE;
  let groupCount = 0;
  let pos = LOG_HEADER_SIZE;
  const result: ReplayResult = { end: LOG_HEADER_SIZE, sequence: 0, clock: 0, entries: 0, rolledBackEntries: 0, rolledBackBytes: 0, laterBarrier: 0 };
  const scratch = { checksums: new Uint32Array(MAP_MAX_RUN), timestamps: new Float64Array(MAP_MAX_RUN) };

  /** Makes [at, at + n) available in the window; false if the file ends first. */
  const ensure = async (at: number, n: number): Promise<boolean> => {
    if (at + n > fileSize) return false;
    if (at + n <= winStart + winLen) return true;
    // Keep the current group (it is applied only once its barrier checks out), drop the rest.
    const keepFrom = groupStart - winStart;
    const keep = winLen - keepFrom;
    const want = Math.max(WINDOW, at + n - groupStart);
    const next = want > win.length ? Buffer.allocUnsafe(want) : win;
    win.copy(next, 0, keepFrom, winLen);
    win = next;
    winStart = groupStart;
    winLen = keep;
    const readTo = Math.min(fileSize, winStart + win.length);
    while (winStart + winLen < readTo) {
      const got = await file.read(win, winLen, readTo - winStart - winLen, winStart + winLen);
      if (got === 0) throw new VdiskError('EIO', `unexpected end of ${where} at offset ${winStart + winLen}`);
      winLen += got;
    }
    return at + n <= winStart + winLen;
  };

  for (;;) {
    if (!(await ensure(pos, ENTRY_PREFIX))) break;
    const prefix = readPrefix(win, pos - winStart, winLen);
    if (!prefix || !(await ensure(pos, prefix.length))) break;
    if (prefix.type !== EntryType.Barrier) {
      groupCount++;
      pos += prefix.length;
      continue;
    }
    const at = pos - winStart;
    const barrier = decodeBarrier(win, at);
    if (
      !barrier ||
      barrier.sequence !== result.sequence + 1 ||
      barrier.entryCount !== groupCount ||
      !barrierHashMatches(win, groupStart - winStart, at)
    ) {
      break;
    }
    // The group is intact: apply it.
    for (let p = groupStart; p < pos; ) {
      const q = p - winStart;
      const type = win.readUInt8(q);
      const length = win.readUInt32LE(q + 4);
      if (type !== EntryType.Map) {
        throw new VdiskError('EINVAL', `${where}: entry type ${type} at offset ${p} is not known to this vdiskfs (written by a newer version?)`);
      }
      const flags = win.readUInt8(q + 1);
      const entry = (flags & ~MAP_KNOWN_FLAGS) === 0 ? decodeMapEntry(win, q, scratch) : null;
      if (!entry) throw new VdiskError('EINVAL', `${where}: the map entry at offset ${p} is malformed although its barrier verifies (written by a newer version, or a bug)`);
      apply(entry, p);
      result.entries++;
      p += length;
    }
    pos += BARRIER_SIZE;
    groupStart = pos;
    groupCount = 0;
    result.end = pos;
    result.sequence = barrier.sequence;
    result.clock = barrier.clock;
  }
  result.rolledBackEntries = groupCount;
  result.rolledBackBytes = fileSize - result.end;
  if (result.rolledBackBytes > 0) result.laterBarrier = await findLaterBarrier(file, result.end, fileSize, result.sequence + 2);
  return result;
}

/** Scans [from, to) for barrier magics carrying a sequence ≥ `atLeast`; returns the highest. */
async function findLaterBarrier(file: LbsFile, from: number, to: number, atLeast: number): Promise<number> {
  const magic = Buffer.from(BARRIER_MAGIC, 'latin1');
  const chunk = Buffer.allocUnsafe(WINDOW + 16);
  let found = 0;
  for (let at = from; at < to; at += WINDOW) {
    // Each chunk overlaps the next by 16 bytes, so a magic and its sequence are never split.
    const n = Math.min(chunk.length, to - at);
    let got = 0;
    while (got < n) {
      const r = await file.read(chunk, got, n - got, at + got);
      if (r === 0) break;
      got += r;
    }
    for (let i = chunk.indexOf(magic, 0); i >= 0 && i + 16 <= got; i = chunk.indexOf(magic, i + 1)) {
      const seq = Number(chunk.readBigUInt64LE(i + 8));
      if (seq >= atLeast && seq > found) found = seq;
    }
  }
  return found;
}
