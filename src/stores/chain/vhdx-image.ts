/**
 * A VHDX file (fixed, dynamic or differencing) as one chain layer: reader and writer.
 *
 * Structures come from src/formats/vhdx.ts; the log from vhdx-log.ts. A file with a non-empty log
 * is replayed before anything else is read: in memory when opened read-only (the file is never
 * touched), onto the file when opened for writing.
 *
 * Crash-safe write order (docs/chains.md):
 *   first write of a session: both headers rewritten one after the other (each flushed) with a
 *     new FileWriteGuid, a new DataWriteGuid and a LogGuid for the session;
 *   write: new payload and sector-bitmap blocks are appended at the 1 MiB-aligned end of the file
 *     (never over live data), data is written, and BAT entries / bitmap bits change in memory only;
 *   flush: fsync (data durable) → one log entry with the after-images of every dirty BAT and
 *     sector-bitmap 4 KiB sector → fsync → the same sectors written in place → fsync;
 *   close: LogGuid reset to zero in both headers, so QEMU and libvhdi see a clean file.
 * A crash before the log entry is durable leaves the old metadata (new data unreachable); after
 * it, replay installs the whole entry. Every sector therefore reads old or new, never garbage.
 */
import { dirname, relative, resolve, sep } from 'node:path';
import { VdiskError } from '../../errors.js';
import { writeZeroRange } from '../../devices/block-device.js';
import { MiB, readU64LE, viewOf } from '../../formats/bytes.js';
import { NULL_GUID, bracedGuid, parseGuid, randomGuid, type Guid } from '../../formats/guid.js';
import {
  HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIZE, KNOWN_METADATA_ITEMS, METADATA_TABLE_SIZE, PARENT_LOCATOR_TYPE_VHDX,
  ParentLocatorKey, PayloadBlockState, REGION_GUID_BAT, REGION_GUID_METADATA, REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET,
  REGION_TABLE_SIZE, SECTOR_BITMAP_BLOCK_SIZE, SectorBitmapState, VHDX_HEADER_SECTION_SIZE, batGeometry, decodeMetadataItems,
  decodeMetadataTable, decodeRegionTable, encodeFileIdentifier, encodeFileParameters, encodeHeader, encodeMetadataTable,
  encodeParentLocator, encodeRegionTable, encodeSectorSize, encodeVirtualDiskId, encodeVirtualDiskSize, freshHeader,
  encodeBatEntry, sectorBitmapBatIndex, isVhdx, parentLocatorValue, parseParentLinkage, selectCurrentHeader, type BatGeometry, type VhdxHeader,
  type VhdxMetadata, type VhdxMetadataEntry,
} from '../../formats/vhdx.js';
import { LayerFile, forEachRun, isZeroData, readMixedBlock, type Layer, type LayerInfo, type ParentLink, type ReadBelow } from './layer.js';
import { buildLogEntry, maxSectorsPerEntry, replayLog, type LogReplay } from './vhdx-log.js';
import { windowsPathCandidates } from './parent-resolver.js';
import { logger } from '../../log.js';

const PAGE = 4096;
const bad = (path: string, what: string) => new VdiskError('EINVAL', `${path}: ${what}`);
/** Dirty metadata sectors that force a log commit inside a write (keeps every entry far below a 1 MiB log). */
const DIRTY_LIMIT = 128;

export class VhdxImage implements Layer {
  readonly format = 'vhdx' as const;
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  readonly size: number;
  readonly blockSize: number;
  readonly sectorSize: number;
  readonly writeGranularity: number;
  readonly parent?: ParentLink;
  private readonly diff: boolean;
  private readonly cr: number;
  private readonly sectorsPerBlock: number;
  private readonly batView: DataView;
  /** 4 KiB sector-bitmap pages by file offset (or the promise of one being read). */
  private readonly sbPages = new Map<number, Uint8Array | Promise<Uint8Array>>();
  /** File offsets of 4 KiB metadata sectors changed in memory since the last log commit. */
  private readonly dirty = new Set<number>();
  private nextFree: number;
  private session = false;
  private logHead = 0;
  private logSeq = 1n;

