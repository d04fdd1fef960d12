/**
 * LbsDevice: the logging block store as a BlockDevice, over two LbsFiles (data file, metadata log).
 * It knows nothing of paths, descriptors or permissions (lbs-store.ts does that), so tests can run
 * it over in-memory files that crash at any byte.
 *
 * Write path: every non-zero block is appended to the active cluster's write buffer (one cluster);
 * a full buffer goes to the data file as one sequential write and the next free cluster (the
 * neighbour if it is free) becomes active. All-zero blocks only change the map. Mapping changes
 * collect in the LogWriter and reach the log at the next barrier.
 *
 * Barrier (flush): write out the buffer, fdatasync the data file, append entries + barrier to the
 * log, fdatasync the log. Only then do clusters emptied since the previous barrier become free.
 *
 * Concurrency: mutations (write, discard, flush, cleaning) run one at a time through a promise
 * queue; reads do not queue. A read classifies every block synchronously (buffer-resident blocks
 * are copied at once), then reads the rest from the data file and verifies each block; if a block
 * fails its checksum and its mapping changed meanwhile (the cluster was cleaned and reused), it is
 * read again instead of being reported.
 */
import type { BlockDevice, Capabilities } from '../../devices/block-device.js';
import { VdiskError } from '../../errors.js';
import { logger, type Logger } from '../../log.js';
import { BlockMap } from './block-map.js';
import { checksumById, type ChecksumKind } from './checksums.js';
import { readFully, type LbsFile } from './files.js';
import {
  DATA_HEADER_FIELDS,
  LOG_HEADER_SIZE,
  MAP_RELOCATED,
  MAP_ZERO,
  NO_BLOCK,
  dataFileSize,
  decodeDataHeader,
  decodeLogHeader,
  type Geometry,
  type LogHeader,
} from './format.js';
import { LogWriter, replayLog, type ReplayResult } from './log.js';
import { cleanerPlan, pickVictims } from './cleaner.js';

export interface LbsOpenOptions {
  readOnly?: boolean;
  /** For messages: where the files are. */
  dataPath?: string;
  logPath?: string;
  /** The descriptor's id: the files must belong to this store. */
  expectedId?: string;
  /** The descriptor's size: the store must have this logical size. */
  expectedSize?: number;
  /** A barrier is made by itself once this many bytes of entries wait (bounds replay and RAM). */
  autoBarrierBytes?: number;
  /** The store's name, for log lines. */
  name?: string;
  /** Called once the files are closed (the store kind releases its lock here). */
  onClose?: () => Promise<void>;
}

const DEFAULT_AUTO_BARRIER = 4 << 20;
/** Cleaned clusters waiting for a barrier before the cleaner makes one. */
const PENDING_BATCH = 4;

