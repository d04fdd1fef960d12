/**
 * A VHD file (fixed, dynamic or differencing) as one chain layer: reader and writer.
 *
 * Structures come from src/formats/vhd.ts. Crash-safe write order (docs/chains.md):
 *   write:  a new block is placed after the last block the BAT knows (never over live data); the
 *           file is extended, a zero bitmap is written over the old trailing footer, then the data.
 *           The BAT entry and bitmap bits change only in memory.
 *   flush:  fsync (data durable) → write dirty bitmaps, dirty BAT sectors, the footer at the new
 *           end → fsync.
 * Until the second step lands, the new data is unreachable (BAT says unallocated, or the bit is
 * clear), so a crash at any byte leaves each sector either old or new. While a block was appended
 * but the trailing footer not yet rewritten, the copy of the footer at offset 0 is used.
 */
import { dirname } from 'node:path';
import { VdiskError } from '../../errors.js';
import {
  VHD_BAT_UNUSED, VHD_DEFAULT_BLOCK_SIZE, VHD_DYNAMIC_HEADER_SIZE, VHD_FOOTER_SIZE, VhdDiskType, VhdPlatformCode,
  checkVhdFooter, decodeLocatorPath, decodeVhdBat, decodeVhdDynamicHeader, decodeVhdFooter, encodeVhdBat,
  encodeVhdFooter, validateVhdSize, vhdBatSize, vhdBitmapGet, vhdBitmapSetRange, vhdBlockBitmapSize,
  type VhdDynamicHeader, type VhdFooter,
} from '../../formats/vhd.js';
import { LayerFile, SECTOR, forEachRun, isZeroData, readMixedBlock, type Layer, type LayerInfo, type ParentLink, type ReadBelow } from './layer.js';
import { windowsPathCandidates } from './parent-resolver.js';

const bad = (path: string, what: string) => new VdiskError('EINVAL', `${path}: ${what}`);

export class VhdImage implements Layer {
  readonly format = 'vhd' as const;
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  readonly size: number;
  readonly blockSize: number;
  readonly sectorSize = SECTOR;
  /**
   * 4 KiB = one bitmap byte: libvhdi 20210425 decodes VHD bitmaps as `byte >> (7 - bit)` without
   * masking, so a clear bit after a set bit in the same byte reads as "present" (file data, not the
   * parent). Writing whole bitmap bytes (widened with the chain's current bytes) keeps every byte
   * 0x00 or 0xFF, which every reader agrees on. Reading stays sector-exact.
   */
  readonly writeGranularity = 8 * SECTOR;
  readonly identity: string;
  readonly parent?: ParentLink;
  private readonly bitmapSize: number;
  private readonly bitmaps = new Map<number, Uint8Array | Promise<Uint8Array>>();
  private readonly dirtyBitmaps = new Set<number>();
  private readonly dirtyBatSectors = new Set<number>();
  private nextFree: number;
  private footerDirty = false;
  /** Nothing is ever written to a file (not even a footer repair) until the disk itself is written. */
  private written = false;

  private constructor(
    private readonly file: LayerFile,
    private readonly footer: VhdFooter,
    private readonly header: VhdDynamicHeader | undefined,
    private readonly bat: Uint32Array,
    footerAtEofOk: boolean,
    parent: ParentLink | undefined,
  ) {
    this.parent = parent;
    this.size = footer.currentSize;
    this.identity = footer.uniqueId;
    this.type = footer.diskType === VhdDiskType.FIXED ? 'fixed' : footer.diskType === VhdDiskType.DYNAMIC ? 'dynamic' : 'differencing';
    this.blockSize = header?.blockSize ?? VHD_DEFAULT_BLOCK_SIZE;
    this.bitmapSize = header ? vhdBlockBitmapSize(header.blockSize) : 0;
    this.nextFree = 0;
    if (header) {
      let end = 0;
      for (const x of ownExtents(footer, header)) end = Math.max(end, x.at + x.length);
      for (let b = 0; b < bat.length; b++) {
        if (bat[b] !== VHD_BAT_UNUSED) end = Math.max(end, bat[b]! * SECTOR + this.bitmapSize + this.blockSize);
      }
      this.nextFree = Math.ceil(end / SECTOR) * SECTOR;
      // The trailing footer is missing or not at the end the BAT implies: rewrite it at the next flush.
      this.footerDirty = !footerAtEofOk || file.size !== this.nextFree + VHD_FOOTER_SIZE;
    }
  }

  get path(): string {
    return this.file.path;
  }

  get writable(): boolean {
    return this.file.writable;
  }