  private constructor(
    private readonly file: LayerFile,
    private header: VhdxHeader,
    private headerIndex: 1 | 2,
    private readonly meta: VhdxMetadata,
    private readonly geometry: BatGeometry,
    private readonly batOffset: number,
    private readonly bat: Uint8Array,
    private readonly overlay: LogReplay | undefined,
    parent: ParentLink | undefined,
    dataEnd: number,
  ) {
    this.diff = meta.fileParameters.hasParent;
    this.type = this.diff ? 'differencing' : meta.fileParameters.leaveBlockAllocated ? 'fixed' : 'dynamic';
    this.size = meta.virtualDiskSize;
    this.blockSize = meta.fileParameters.blockSize;
    this.sectorSize = meta.logicalSectorSize;
    this.writeGranularity = meta.logicalSectorSize;
    this.cr = geometry.chunkRatio;
    this.sectorsPerBlock = this.blockSize / this.sectorSize;
    this.batView = viewOf(bat);
    this.parent = parent;
    this.nextFree = Math.ceil(Math.max(dataEnd, file.size) / MiB) * MiB;
  }

  get path(): string {
    return this.file.path;
  }

  get writable(): boolean {
    return this.file.writable;
  }

  get identity(): string {
    return this.header.dataWriteGuid;
  }