export class LbsDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: Capabilities;
  readonly blockSize: number;
  readonly blocksPerCluster: number;
  readonly map: BlockMap;
  readonly header: LogHeader;
  readonly replay: ReplayResult;

  private readonly checksum: ChecksumKind;
  private readonly log: Logger;
  private readonly logWriter: LogWriter | undefined;
  private readonly autoBarrierBytes: number;
  private readonly dataOffset: number;
  private readonly shift: number;
  private readonly zeroBlock: Buffer;
  /** Checksums computed by a read (synchronously, so one array serves every read). */
  private readonly runScratch = new Uint32Array(1024);
  private readonly oneScratch = new Uint32Array(1);

  // The active cluster and its write buffer.
  private active = -1;
  private lastActive = -1;
  private readonly buffer: Buffer;
  /** Blocks appended to the buffer / of those, already written to the data file. */
  private fill = 0;
  private written = 0;
  /** Data-file writes not yet covered by an fdatasync. */
  private dataDirty = false;
  private clock: number;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  // Counters.
  private readonly st = {
    guestWrites: 0,
    guestWriteBytes: 0,
    guestReads: 0,
    guestReadBytes: 0,
    guestFlushes: 0,
    sequentialWrites: 0,
    lastWriteEnd: -1,
    dataBytesWritten: 0,
    dataBytesRead: 0,
    dataWriteCalls: 0,
    dataSequentialBytes: 0,
    lastDataWriteEnd: -1,
    dataWriteRuns: new Array<number>(17).fill(0),
    barriers: 0,
    autoBarriers: 0,
    blocksVerified: 0,
    blocksFailed: 0,
    readRetries: 0,
    zeroBlocksWritten: 0,
    dataBlocksWritten: 0,
    cleanerRuns: 0,
    cleanerWaits: 0,
    clustersCleaned: 0,
    blocksMoved: 0,
  };

  private constructor(
    private readonly data: LbsFile,
    private readonly logFile: LbsFile,
    header: LogHeader,
    map: BlockMap,
    replay: ReplayResult,
    private readonly options: LbsOpenOptions,
  ) {
    this.header = header;
    this.map = map;
    this.replay = replay;
    this.size = header.logicalSize;
    this.blockSize = header.blockSize;
    this.blocksPerCluster = header.clusterSize / header.blockSize;
    this.shift = Math.log2(this.blocksPerCluster);
    this.dataOffset = header.dataOffset;
    this.checksum = checksumById(header.checksum, options.logPath ?? 'metadata log');
    this.clock = replay.clock;
    this.autoBarrierBytes = options.autoBarrierBytes ?? DEFAULT_AUTO_BARRIER;
    this.zeroBlock = Buffer.alloc(this.blockSize);
    this.buffer = Buffer.alloc(options.readOnly ? 0 : header.clusterSize);
    this.log = logger('lbs', { store: options.name ?? options.dataPath });
    this.logWriter = options.readOnly ? undefined : new LogWriter(logFile, replay.end, replay.sequence);
    this.capabilities = { writable: !options.readOnly, flush: true, discard: !options.readOnly, preferredBlockSize: this.blockSize };
  }

  /** Opens a store: checks both headers belong together, replays the log, rolls back a torn tail. */
  static async open(data: LbsFile, logFile: LbsFile, options: LbsOpenOptions = {}): Promise<LbsDevice> {
    const dataWhere = `data file ${options.dataPath ?? ''}`.trim();
    const logWhere = `metadata log ${options.logPath ?? ''}`.trim();
    const dhBuf = Buffer.alloc(DATA_HEADER_FIELDS);
    const dlen = await data.size();
    if (dlen < DATA_HEADER_FIELDS) throw new VdiskError('EINVAL', `${dataWhere} is too short (${dlen} bytes) to be an LBS data file`);
    await readFully(data, dhBuf, 0, DATA_HEADER_FIELDS, 0, dataWhere);
    const dh = decodeDataHeader(dhBuf, dataWhere);
    const lhBuf = Buffer.alloc(LOG_HEADER_SIZE);
    const llen = await logFile.size();
    if (llen < LOG_HEADER_SIZE) throw new VdiskError('EINVAL', `${logWhere} is too short (${llen} bytes) to be an LBS metadata log`);
    await readFully(logFile, lhBuf, 0, LOG_HEADER_SIZE, 0, logWhere);
    const lh = decodeLogHeader(lhBuf, logWhere);

    if (lh.storeId !== dh.storeId) {
      throw new VdiskError('EINVAL', `${logWhere} belongs to store ${lh.storeId}, but ${dataWhere} to store ${dh.storeId}: the log and the data file are not a pair`);
    }
    if (options.expectedId && options.expectedId !== dh.storeId) {
      throw new VdiskError('EINVAL', `${dataWhere} belongs to store ${dh.storeId}, not to this descriptor's store ${options.expectedId}`);
    }
    const geometryKeys: (keyof Geometry)[] = ['blockSize', 'clusterSize', 'clusterCount', 'logicalSize', 'dataOffset'];
    for (const k of geometryKeys) {
      if (lh[k] !== dh[k]) throw new VdiskError('EINVAL', `${logWhere} and ${dataWhere} disagree on ${k} (${lh[k]} vs ${dh[k]})`);
    }
    if (options.expectedSize !== undefined && options.expectedSize !== dh.logicalSize) {
      throw new VdiskError('EINVAL', `the store's disk size is ${dh.logicalSize} bytes, but its descriptor says ${options.expectedSize}`);
    }
    const logicalClusters = Math.ceil(Math.ceil(dh.logicalSize / dh.blockSize) / (dh.clusterSize / dh.blockSize));
    if (dh.clusterCount < logicalClusters + 2) {
      throw new VdiskError('EINVAL', `${dataWhere} has ${dh.clusterCount} clusters, too few for a disk of ${logicalClusters} clusters (the cleaner needs spare ones)`);
    }
    const want = dataFileSize(dh);
    if (dlen !== want) {
      throw new VdiskError('EINVAL', `${dataWhere} is ${dlen} bytes, but its header says ${want}: was it truncated or replaced?`);
    }

    const bpc = dh.clusterSize / dh.blockSize;
    const logicalBlocks = Math.ceil(dh.logicalSize / dh.blockSize);
    const map = new BlockMap(logicalBlocks, dh.clusterCount, bpc);
    const physicalBlocks = map.physicalBlocks;
    const replay = await replayLog(logFile, logWhere, (e, at) => {
      if (e.lbnStart + e.count > logicalBlocks || (!(e.flags & MAP_ZERO) && e.pbnStart + e.count > physicalBlocks)) {
        throw new VdiskError('EINVAL', `${logWhere}: the entry at offset ${at} maps blocks outside the store (wrong log for this data file?)`);
      }
      if (e.flags & MAP_ZERO) {
        for (let i = 0; i < e.count; i++) map.set(e.lbnStart + i, NO_BLOCK, 0, e.firstTimestamp! + i);
      } else {
        const cks = e.checksums!;
        const ts = e.timestamps!;
        for (let i = 0; i < e.count; i++) map.set(e.lbnStart + i, e.pbnStart + i, cks[i]!, ts[i]!);
      }
    });
    if (replay.laterBarrier > 0 && !options.readOnly) {
      throw new VdiskError(
        'EIO',
        `${logWhere} is damaged at offset ${replay.end}: barrier ${replay.sequence + 1} does not verify, yet barrier ${replay.laterBarrier} follows, so this is not a torn write from a crash. ` +
          'The store was not opened for writing (that would cut off everything after the damage); copy the log aside, and see what still verifies with vdiskfs check',
      );
    }
    map.deriveStates();
    const dev = new LbsDevice(data, logFile, lh, map, replay, options);
    if (replay.rolledBackBytes > 0) {
      dev.log.warn(
        { barrier: replay.sequence, entries: replay.rolledBackEntries, bytes: replay.rolledBackBytes },
        `rolled back ${replay.rolledBackEntries} entries after barrier ${replay.sequence}`,
      );
      // Cut the torn tail so that the next group follows the last valid barrier directly.
      if (!options.readOnly) {
        await logFile.truncate(replay.end);
        await logFile.datasync();
      }
    }
    dev.log.info({ entries: replay.entries, barriers: replay.sequence, mapped: map.mappedBlocks, clusters: map.counts() }, 'lbs store opened');
    return dev;
  }

  // ---- reads ----------------------------------------------------------------------------------

  async read(dest: Uint8Array, offset: number): Promise<void> {
    this.st.guestReads++;
    this.st.guestReadBytes += dest.length;
    await this.readRange(dest, offset, dest.length);
  }

  /**
   * Fills dest[0, length) with the disk's bytes at [offset, offset + length). Blocks may be read
   * beyond `size` (the tail of the last block), which the store keeps as zeros.
   */
  private async readRange(dest: Uint8Array, offset: number, length: number): Promise<void> {
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    const pbnOf = this.map.pbn;
    const mask = this.blocksPerCluster - 1;
    // Runs of consecutive physical blocks to read from the data file: [lbn, pbn, count] triples.
    let runs: number[] | undefined;
    let runLbn = -1;
    let runPbn = -1;
    let runCount = 0;
    for (let lbn = first; lbn <= last; lbn++) {
      const p = pbnOf[lbn]!;
      const blockStart = lbn * bs;
      const from = Math.max(offset, blockStart);
      const to = Math.min(offset + length, blockStart + bs);
      if (p === NO_BLOCK) {
        dest.fill(0, from - offset, to - offset);
        continue;
      }
      if (p >>> this.shift === this.active && (p & mask) < this.fill) {
        const at = (p & mask) * bs;
        dest.set(this.buffer.subarray(at + from - blockStart, at + to - blockStart), from - offset);
        continue;
      }
      if (runCount > 0 && lbn === runLbn + runCount && p === runPbn + runCount) {
        runCount++;
        continue;
      }
      if (runCount > 0) (runs ??= []).push(runLbn, runPbn, runCount);
      runLbn = lbn;
      runPbn = p;
      runCount = 1;
    }
    if (runCount > 0) (runs ??= []).push(runLbn, runPbn, runCount);
    if (!runs) return;
    if (runs.length === 3) return this.readRun(dest, offset, length, runs[0]!, runs[1]!, runs[2]!);
    const pending: Promise<void>[] = [];
    for (let i = 0; i < runs.length; i += 3) pending.push(this.readRun(dest, offset, length, runs[i]!, runs[i + 1]!, runs[i + 2]!));
    await Promise.all(pending);
  }

  /** Reads `count` blocks from the data file at `pbn` for logical blocks from `lbn`, verified. */
  private async readRun(dest: Uint8Array, offset: number, length: number, lbn: number, pbn: number, count: number): Promise<void> {
    const bs = this.blockSize;
    const runStart = lbn * bs;
    const runBytes = count * bs;
    // Snapshot the expected checksums now: the map may move on while the read is in flight.
    const want = this.map.checksum.slice(lbn, lbn + count);
    const direct = runStart >= offset && runStart + runBytes <= offset + length;
    const buf = direct ? dest.subarray(runStart - offset, runStart - offset + runBytes) : new Uint8Array(runBytes);
    await readFully(this.data, buf, 0, runBytes, this.dataOffset + pbn * bs, 'LBS data file');
    this.st.dataBytesRead += runBytes;
    const got = count <= this.runScratch.length ? this.runScratch : new Uint32Array(count);
    this.checksum.run(buf, bs, count, got);
    // Collect mismatches before anything awaits: the scratch array is shared by all reads.
    let bad: number[] | undefined;
    for (let i = 0; i < count; i++) if (got[i] !== want[i]) (bad ??= []).push(i);
    this.st.blocksVerified += count - (bad?.length ?? 0);
    for (const i of bad ?? []) {
      const l = lbn + i;
      if (this.map.pbn[l] !== pbn + i || this.map.checksum[l] !== want[i]) {
        // The block moved while we read it; read its current home instead.
        this.st.readRetries++;
        const tmp = new Uint8Array(bs);
        await this.readRange(tmp, l * bs, bs);
        buf.set(tmp, i * bs);
        continue;
      }
      this.st.blocksFailed++;
      this.log.error({ lbn: l, pbn: pbn + i }, `block ${l} (physical block ${pbn + i}) failed its checksum`);
      throw new VdiskError('EIO', `block ${l} (physical block ${pbn + i}) failed its checksum: the data file was changed or damaged`);
    }
    if (!direct) {
      const from = Math.max(offset, runStart);
      const to = Math.min(offset + length, runStart + runBytes);
      dest.set(buf.subarray(from - runStart, to - runStart), from - offset);
    }
  }

  // ---- writes ---------------------------------------------------------------------------------

  /** Runs mutations one at a time, in arrival order. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    this.st.guestWrites++;
    this.st.guestWriteBytes += src.length;
    if (offset === this.st.lastWriteEnd) this.st.sequentialWrites++;
    this.st.lastWriteEnd = offset + src.length;
    return this.exclusive(() => this.writeLocked(src, offset));
  }

  discard(offset: number, length: number): Promise<void> {
    return this.exclusive(async () => {
      // Whole blocks become zero blocks (no data-file space); partial edges are written as zeros.
      const bs = this.blockSize;
      const zeros = new Uint8Array(Math.min(length, bs * this.blocksPerCluster));
      for (let done = 0; done < length; done += zeros.length) {
        const n = Math.min(zeros.length, length - done);
        await this.writeLocked(n === zeros.length ? zeros : zeros.subarray(0, n), offset + done);
      }
    });
  }

  private async writeLocked(src: Uint8Array, offset: number): Promise<void> {
    this.ensureWritable();
    const bs = this.blockSize;
    const bpc = this.blocksPerCluster;
    const end = offset + src.length;
    // One chunk at most a cluster's worth of blocks, so space is made sure of per chunk.
    for (let pos = offset; pos < end; ) {
      const firstLbn = Math.floor(pos / bs);
      const chunkEnd = Math.min(end, (firstLbn + bpc) * bs);
      const lastLbn = Math.floor((chunkEnd - 1) / bs);
      const n = lastLbn - firstLbn + 1;
      // Assemble the new content of each block: a view of src when fully covered, else RMW.
      const blocks: Uint8Array[] = new Array(n);
      for (let i = 0; i < n; i++) {
        const lbn = firstLbn + i;
        const bStart = lbn * bs;
        if (bStart >= pos && bStart + bs <= chunkEnd) {
          blocks[i] = src.subarray(bStart - offset, bStart - offset + bs);
        } else {
          const tmp = new Uint8Array(bs);
          await this.readRange(tmp, bStart, bs);
          const from = Math.max(pos, bStart);
          const to = Math.min(chunkEnd, bStart + bs);
          tmp.set(src.subarray(from - offset, to - offset), from - bStart);
          blocks[i] = tmp;
        }
      }
      let nonZero = 0;
      const isZero = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        if (this.zeroBlock.equals(blocks[i]!)) isZero[i] = 1;
        else nonZero++;
      }
      await this.ensureSpace(nonZero);
      const one = this.oneScratch;
      for (let i = 0; i < n; i++) {
        const lbn = firstLbn + i;
        const ts = ++this.clock;
        if (isZero[i]) {
          this.map.set(lbn, NO_BLOCK, 0, ts);
          this.logWriter!.add(lbn, 0, 0, ts, MAP_ZERO);
          this.st.zeroBlocksWritten++;
          continue;
        }
        // Inline append (awaiting only when the cluster is full): the hot path of small writes.
        if (this.active < 0 || this.fill === bpc) await this.nextCluster();
        const slot = this.fill++;
        const at = slot * bs;
        this.buffer.set(blocks[i]!, at);
        const pbn = this.active * bpc + slot;
        this.checksum.run(this.buffer.subarray(at, at + bs), bs, 1, one);
        const cks = one[0]!;
        this.map.set(lbn, pbn, cks, ts);
        this.logWriter!.add(lbn, pbn, cks, ts, 0);
        this.st.dataBlocksWritten++;
      }
      pos = chunkEnd;
    }
    if (this.logWriter!.pendingBytes >= this.autoBarrierBytes) {
      this.st.autoBarriers++;
      await this.barrierLocked();
    }
  }

  private async nextCluster(): Promise<void> {
    if (this.active >= 0) {
      await this.writeOut();
      this.map.retire(this.active);
      this.lastActive = this.active;
      this.active = -1;
    }
    const c = this.map.takeFree(this.lastActive);
    if (c < 0) throw new VdiskError('ENOSPC', 'the LBS data file has no free cluster left (this is a bug: the cleaner should have made room)');
    this.active = c;
    this.fill = 0;
    this.written = 0;
  }

  /** Writes the buffer's not-yet-written blocks to the data file, as one write. */
  private async writeOut(): Promise<void> {
    if (this.active < 0 || this.written === this.fill) return;
    const bs = this.blockSize;
    const from = this.written;
    const count = this.fill - from;
    const position = this.dataOffset + (this.active * this.blocksPerCluster + from) * bs;
    try {
      await this.data.write(this.buffer, from * bs, count * bs, position);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new VdiskError(code === 'ENOSPC' ? 'ENOSPC' : 'EIO', `writing to the LBS data file failed: ${(err as Error).message}`, { cause: err });
    }
    this.written = this.fill;
    this.dataDirty = true;
    if (position === this.st.lastDataWriteEnd) this.st.dataSequentialBytes += count * bs;
    this.st.lastDataWriteEnd = position + count * bs;
    this.st.dataBytesWritten += count * bs;
    this.st.dataWriteCalls++;
    this.st.dataWriteRuns[Math.min(16, Math.floor(Math.log2(count)))]!++;
  }

  /** Free blocks available to foreground writes: the active cluster's rest plus free clusters, minus the cleaner's reserve. */
  private foregroundRoom(): number {
    const activeRest = this.active >= 0 ? this.blocksPerCluster - this.fill : 0;
    return activeRest + Math.max(0, this.map.freeClusters - 1) * this.blocksPerCluster;
  }

  /** Every free block: the active cluster's rest plus all free clusters. */
  private totalRoom(): number {
    return (this.active >= 0 ? this.blocksPerCluster - this.fill : 0) + this.map.freeClusters * this.blocksPerCluster;
  }

  /**
   * Makes sure `blocks` new blocks fit. Below the low-water mark the cleaner takes one bounded step
   * per write (one cluster moved, or one barrier to free the clusters moved before), so writes are
   * never held for long; only when free clusters are critically few does a write wait for the
   * cleaner to make room.
   */
  private async ensureSpace(blocks: number): Promise<void> {
    const plan = cleanerPlan(this.map);
    const free = this.map.freeClusters;
    if (this.foregroundRoom() >= blocks && free > plan.lowWater) return;
    if (this.foregroundRoom() >= blocks && free > plan.critical) {
      await this.cleanStep();
      return;
    }
    await this.clean(plan.critical + 1, blocks);
    if (this.totalRoom() < blocks) {
      throw new VdiskError('ENOSPC', 'the LBS store has no free space left in its data file (over-provisioning exhausted)');
    }
  }

  /** One step of background-style cleaning, done on the way of a write. */
  private async cleanStep(): Promise<void> {
    this.st.cleanerRuns++;
    if (this.map.pendingClusters.length >= PENDING_BATCH) return this.barrierLocked();
    const [victim] = pickVictims(this.map, 1);
    if (victim === undefined || this.map.live[victim]! > this.totalRoom()) {
      if (this.map.pendingClusters.length > 0) await this.barrierLocked();
      return;
    }
    await this.relocate(victim);
  }

  /**
   * The cleaner, when a write has to wait: first a barrier if clusters wait for one, then the
   * emptiest clusters are moved (live blocks appended to the active cluster, as relocation entries
   * with the same checksum and timestamp) until `target` clusters are free and `need` blocks fit.
   * A cleaned cluster becomes free only at the barrier that makes its relocations durable. Each
   * cleaned cluster with v live blocks grows the free room by (blocks per cluster - v) > 0, so the
   * loop ends; it stops early if no cluster has a dead block.
   */
  private async clean(target: number, need: number): Promise<void> {
    this.st.cleanerRuns++;
    this.st.cleanerWaits++;
    if (this.map.pendingClusters.length > 0) await this.barrierLocked();
    while (this.map.freeClusters < target || this.foregroundRoom() < need) {
      const victims = pickVictims(this.map, Math.max(1, target - this.map.freeClusters));
      let moved = false;
      for (const v of victims) {
        if (this.map.live[v]! > this.totalRoom()) break;
        await this.relocate(v);
        moved = true;
      }
      if (!moved) break;
      await this.barrierLocked();
    }
  }

  /** Moves the live blocks of cluster `c` to the active cluster. */
  private async relocate(c: number): Promise<void> {
    const bs = this.blockSize;
    const bpc = this.blocksPerCluster;
    const buf = Buffer.allocUnsafe(this.header.clusterSize);
    await readFully(this.data, buf, 0, buf.length, this.dataOffset + c * this.header.clusterSize, 'LBS data file');
    this.st.dataBytesRead += buf.length;
    const base = c * bpc;
    const sums = new Uint32Array(bpc);
    this.checksum.run(buf, bs, bpc, sums);
    for (let i = 0; i < bpc; i++) {
      const lbn = this.map.owner[base + i]!;
      if (lbn === NO_BLOCK || this.map.pbn[lbn] !== base + i) continue;
      const block = buf.subarray(i * bs, (i + 1) * bs);
      const cks = this.map.checksum[lbn]!;
      // A damaged block is moved as it is, with its checksum: reads of it stay errors.
      if (sums[i] !== cks) this.log.warn({ lbn, pbn: base + i }, 'cleaner moved a block that fails its checksum');
      const ts = this.map.timestamp[lbn]!;
      if (this.active < 0 || this.fill === bpc) await this.nextCluster();
      const slot = this.fill++;
      this.buffer.set(block, slot * bs);
      const pbn = this.active * bpc + slot;
      this.map.set(lbn, pbn, cks, ts);
      this.logWriter!.add(lbn, pbn, cks, ts, MAP_RELOCATED);
      this.st.blocksMoved++;
    }
    this.st.clustersCleaned++;
  }

  // ---- barriers -------------------------------------------------------------------------------

  flush(): Promise<void> {
    this.st.guestFlushes++;
    if (!this.logWriter) return Promise.resolve();
    return this.exclusive(() => this.barrierLocked());
  }

  /** The barrier: buffer → data file → fdatasync(data) → entries + barrier → fdatasync(log). */
  private async barrierLocked(): Promise<void> {
    const w = this.logWriter!;
    if (w.pendingEntries === 0 && this.written === this.fill && !this.dataDirty) {
      // Every mapping is durable already, so clusters emptied earlier may be reused now.
      this.map.releasePending();
      return;
    }
    await this.writeOut();
    if (this.dataDirty) {
      await this.data.datasync();
      this.dataDirty = false;
    }
    if (w.pendingEntries > 0) await w.commit(this.clock);
    this.st.barriers++;
    this.map.releasePending();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.logWriter) await this.exclusive(() => this.barrierLocked());
    } finally {
      this.closed = true;
      await this.data.close().catch(() => {});
      await this.logFile.close().catch(() => {});
      await this.options.onClose?.();
    }
  }

  private ensureWritable(): void {
    if (!this.logWriter) throw new VdiskError('EROFS', 'this store is open read-only');
    if (this.closed) throw new VdiskError('EBADF', 'the store is closed');
  }

  // ---- check & stats --------------------------------------------------------------------------

  /**
   * Verifies every mapped block against its checksum, cluster by cluster (one read per cluster).
   * Calls `progress(done, total)` with counts of clusters.
   */
  async verifyAll(progress?: (done: number, total: number) => void): Promise<{ verified: number; failed: { lbn: number; pbn: number }[]; clusters: number }> {
    const bpc = this.blocksPerCluster;
    const bs = this.blockSize;
    const used: number[] = [];
    for (let c = 0; c < this.map.clusterCount; c++) if (this.map.live[c]! > 0) used.push(c);
    const buf = Buffer.allocUnsafe(this.header.clusterSize);
    const failed: { lbn: number; pbn: number }[] = [];
    let verified = 0;
    const sums = new Uint32Array(bpc);
    for (let k = 0; k < used.length; k++) {
      const c = used[k]!;
      const base = c * bpc;
      if (c === this.active) this.buffer.copy(buf, 0, 0, this.header.clusterSize);
      else await readFully(this.data, buf, 0, buf.length, this.dataOffset + c * this.header.clusterSize, 'LBS data file');
      this.checksum.run(buf, bs, bpc, sums);
      for (let i = 0; i < bpc; i++) {
        const lbn = this.map.owner[base + i]!;
        if (lbn === NO_BLOCK || this.map.pbn[lbn] !== base + i) continue;
        if (sums[i] === this.map.checksum[lbn]) verified++;
        else failed.push({ lbn, pbn: base + i });
      }
      progress?.(k + 1, used.length);
    }
    this.st.blocksVerified += verified;
    this.st.blocksFailed += failed.length;
    return { verified, failed, clusters: used.length };
  }

  stats(): Record<string, unknown> {
    const s = this.st;
    const clusters = this.map.counts();
    const runs: Record<string, number> = {};
    s.dataWriteRuns.forEach((n, i) => {
      if (n > 0) runs[`${2 ** i}${i === 16 ? '+' : ''}`] = n;
    });
    const logBytes = this.logWriter?.bytesWritten ?? 0;
    return {
      blockSize: this.blockSize,
      clusterSize: this.header.clusterSize,
      checksum: this.checksum.name,
      logicalBlocks: this.map.logicalBlocks,
      physicalBlocks: this.map.physicalBlocks,
      mappedBlocks: this.map.mappedBlocks,
      /** Disk data the store holds: live non-zero blocks (zero and discarded blocks cost nothing). */
      allocatedBytes: this.map.mappedBlocks * this.blockSize,
      clusters: { total: this.map.clusterCount, ...clusters },
      requests: {
        writes: s.guestWrites,
        writeBytes: s.guestWriteBytes,
        sequentialWrites: s.sequentialWrites,
        reads: s.guestReads,
        readBytes: s.guestReadBytes,
        flushes: s.guestFlushes,
      },
      dataFile: {
        bytesWritten: s.dataBytesWritten,
        bytesRead: s.dataBytesRead,
        writeCalls: s.dataWriteCalls,
        // Bytes of writes that began where the previous data-file write ended.
        sequentialBytes: s.dataSequentialBytes,
        averageWriteBlocks: s.dataWriteCalls ? +(s.dataBytesWritten / this.blockSize / s.dataWriteCalls).toFixed(1) : 0,
        writeRunBlocks: runs,
      },
      log: {
        bytesWritten: logBytes,
        entriesWritten: this.logWriter?.entriesWritten ?? 0,
        barriers: s.barriers,
        autoBarriers: s.autoBarriers,
        lastBarrier: this.logWriter?.sequence ?? this.replay.sequence,
        size: this.logWriter?.end ?? this.replay.end,
        pendingEntries: this.logWriter?.pendingEntries ?? 0,
      },
      blocks: {
        written: s.dataBlocksWritten,
        zeroWritten: s.zeroBlocksWritten,
        verified: s.blocksVerified,
        failed: s.blocksFailed,
        readRetries: s.readRetries,
      },
      // runs: cleaning steps and waits; waits: writes that had to wait for the cleaner.
      cleaner: { runs: s.cleanerRuns, waits: s.cleanerWaits, clustersCleaned: s.clustersCleaned, blocksMoved: s.blocksMoved },
      writeAmplification: s.guestWriteBytes ? +((s.dataBytesWritten + logBytes) / s.guestWriteBytes).toFixed(3) : 0,
      clock: this.clock,
      ramBytesPerLogicalBlock: +this.map.bytesPerLogicalBlock().toFixed(2),
      recovery: { entriesReplayed: this.replay.entries, rolledBackEntries: this.replay.rolledBackEntries, rolledBackBytes: this.replay.rolledBackBytes },
    };
  }
}