  static async open(path: string, options: { writable: boolean }): Promise<VhdImage> {
    const file = await LayerFile.open(path, options.writable);
    try {
      return await VhdImage.load(file);
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  private static async load(file: LayerFile): Promise<VhdImage> {
    const path = file.path;
    if (file.size < VHD_FOOTER_SIZE) throw bad(path, `only ${file.size} bytes: too short to be a VHD (truncated?)`);
    const tail = await file.readBytes(file.size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE);
    let problem = checkVhdFooter(tail);
    let footer: VhdFooter;
    let footerAtEofOk = true;
    if (!problem) {
      footer = decodeVhdFooter(tail);
    } else {
      // A dynamic disk keeps a copy at offset 0; a write interrupted before the trailing footer
      // was rewritten leaves only that copy valid.
      const head = await file.readBytes(0, VHD_FOOTER_SIZE);
      const headProblem = checkVhdFooter(head);
      if (headProblem) {
        if (problem.startsWith('cookie')) problem = 'no VHD footer ("conectix") at the end of the file or at its start: not a VHD, or truncated';
        throw bad(path, `VHD footer: ${problem}`);
      }
      footer = decodeVhdFooter(head);
      if (footer.diskType === VhdDiskType.FIXED) throw bad(path, `VHD footer at the end: ${problem}`);
      footerAtEofOk = false;
    }
    validateVhdSize(footer.currentSize);
    if (footer.diskType === VhdDiskType.FIXED) {
      if (file.size < footer.currentSize + VHD_FOOTER_SIZE) throw bad(path, `fixed VHD of ${footer.currentSize} bytes but the file has only ${file.size} (truncated)`);
      return new VhdImage(file, footer, undefined, new Uint32Array(0), true, undefined);
    }
    if (footer.dataOffset === undefined) throw bad(path, 'dynamic VHD without a dynamic header offset');
    if (footer.dataOffset + VHD_DYNAMIC_HEADER_SIZE > file.size) throw bad(path, 'the dynamic header lies past the end of the file (truncated)');
    const header = decodeVhdDynamicHeader(await file.readBytes(footer.dataOffset, VHD_DYNAMIC_HEADER_SIZE));
    const blocks = Math.ceil(footer.currentSize / header.blockSize);
    if (header.maxTableEntries < blocks) throw bad(path, `the BAT has ${header.maxTableEntries} entries but the disk needs ${blocks}`);
    if (header.tableOffset + header.maxTableEntries * 4 > file.size) throw bad(path, 'the BAT lies past the end of the file (truncated)');
    const bat = decodeVhdBat(await file.readBytes(header.tableOffset, header.maxTableEntries * 4), header.maxTableEntries);
    const bitmapSize = vhdBlockBitmapSize(header.blockSize);
    // A block may overlap none of the file's own structures, and a locator must lie inside the file.
    const structures = ownExtents(footer, header);
    for (const x of structures) {
      if (x.locator && (x.at < VHD_FOOTER_SIZE || x.at + x.length > file.size)) {
        throw bad(path, `${x.what} lies at ${x.at}+${x.length}, outside the file of ${file.size} bytes (corrupt)`);
      }
    }
    for (let b = 0; b < bat.length; b++) {
      const e = bat[b]!;
      if (e === VHD_BAT_UNUSED) continue;
      const start = e * SECTOR;
      if (start + bitmapSize + header.blockSize > file.size) {
        throw bad(path, `block ${b} (BAT entry ${e}) lies past the end of the file at ${file.size} bytes (truncated file)`);
      }
      for (const x of structures) {
        if (start < x.at + x.length && x.at < start + bitmapSize + header.blockSize) throw bad(path, `block ${b} (BAT entry ${e}) overlaps ${x.what} at ${x.at}+${x.length} (corrupt)`);
      }
    }
    const parent = footer.diskType === VhdDiskType.DIFFERENCING ? await parentLinkOf(file, header) : undefined;
    return new VhdImage(file, footer, header, bat, footerAtEofOk, parent);
  }

  info(): LayerInfo {
    let allocated = 0;
    for (let b = 0; b < this.bat.length; b++) if (this.bat[b] !== VHD_BAT_UNUSED) allocated++;
    const total = this.header ? Math.ceil(this.size / this.blockSize) : 1;
    return {
      path: this.path, format: 'vhd', type: this.type, size: this.size, blockSize: this.blockSize,
      fileSize: this.file.size, allocatedBlocks: this.header ? allocated : total, totalBlocks: total, identity: this.identity,
    };
  }

  private bitmap(block: number): Uint8Array | Promise<Uint8Array> {
    let bm = this.bitmaps.get(block);
    if (!bm) {
      const p = this.file.readBytes(this.bat[block]! * SECTOR, this.bitmapSize);
      this.bitmaps.set(block, p);
      p.then((b) => this.bitmaps.get(block) === p && this.bitmaps.set(block, b), () => this.bitmaps.delete(block));
      bm = p;
    }
    return bm;
  }

  async read(dest: Uint8Array, offset: number, below: ReadBelow): Promise<void> {
    if (!this.header) return this.file.read(dest, offset);
    const diff = this.type === 'differencing';
    const pending: Promise<void>[] = [];
    let pos = offset;
    const end = offset + dest.length;
    while (pos < end) {
      const block = Math.floor(pos / this.blockSize);
      const blockStart = block * this.blockSize;
      const n = Math.min(end, blockStart + this.blockSize) - pos;
      const at = pos - offset;
      const entry = this.bat[block]!;
      if (entry === VHD_BAT_UNUSED) {
        if (diff) pending.push(below(dest.subarray(at, at + n), pos));
        else dest.fill(0, at, at + n);
      } else {
        const bmOrP = this.bitmap(block);
        const bm = bmOrP instanceof Uint8Array ? bmOrP : await bmOrP;
        const dataBase = entry * SECTOR + this.bitmapSize;
        pending.push(
          readMixedBlock(dest.subarray(at, at + n), pos, pos - blockStart, (s) => vhdBitmapGet(bm, s), SECTOR, (b, o) => this.file.read(b, dataBase + o), diff ? below : undefined),
        );
      }
      pos += n;
    }
    await Promise.all(pending);
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    if (!this.file.writable) throw new VdiskError('EROFS', `${this.path} is open read-only`);
    if (!this.header) return this.file.write(src, offset);
    this.written = true;
    let pos = offset;
    const end = offset + src.length;
    while (pos < end) {
      const block = Math.floor(pos / this.blockSize);
      const blockStart = block * this.blockSize;
      const n = Math.min(end, blockStart + this.blockSize) - pos;
      const at = pos - offset;
      let bm: Uint8Array;
      if (this.bat[block] === VHD_BAT_UNUSED && this.type === 'dynamic' && isZeroData(src.subarray(at, at + n))) {
        // An unallocated block of a dynamic disk reads as zeros already (a child must write them: they hide the parent).
        pos += n;
        continue;
      }
      if (this.bat[block] === VHD_BAT_UNUSED) {
        // Append after the last block: extend the file (a hole reads as zeros), put a zero bitmap
        // over what may be the old trailing footer, and only then expose the block in memory.
        const where = this.nextFree;
        // A BAT entry is a 32-bit sector number: past that, an entry would wrap onto the headers.
        if (where / SECTOR >= VHD_BAT_UNUSED) throw new VdiskError('ENOSPC', `${this.path}: the VHD cannot address a block at ${where} bytes (its BAT holds 32-bit sector numbers)`);
        this.nextFree += this.bitmapSize + this.blockSize;
        await this.file.truncate(Math.max(this.file.size, this.nextFree));
        bm = new Uint8Array(this.bitmapSize);
        await this.file.write(bm, where);
        this.bat[block] = where / SECTOR;
        this.bitmaps.set(block, bm);
        this.dirtyBatSectors.add(Math.floor((block * 4) / SECTOR));
        this.footerDirty = true;
      } else {
        const b = this.bitmap(block);
        bm = b instanceof Uint8Array ? b : await b;
      }
      const inBlock = pos - blockStart;
      await this.file.write(src.subarray(at, at + n), this.bat[block]! * SECTOR + this.bitmapSize + inBlock);
      // Bits only after the data is written, so a concurrent read never sees a set bit over stale data.
      const s0 = inBlock / SECTOR;
      const count = n / SECTOR;
      let changed = false;
      for (let s = s0; s < s0 + count; s++) if (!vhdBitmapGet(bm, s)) { changed = true; break; }
      if (changed) {
        vhdBitmapSetRange(bm, s0, count, true);
        this.dirtyBitmaps.add(block);
      }
      pos += n;
    }
  }

  async flush(): Promise<void> {
    if (!this.file.writable) return;
    if (!this.written || (!this.dirtyBitmaps.size && !this.dirtyBatSectors.size && !this.footerDirty)) return this.file.sync();
    await this.file.sync(); // data first
    for (const block of this.dirtyBitmaps) {
      const bm = await this.bitmap(block);
      await this.file.write(bm, this.bat[block]! * SECTOR);
    }
    this.dirtyBitmaps.clear();
    if (this.dirtyBatSectors.size) {
      const encoded = encodeVhdBat(this.bat);
      for (const sector of [...this.dirtyBatSectors].sort((a, b) => a - b)) {
        await this.file.write(encoded.subarray(sector * SECTOR, (sector + 1) * SECTOR), this.header!.tableOffset + sector * SECTOR);
      }
      this.dirtyBatSectors.clear();
    }
    if (this.footerDirty) {
      const footer = encodeVhdFooter(this.footer);
      await this.file.write(footer, this.nextFree);
      if (this.file.size > this.nextFree + VHD_FOOTER_SIZE) await this.file.truncate(this.nextFree + VHD_FOOTER_SIZE);
      // The copy at offset 0 is only rewritten if it was damaged (it never changes otherwise).
      const head = await this.file.readBytes(0, VHD_FOOTER_SIZE);
      if (checkVhdFooter(head)) await this.file.write(footer, 0);
      this.footerDirty = false;
    }
    await this.file.sync();
  }

  seal(): Promise<void> {
    return this.flush();
  }

  async close(): Promise<void> {
    try {
      if (this.file.writable) await this.flush();
    } finally {
      await this.file.close();
    }
  }

  async *presentRanges(): AsyncIterable<[number, number]> {
    if (!this.header) {
      yield [0, this.size];
      return;
    }
    for (let block = 0; block < Math.ceil(this.size / this.blockSize); block++) {
      if (this.bat[block] === VHD_BAT_UNUSED) continue;
      const bm = await this.bitmap(block);
      const base = block * this.blockSize;
      const sectors = Math.ceil(Math.min(this.blockSize, this.size - base) / SECTOR);
      const runs: [number, number][] = [];
      forEachRun((s) => vhdBitmapGet(bm, s), 0, sectors, (s, count, present) => {
        if (present) runs.push([base + s * SECTOR, Math.min(count * SECTOR, this.size - base - s * SECTOR)]);
      });
      yield* runs;
    }
  }

  stats(): Record<string, unknown> {
    return { bytesRead: this.file.bytesRead, bytesWritten: this.file.bytesWritten, syncs: this.file.syncs };
  }
}

/**
 * The extents a dynamic or differencing VHD's own structures occupy: the
 * footer copy, the dynamic header, the BAT and (differencing only: nowhere else do they hold data)
 * each used parent locator's reserved space.
 */
interface Extent {
  what: string;
  at: number;
  length: number;
  locator?: true;
}

function ownExtents(footer: VhdFooter, header: VhdDynamicHeader): Extent[] {
  const extents: Extent[] = [
    { what: 'the footer copy', at: 0, length: VHD_FOOTER_SIZE },
    { what: 'the dynamic header', at: footer.dataOffset!, length: VHD_DYNAMIC_HEADER_SIZE },
    { what: 'the BAT', at: header.tableOffset, length: vhdBatSize(header.maxTableEntries) },
  ];
  if (footer.diskType !== VhdDiskType.DIFFERENCING) return extents;
  header.parentLocators.forEach((l, i) => {
    if (!l.platformCode) return;
    const what = `parent locator ${i} (platform code ${l.platformCode.toString(16)})`;
    extents.push({ what, at: l.platformDataOffset, length: Math.max(l.platformDataSpace, l.platformDataLength), locator: true });
  });
  return extents;
}

/** Reads the parent locators of a differencing VHD and turns them into local paths to try (W2ru, W2ku, MacX, then Parent Unicode Name). */
async function parentLinkOf(file: LayerFile, h: VhdDynamicHeader): Promise<ParentLink> {
  const dir = dirname(file.path);
  const candidates: ParentLink['candidates'] = [];
  const order = [VhdPlatformCode.W2RU, VhdPlatformCode.W2KU, VhdPlatformCode.MACX, VhdPlatformCode.WI2R, VhdPlatformCode.WI2K];
  for (const code of order) {
    for (const l of h.parentLocators) {
      if (l.platformCode !== code || l.platformDataLength === 0) continue;
      // load() has checked that the locator lies inside the file.
      if (l.platformDataLength > 65536) throw bad(file.path, `parent locator ${code.toString(16)} holds ${l.platformDataLength} bytes: longer than any path (corrupt)`);
      const text = decodeLocatorPath(code, await file.readBytes(l.platformDataOffset, l.platformDataLength));
      if (!text) continue;
      const name = code === VhdPlatformCode.W2RU ? 'W2ru' : code === VhdPlatformCode.W2KU ? 'W2ku' : code === VhdPlatformCode.MACX ? 'MacX' : 'Wi2r/Wi2k';
      const value = code === VhdPlatformCode.MACX ? text.replace(/^file:\/\/(localhost)?/, '') : text;
      for (const path of windowsPathCandidates(value, dir, code === VhdPlatformCode.W2RU || code === VhdPlatformCode.WI2R)) {
        candidates.push({ path, source: `${name} locator "${text}"` });
      }
    }
  }
  if (h.parentUnicodeName) {
    for (const path of windowsPathCandidates(h.parentUnicodeName, dir, false)) candidates.push({ path, source: `parent name "${h.parentUnicodeName}"` });
  }
  return { ids: [h.parentUniqueId], candidates };
}