  static async open(path: string, options: { writable: boolean }): Promise<VhdxImage> {
    const file = await LayerFile.open(path, options.writable);
    try {
      return await VhdxImage.load(file);
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  private static async load(file: LayerFile): Promise<VhdxImage> {
    const path = file.path;
    if (file.size < VHDX_HEADER_SECTION_SIZE) throw bad(path, `only ${file.size} bytes: too short to be a VHDX (truncated?)`);
    const section = await file.readBytes(0, VHDX_HEADER_SECTION_SIZE);
    if (!isVhdx(section)) throw bad(path, 'not a VHDX file (no "vhdxfile" signature)');
    let sel: { header: VhdxHeader; index: 1 | 2 };
    try {
      sel = selectCurrentHeader(section.subarray(HEADER1_OFFSET, HEADER1_OFFSET + HEADER_SIZE), section.subarray(HEADER2_OFFSET, HEADER2_OFFSET + HEADER_SIZE));
    } catch (err) {
      throw bad(path, (err as Error).message);
    }
    let { header } = sel;
    const log = logger('chain');

    // Replay a non-empty log before reading any metadata.
    let replay: LogReplay | undefined;
    if (header.logGuid !== NULL_GUID && header.logLength > 0) {
      if (header.logOffset + header.logLength > file.size) throw bad(path, 'the log lies past the end of the file (truncated)');
      replay = replayLog(await file.readBytes(header.logOffset, header.logLength), header.logGuid, path);
      if (replay && file.size < replay.flushedFileOffset) {
        throw bad(path, `the file is ${file.size} bytes but its log says it was at least ${replay.flushedFileOffset} (truncated)`);
      }
      log.info({ path, entries: replay?.entries ?? 0, writable: file.writable }, 'VHDX log replay');
    }
    // Everything is read through the replayed sectors first; the file is written only once it all checks out.
    const readMeta = async (offset: number, length: number): Promise<Uint8Array> => {
      // Bounded by the real file, not by the log's LastFileOffset: metadata never lies past what was
      // flushed (checked above), and a lying log must not make us allocate what the file cannot hold.
      if (offset + length > file.size) throw bad(path, `metadata at ${offset}+${length} lies past the end of the file at ${file.size} bytes (truncated or corrupt)`);
      const out = await file.readBytes(offset, length);
      if (replay) patch(out, offset, replay);
      return out;
    };

    // Region table: copy 1, else copy 2.
    let regions;
    const rt1 = await readMeta(REGION_TABLE1_OFFSET, REGION_TABLE_SIZE);
    try {
      regions = decodeRegionTable(rt1, 'VHDX region table 1');
    } catch (err1) {
      try {
        regions = decodeRegionTable(await readMeta(REGION_TABLE2_OFFSET, REGION_TABLE_SIZE), 'VHDX region table 2');
      } catch {
        throw bad(path, (err1 as Error).message);
      }
    }
    for (const r of regions) {
      if (r.guid !== REGION_GUID_BAT && r.guid !== REGION_GUID_METADATA && r.required) {
        throw bad(path, `VHDX region ${r.guid} is marked required but vdiskfs does not know it; refusing to open`);
      }
    }
    const batRegion = regions.find((r) => r.guid === REGION_GUID_BAT);
    const metaRegion = regions.find((r) => r.guid === REGION_GUID_METADATA);
    if (!batRegion || !metaRegion) throw bad(path, 'VHDX region table lacks the BAT or the metadata region');

    const metaBytes = await readMeta(metaRegion.fileOffset, metaRegion.length);
    let meta: VhdxMetadata;
    let entries: VhdxMetadataEntry[];
    try {
      entries = decodeMetadataTable(metaBytes.subarray(0, METADATA_TABLE_SIZE), metaRegion.length);
      meta = decodeMetadataItems(entries, (o, l) => metaBytes.subarray(o, o + l));
    } catch (err) {
      throw bad(path, (err as Error).message);
    }
    const geometry = batGeometry({
      virtualSize: meta.virtualDiskSize, blockSize: meta.fileParameters.blockSize, logicalSectorSize: meta.logicalSectorSize,
      differencing: meta.fileParameters.hasParent,
    });
    if (batRegion.length < geometry.entries * 8) throw bad(path, `the BAT region (${batRegion.length} bytes) is too small for ${geometry.entries} entries`);
    const bat = await readMeta(batRegion.fileOffset, Math.ceil((geometry.entries * 8) / PAGE) * PAGE);

    // Validate every entry once, so reads can trust them.
    // A writable open extends the file to LastFileOffset as the replay requires; a read-only open
    // cannot, so there nothing past the real end exists and no block may point there.
    const fileEnd = file.writable ? Math.max(file.size, replay?.lastFileOffset ?? 0) : file.size;
    const v = viewOf(bat);
    let dataEnd = Math.max(batRegion.fileOffset + batRegion.length, metaRegion.fileOffset + metaRegion.length, header.logOffset + header.logLength);
    const cr = geometry.chunkRatio;
    for (let i = 0; i < geometry.entries; i++) {
      const lo = v.getUint32(i * 8, true);
      const state = lo & 7;
      const sb = i % (cr + 1) === cr;
      if (state === 0) continue;
      const off = readU64LE(bat, i * 8, 'VHDX BAT entry') - state;
      if (sb) {
        if (state !== SectorBitmapState.PRESENT) throw bad(path, `sector bitmap entry ${i} has state ${state}`);
        if (!meta.fileParameters.hasParent) throw bad(path, `sector bitmap entry ${i} is present in a file that is not differencing`);
        if (off < VHDX_HEADER_SECTION_SIZE || off + SECTOR_BITMAP_BLOCK_SIZE > fileEnd) throw bad(path, `sector bitmap block ${i} at ${off} lies outside the file (truncated)`);
        dataEnd = Math.max(dataEnd, off + SECTOR_BITMAP_BLOCK_SIZE);
        continue;
      }
      const block = i - Math.floor(i / (cr + 1));
      if (block >= geometry.payloadBlocks) continue;
      if (state === 4) throw bad(path, `BAT entry for block ${block} has the reserved state 4`);
      if (state === PayloadBlockState.PARTIALLY_PRESENT && !meta.fileParameters.hasParent) throw bad(path, `block ${block} is PARTIALLY_PRESENT in a file that is not differencing`);
      if (state === PayloadBlockState.FULLY_PRESENT || state === PayloadBlockState.PARTIALLY_PRESENT) {
        const len = Math.min(geometry.blockSize, meta.virtualDiskSize - block * geometry.blockSize);
        if (off < VHDX_HEADER_SECTION_SIZE || off + len > fileEnd) throw bad(path, `block ${block} at ${off} lies past the end of the file at ${fileEnd} bytes (truncated)`);
        if (state === PayloadBlockState.PARTIALLY_PRESENT) {
          const sbi = Math.floor(block / cr) * (cr + 1) + cr;
          if ((v.getUint32(sbi * 8, true) & 7) !== SectorBitmapState.PRESENT) throw bad(path, `block ${block} is PARTIALLY_PRESENT but its sector bitmap block is missing`);
        }
        dataEnd = Math.max(dataEnd, off + geometry.blockSize);
      }
    }
    if (file.writable && header.logGuid !== NULL_GUID) {
      // Valid: now apply the replay to the file and mark the log empty (both headers, one at a time).
      if (replay) {
        // Past the current end a zeroed range needs no writing: the truncate below extends with zeros.
        for (const z of replay.zeroRanges) {
          const end = Math.min(z.fileOffset + z.length, file.size);
          if (end > z.fileOffset) await writeZeroRange((src, at) => file.write(src, at), z.fileOffset, end - z.fileOffset);
        }
        for (const [off, data] of [...replay.sectors].sort((a, b) => a[0] - b[0])) await file.write(data, off);
        if (file.size < replay.lastFileOffset) await file.truncate(replay.lastFileOffset);
        await file.sync();
      }
      let idx = sel.index;
      for (let i = 0; i < 2; i++) {
        header = { ...header, sequenceNumber: header.sequenceNumber + 1n, logGuid: NULL_GUID };
        idx = idx === 1 ? 2 : 1;
        await file.write(encodeHeader(header), idx === 1 ? HEADER1_OFFSET : HEADER2_OFFSET);
        await file.sync();
      }
      sel = { header, index: idx };
    }
    let parent: ParentLink | undefined;
    if (meta.parentLocator) parent = parentLinkOf(path, meta);
    // Once applied to the file, the replayed sectors are what the file holds: no overlay needed.
    return new VhdxImage(file, sel.header, sel.index, meta, geometry, batRegion.fileOffset, bat, file.writable ? undefined : replay, parent, dataEnd);
  }

  // ─── BAT access ────────────────────────────────────────────────────────────────────────────────

  private entryIndex(block: number): number {
    return block + Math.floor(block / this.cr);
  }

  private state(index: number): number {
    return this.batView.getUint32(index * 8, true) & 7;
  }

  private offsetOf(index: number): number {
    const lo = this.batView.getUint32(index * 8, true);
    const hi = this.batView.getUint32(index * 8 + 4, true);
    return hi * 0x100000000 + ((lo & 0xfff00000) >>> 0);
  }

  private setEntry(index: number, state: number, fileOffset: number): void {
    this.batView.setUint32(index * 8, ((fileOffset % 0x100000000) | state) >>> 0, true);
    this.batView.setUint32(index * 8 + 4, Math.floor(fileOffset / 0x100000000), true);
    this.dirty.add(this.batOffset + Math.floor((index * 8) / PAGE) * PAGE);
  }

  /** The SB entry index of the chunk holding `block`. */
  private sbIndex(block: number): number {
    return Math.floor(block / this.cr) * (this.cr + 1) + this.cr;
  }

  /** Bit number, inside the chunk's sector-bitmap block, of sector `s` of `block`. */
  private sbBit(block: number, s: number): number {
    return (block % this.cr) * this.sectorsPerBlock + s;
  }

  private sbPage(pageOffset: number): Uint8Array | Promise<Uint8Array> {
    let p = this.sbPages.get(pageOffset);
    if (!p) {
      const promise = this.file.readBytes(pageOffset, PAGE).then((b) => {
        if (this.overlay) patch(b, pageOffset, this.overlay);
        return b;
      });
      this.sbPages.set(pageOffset, promise);
      promise.then((b) => this.sbPages.get(pageOffset) === promise && this.sbPages.set(pageOffset, b), () => this.sbPages.delete(pageOffset));
      p = promise;
    }
    return p;
  }

  /** Loads the bitmap pages covering sectors [s0, s1) of `block`; returns a synchronous bit getter. */
  private async bits(block: number, s0: number, s1: number): Promise<(s: number) => boolean> {
    const base = this.offsetOf(this.sbIndex(block));
    const first = this.sbBit(block, s0) >>> 3;
    const last = (this.sbBit(block, s1 - 1) >>> 3);
    const pages: Uint8Array[] = [];
    const p0 = Math.floor(first / PAGE);
    for (let p = p0; p <= Math.floor(last / PAGE); p++) {
      const pg = this.sbPage(base + p * PAGE);
      pages.push(pg instanceof Uint8Array ? pg : await pg);
    }
    return (s) => {
      const bit = this.sbBit(block, s);
      const byte = bit >>> 3;
      return (pages[Math.floor(byte / PAGE) - p0]![byte % PAGE]! & (1 << (bit & 7))) !== 0;
    };
  }

  // ─── Read ──────────────────────────────────────────────────────────────────────────────────────

  async read(dest: Uint8Array, offset: number, below: ReadBelow): Promise<void> {
    const pending: Promise<void>[] = [];
    let pos = offset;
    const end = offset + dest.length;
    const L = this.sectorSize;
    while (pos < end) {
      const block = Math.floor(pos / this.blockSize);
      const blockStart = block * this.blockSize;
      const n = Math.min(end, blockStart + this.blockSize) - pos;
      const at = pos - offset;
      const d = dest.subarray(at, at + n);
      const idx = this.entryIndex(block);
      const state = this.state(idx);
      if (state === PayloadBlockState.FULLY_PRESENT) {
        pending.push(this.file.read(d, this.offsetOf(idx) + (pos - blockStart)));
      } else if (state === PayloadBlockState.PARTIALLY_PRESENT) {
        const inBlock = pos - blockStart;
        const s0 = Math.floor(inBlock / L);
        const s1 = Math.ceil((inBlock + n) / L);
        const get = await this.bits(block, s0, s1);
        const data = this.offsetOf(idx);
        pending.push(readMixedBlock(d, pos, inBlock, get, L, (b, o) => this.file.read(b, data + o), below));
      } else if (state === PayloadBlockState.ZERO || !this.diff) {
        d.fill(0);
      } else {
        // NOT_PRESENT, UNDEFINED, UNMAPPED in a differencing file: the parent's data.
        pending.push(below(d, pos));
      }
      pos += n;
    }
    await Promise.all(pending);
  }

  // ─── Write ─────────────────────────────────────────────────────────────────────────────────────

  /** Starts a write session: new FileWriteGuid and DataWriteGuid, a LogGuid for our log entries. */
  private async beginSession(): Promise<void> {
    if (this.session) return;
    if (maxSectorsPerEntry(this.header.logLength) < DIRTY_LIMIT + 8) {
      // Metadata may only change through the log; without room for an entry, refuse before any write.
      throw new VdiskError('EROFS', `${this.path}: its VHDX log is ${this.header.logLength} bytes, too small to record metadata updates; vdiskfs can read this file but not write it`);
    }
    const h: VhdxHeader = { ...this.header, fileWriteGuid: randomGuid(), dataWriteGuid: randomGuid(), logGuid: randomGuid() };
    await this.writeHeaders(h);
    this.session = true;
    this.logHead = 0;
    this.logSeq = 1n;
  }

  /** Writes `h` into both header slots, non-current first, flushing after each (one is always valid). */
  private async writeHeaders(h: VhdxHeader): Promise<void> {
    let seq = this.header.sequenceNumber;
    let idx = this.headerIndex;
    for (let i = 0; i < 2; i++) {
      seq += 1n;
      idx = idx === 1 ? 2 : 1;
      await this.file.write(encodeHeader({ ...h, sequenceNumber: seq }), idx === 1 ? HEADER1_OFFSET : HEADER2_OFFSET);
      await this.file.sync();
    }
    this.header = { ...h, sequenceNumber: seq };
    this.headerIndex = idx;
  }

  private async allocate(length: number): Promise<number> {
    const at = this.nextFree;
    this.nextFree += Math.ceil(length / MiB) * MiB;
    if (this.file.size < this.nextFree) await this.file.truncate(this.nextFree);
    return at;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    if (!this.file.writable) throw new VdiskError('EROFS', `${this.path} is open read-only`);
    if (offset % this.sectorSize || src.length % this.sectorSize) throw new VdiskError('EINVAL', `${this.path}: write not aligned to ${this.sectorSize}-byte sectors`);
    await this.beginSession();
    if (this.dirty.size >= DIRTY_LIMIT) await this.commitMetadata();
    let pos = offset;
    const end = offset + src.length;
    const L = this.sectorSize;
    while (pos < end) {
      const block = Math.floor(pos / this.blockSize);
      const blockStart = block * this.blockSize;
      const n = Math.min(end, blockStart + this.blockSize) - pos;
      const at = pos - offset;
      const data = src.subarray(at, at + n);
      const inBlock = pos - blockStart;
      const idx = this.entryIndex(block);
      const state = this.state(idx);
      if (!this.diff && (state === PayloadBlockState.NOT_PRESENT || state === PayloadBlockState.ZERO) && isZeroData(data)) {
        // Reads as zeros already. (Not in a child: there zeros hide the parent, and libvhdi reads a
        // child's ZERO block from the parent, so they are written.)
      } else if (state === PayloadBlockState.FULLY_PRESENT) {
        await this.file.write(data, this.offsetOf(idx) + inBlock);
      } else if (state === PayloadBlockState.PARTIALLY_PRESENT) {
        await this.file.write(data, this.offsetOf(idx) + inBlock);
        await this.setBits(block, inBlock / L, n / L);
      } else {
        const blockLen = Math.min(this.blockSize, this.size - blockStart);
        const whole = inBlock === 0 && n >= blockLen;
        const where = await this.allocate(this.blockSize);
        await this.file.write(data, where + inBlock);
        // The rest of a new block is a hole (zeros): right for a dynamic file, and for a
        // differencing block that read as zeros before (ZERO). Otherwise the parent shows through
        // the sectors not written: PARTIALLY_PRESENT with a bitmap.
        if (!this.diff || whole || state === PayloadBlockState.ZERO) {
          this.setEntry(idx, PayloadBlockState.FULLY_PRESENT, where);
        } else {
          const sbi = this.sbIndex(block);
          if (this.state(sbi) !== SectorBitmapState.PRESENT) {
            const sb = await this.allocate(SECTOR_BITMAP_BLOCK_SIZE);
            this.setEntry(sbi, SectorBitmapState.PRESENT, sb);
          }
          await this.setBits(block, inBlock / L, n / L);
          this.setEntry(idx, PayloadBlockState.PARTIALLY_PRESENT, where);
        }
      }
      pos += n;
    }
  }

  private async setBits(block: number, s0: number, count: number): Promise<void> {
    const base = this.offsetOf(this.sbIndex(block));
    let bit = this.sbBit(block, s0);
    const end = bit + count;
    while (bit < end) {
      const byte = bit >>> 3;
      const pageOff = base + Math.floor(byte / PAGE) * PAGE;
      const p = this.sbPage(pageOff);
      const page = p instanceof Uint8Array ? p : await p;
      const pageEndBit = (Math.floor(byte / PAGE) + 1) * PAGE * 8;
      const stop = Math.min(end, pageEndBit);
      let changed = false;
      for (let b = bit; b < stop; b++) {
        const i = (b >>> 3) % PAGE;
        const m = 1 << (b & 7);
        if (!(page[i]! & m)) {
          page[i]! |= m;
          changed = true;
        }
      }
      if (changed) this.dirty.add(pageOff);
      bit = stop;
    }
  }

  /** Sends every dirty metadata sector through the log, then writes it in place. */
  private async commitMetadata(): Promise<void> {
    if (!this.dirty.size) return;
    const max = Math.min(maxSectorsPerEntry(this.header.logLength), 4 * DIRTY_LIMIT);
    if (this.header.logLength === 0 || max < this.dirty.size) {
      throw new VdiskError('EIO', `${this.path}: the VHDX log (${this.header.logLength} bytes) is too small to record ${this.dirty.size} metadata updates`);
    }
    const sectors: { fileOffset: number; data: Uint8Array }[] = [];
    for (const off of [...this.dirty].sort((a, b) => a - b)) {
      if (off >= this.batOffset && off < this.batOffset + this.bat.length) {
        sectors.push({ fileOffset: off, data: this.bat.slice(off - this.batOffset, off - this.batOffset + PAGE) });
      } else {
        sectors.push({ fileOffset: off, data: Uint8Array.from(await this.sbPage(off)) });
      }
    }
    this.dirty.clear();
    await this.file.sync(); // the data the new metadata points at is durable first
    const probe = buildLogEntry({ sectors, sequenceNumber: this.logSeq, logGuid: this.header.logGuid, tail: 0, fileSize: this.file.size });
    if (this.logHead + probe.length > this.header.logLength) this.logHead = 0;
    const entry = this.logHead === 0 ? probe : buildLogEntry({ sectors, sequenceNumber: this.logSeq, logGuid: this.header.logGuid, tail: this.logHead, fileSize: this.file.size });
    await this.file.write(entry, this.header.logOffset + this.logHead);
    await this.file.sync();
    for (const s of sectors) await this.file.write(s.data, s.fileOffset);
    await this.file.sync();
    this.logHead += entry.length;
    this.logSeq++;
  }

  async flush(): Promise<void> {
    if (!this.file.writable) return;
    if (this.dirty.size) await this.commitMetadata();
    else await this.file.sync();
  }

  /** Flushes and ends the write session (LogGuid back to zero): the file is clean for other tools. */
  async seal(): Promise<void> {
    if (!this.file.writable || !this.session) return;
    await this.commitMetadata();
    await this.writeHeaders({ ...this.header, logGuid: NULL_GUID });
    this.session = false;
  }

  async close(): Promise<void> {
    try {
      await this.seal();
    } finally {
      await this.file.close();
    }
  }

  async *presentRanges(): AsyncIterable<[number, number]> {
    for (let block = 0; block < this.geometry.payloadBlocks; block++) {
      const idx = this.entryIndex(block);
      const state = this.state(idx);
      const base = block * this.blockSize;
      const len = Math.min(this.blockSize, this.size - base);
      if (state === PayloadBlockState.FULLY_PRESENT || (state === PayloadBlockState.ZERO && this.diff)) {
        yield [base, len];
      } else if (state === PayloadBlockState.PARTIALLY_PRESENT) {
        const sectors = Math.ceil(len / this.sectorSize);
        const get = await this.bits(block, 0, sectors);
        const runs: [number, number][] = [];
        forEachRun(get, 0, sectors, (s, count, present) => {
          if (present) runs.push([base + s * this.sectorSize, Math.min(count * this.sectorSize, len - s * this.sectorSize)]);
        });
        yield* runs;
      }
    }
  }

  info(): LayerInfo {
    let allocated = 0;
    for (let b = 0; b < this.geometry.payloadBlocks; b++) {
      const s = this.state(this.entryIndex(b));
      if (s === PayloadBlockState.FULLY_PRESENT || s === PayloadBlockState.PARTIALLY_PRESENT) allocated++;
    }
    return {
      path: this.path, format: 'vhdx', type: this.type, size: this.size, blockSize: this.blockSize, fileSize: this.file.size,
      allocatedBlocks: allocated, totalBlocks: this.geometry.payloadBlocks, identity: this.identity,
    };
  }

  stats(): Record<string, unknown> {
    return { bytesRead: this.file.bytesRead, bytesWritten: this.file.bytesWritten, syncs: this.file.syncs };
  }
}

/** Lays the replayed log over bytes read at `offset`: zeroed ranges first, then sector after-images. */
function patch(out: Uint8Array, offset: number, replay: LogReplay): void {
  const end = offset + out.length;
  for (const z of replay.zeroRanges) {
    const a = Math.max(z.fileOffset, offset);
    const b = Math.min(z.fileOffset + z.length, end);
    if (a < b) out.fill(0, a - offset, b - offset);
  }
  const first = Math.floor(offset / PAGE) * PAGE;
  for (let p = first; p < end; p += PAGE) {
    const s = replay.sectors.get(p);
    if (!s) continue;
    const a = Math.max(p, offset);
    const b = Math.min(p + PAGE, offset + out.length);
    out.set(s.subarray(a - p, b - p), a - offset);
  }
}

function parentLinkOf(path: string, meta: VhdxMetadata): ParentLink {
  const loc = meta.parentLocator!;
  if (loc.locatorType !== PARENT_LOCATOR_TYPE_VHDX) throw bad(path, `parent locator type ${loc.locatorType} is not the VHDX type`);
  const linkage = parentLocatorValue(loc, ParentLocatorKey.PARENT_LINKAGE);
  if (!linkage) throw bad(path, 'the parent locator has no parent_linkage');
  const ids = [parseParentLinkage(linkage)];
  const linkage2 = parentLocatorValue(loc, ParentLocatorKey.PARENT_LINKAGE2);
  if (linkage2) ids.push(parseGuid(linkage2, 'parent_linkage2'));
  const dir = dirname(path);
  const candidates: ParentLink['candidates'] = [];
  for (const key of [ParentLocatorKey.RELATIVE_PATH, ParentLocatorKey.VOLUME_PATH, ParentLocatorKey.ABSOLUTE_WIN32_PATH]) {
    const value = parentLocatorValue(loc, key);
    if (!value) continue;
    for (const p of windowsPathCandidates(value, dir, key === ParentLocatorKey.RELATIVE_PATH)) candidates.push({ path: p, source: `${key} "${value}"` });
  }
  if (!candidates.length) throw bad(path, 'the parent locator names no path (relative_path, volume_path or absolute_win32_path)');
  return { ids, candidates };
}

// ─── Creating files ──────────────────────────────────────────────────────────────────────────────

export interface CreateVhdxOptions {
  size: number;
  blockSize?: number;
  logicalSectorSize?: number;
  physicalSectorSize?: number;
  /** A differencing child: the parent's path and its DataWriteGuid. */
  parent?: { path: string; dataWriteGuid: Guid };
}

const LOG_OFFSET = MiB;
const LOG_LENGTH = MiB;
const BAT_OFFSET = 2 * MiB;

/** Writes a new, empty dynamic or differencing VHDX (log 1 MiB at 1 MiB, BAT at 2 MiB, metadata after it). */
export function vhdxFileBytes(path: string, options: CreateVhdxOptions): { pieces: { offset: number; data: Uint8Array }[]; size: number } {
  const L = options.logicalSectorSize ?? 512;
  const blockSize = options.blockSize ?? (options.parent ? 2 * MiB : 32 * MiB);
  const g = batGeometry({ virtualSize: options.size, blockSize, logicalSectorSize: L, differencing: !!options.parent });
  const metaOffset = BAT_OFFSET + g.regionLength;
  const metaLength = MiB;
  const end = metaOffset + metaLength;
  const out = new Uint8Array(VHDX_HEADER_SECTION_SIZE);
  out.set(encodeFileIdentifier({ creator: 'vdiskfs' }), 0);
  const guid = randomGuid();
  const h = freshHeader({ sequenceNumber: 1n, fileWriteGuid: guid, dataWriteGuid: randomGuid(), logOffset: LOG_OFFSET, logLength: LOG_LENGTH });
  out.set(encodeHeader(h), HEADER1_OFFSET);
  out.set(encodeHeader({ ...h, sequenceNumber: 2n }), HEADER2_OFFSET);
  const rt = encodeRegionTable([
    { guid: REGION_GUID_BAT, fileOffset: BAT_OFFSET, length: g.regionLength, required: true },
    { guid: REGION_GUID_METADATA, fileOffset: metaOffset, length: metaLength, required: true },
  ]);
  out.set(rt, REGION_TABLE1_OFFSET);
  out.set(rt, REGION_TABLE2_OFFSET);
  // Metadata region: table, then items from 64 KiB.
  const items: { e: Omit<VhdxMetadataEntry, 'offset' | 'length'>; data: Uint8Array }[] = [
    { e: { itemId: KNOWN_METADATA_ITEMS.fileParameters.guid, isUser: false, isVirtualDisk: false, isRequired: true }, data: encodeFileParameters({ blockSize, leaveBlockAllocated: false, hasParent: !!options.parent }) },
    { e: { itemId: KNOWN_METADATA_ITEMS.virtualDiskSize.guid, isUser: false, isVirtualDisk: true, isRequired: true }, data: encodeVirtualDiskSize(options.size) },
    { e: { itemId: KNOWN_METADATA_ITEMS.virtualDiskId.guid, isUser: false, isVirtualDisk: true, isRequired: true }, data: encodeVirtualDiskId(randomGuid()) },
    { e: { itemId: KNOWN_METADATA_ITEMS.logicalSectorSize.guid, isUser: false, isVirtualDisk: true, isRequired: true }, data: encodeSectorSize(L) },
    { e: { itemId: KNOWN_METADATA_ITEMS.physicalSectorSize.guid, isUser: false, isVirtualDisk: true, isRequired: true }, data: encodeSectorSize(options.physicalSectorSize ?? 4096) },
  ];
  if (options.parent) {
    let rel = relative(dirname(path), options.parent.path).split(sep).join('\\');
    if (!rel.startsWith('..')) rel = `.\\${rel}`;
    items.push({
      e: { itemId: KNOWN_METADATA_ITEMS.parentLocator.guid, isUser: false, isVirtualDisk: false, isRequired: true },
      data: encodeParentLocator({
        locatorType: PARENT_LOCATOR_TYPE_VHDX,
        entries: [
          // Lower case: libvhdi 20210425 reads only lower-case GUIDs here.
          { key: ParentLocatorKey.PARENT_LINKAGE, value: bracedGuid(options.parent.dataWriteGuid) },
          { key: ParentLocatorKey.RELATIVE_PATH, value: rel },
          // libvhdi 20210425 reads only this key (then keeps the name after the last '\\'). There is
          // no drive letter on this machine: the absolute POSIX path with '\\' separators.
          { key: ParentLocatorKey.ABSOLUTE_WIN32_PATH, value: resolve(options.parent.path).split(sep).join('\\') },
        ],
      }),
    });
  }
  const meta = new Uint8Array(metaLength);
  let at = 64 * 1024;
  const entries: VhdxMetadataEntry[] = [];
  for (const { e, data } of items) {
    entries.push({ ...e, offset: at, length: data.length });
    meta.set(data, at);
    at += Math.ceil(data.length / 8) * 8;
  }
  meta.set(encodeMetadataTable(entries), 0);
  // The log, the BAT and the unused parts stay holes (zeros): an empty log, every block NOT_PRESENT.
  const pieces = [{ offset: 0, data: out }, { offset: metaOffset, data: meta }];
  let size = end;
  if (options.parent) {
    // Every chunk gets its (all-zero, sparse) sector-bitmap block up front: libvhdi 20210425 reads
    // the bits of a NOT_PRESENT block from its chunk's SB block even when that is absent (taking
    // file offset 0, the "vhdxfile" signature, as the bitmap) and so returns garbage.
    const bat = new Uint8Array(Math.ceil((g.entries * 8) / 4096) * 4096);
    for (let chunk = 0; chunk < g.sectorBitmapBlocks; chunk++) {
      encodeBatEntry(bat, sectorBitmapBatIndex(chunk, g.chunkRatio) * 8, { state: SectorBitmapState.PRESENT, fileOffset: size });
      size += SECTOR_BITMAP_BLOCK_SIZE;
    }
    pieces.push({ offset: BAT_OFFSET, data: bat });
  }
  return { pieces, size };
}
