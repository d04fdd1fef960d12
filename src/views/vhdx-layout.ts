/**
 * The layout of a synthetic VHDX (spec digest §1.9, the "fixed-looking dynamic" VHDX): pure
 * computation, no I/O. Given the disk size, block size and identities, it says where everything is
 * and generates the bytes of the metadata area [0, dataStart) for any range on demand.
 *
 *   0x000000  header section (1 MiB): file identifier, header 1 (seq 1), header 2 (seq 2),
 *             region table ×2 (BAT, metadata; Required = 1)
 *   0x100000  log, 1 MiB of zeros (LogGuid = 0: nothing to replay)
 *   0x200000  BAT: every payload entry FULLY_PRESENT at dataStart + i·B, sector-bitmap entries 0
 *   after it  metadata region (1 MiB): table + File Parameters (dynamic), Virtual Disk Size,
 *             Virtual Disk ID, Logical Sector Size (512), Physical Sector Size
 *   dataStart payload: block i at dataStart + i·B; the file ends at dataStart + N·B, covering the
 *             whole last block even when the disk size is not a multiple of B
 *
 * Dynamic rather than fixed, because libvhdi reads a "fixed" BAT without the sector-bitmap
 * interleave (wrong data past the first chunk); QEMU and libvhdi both read this layout correctly.
 * The BAT is never materialized: entry i is computed when its bytes are read, so a 64 TiB disk
 * costs nothing to describe and building it never touches the payload.
 */
import { MiB, TiB, viewOf } from '../formats/bytes.js';
import type { Guid } from '../formats/guid.js';
import {
  BAT_ENTRY_SIZE, HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIZE, KNOWN_METADATA_ITEMS, METADATA_ITEMS_MIN_OFFSET,
  PayloadBlockState, REGION_GUID_BAT, REGION_GUID_METADATA, REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET, REGION_TABLE_SIZE,
  HEADER_SECTION_RESERVED_OFFSET, batGeometry, blockOfBatIndex, encodeFileIdentifier, encodeFileParameters, encodeHeader,
  encodeMetadataTable, encodeRegionTable, encodeSectorSize, encodeVirtualDiskId, encodeVirtualDiskSize, freshHeader,
  isSectorBitmapIndex, type BatGeometry, type VhdxMetadataEntry,
} from '../formats/vhdx.js';

export interface VhdxLayoutOptions {
  virtualSize: number;
  /** Default: chosen from the size (defaultVhdxBlockSize). */
  blockSize?: number;
  /** 512 or 4096 (default 4096). The logical sector size is always 512: QEMU accepts nothing else. */
  physicalSectorSize?: number;
  diskId: Guid;
  dataWriteGuid: Guid;
  fileWriteGuid: Guid;
  creator?: string;
}

/**
 * The default block size: about 1/128 of the disk, a power of 2 between 1 MiB and 32 MiB (the
 * Hyper-V default), 64 MiB above 32 TiB as QEMU does. Small disks get small blocks, so the file's
 * padding after the last block stays small; large disks keep the BAT small (2 TiB → 512 KiB).
 */
export function defaultVhdxBlockSize(virtualSize: number): number {
  if (virtualSize > 32 * TiB) return 64 * MiB;
  let b = MiB;
  while (b < 32 * MiB && b * 2 * 128 <= virtualSize) b *= 2;
  return b;
}

export const LOG_OFFSET = MiB;
export const LOG_LENGTH = MiB;
export const BAT_OFFSET = 2 * MiB;
export const METADATA_LENGTH = MiB;

export class VhdxLayout {
  readonly virtualSize: number;
  readonly blockSize: number;
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize: number;
  readonly geometry: BatGeometry;
  readonly logOffset = LOG_OFFSET;
  readonly logLength = LOG_LENGTH;
  readonly batOffset = BAT_OFFSET;
  readonly batLength: number;
  readonly metadataOffset: number;
  readonly metadataLength = METADATA_LENGTH;
  /** Where block 0 starts; everything before it is generated. */
  readonly dataStart: number;
  /** The file's exact size: dataStart + N·B. */
  readonly fileSize: number;
  /** Bytes [0, headerSection.length) of the file, precomputed (320 KiB). */
  private readonly headerSection: Uint8Array;
  /** The metadata table and items, from metadataOffset (64 KiB + 40 bytes). */
  private readonly metadataBytes: Uint8Array;
  /** Metadata table entries (for tests and docs). */
  readonly metadataEntries: VhdxMetadataEntry[];

  constructor(readonly options: VhdxLayoutOptions) {
    this.virtualSize = options.virtualSize;
    this.blockSize = options.blockSize ?? defaultVhdxBlockSize(options.virtualSize);
    this.physicalSectorSize = options.physicalSectorSize ?? 4096;
    // Validates size, block size and sector size (throws a clear VdiskError).
    this.geometry = batGeometry({ virtualSize: this.virtualSize, blockSize: this.blockSize, logicalSectorSize: this.logicalSectorSize });
    encodeSectorSize(this.physicalSectorSize);
    this.batLength = this.geometry.regionLength;
    this.metadataOffset = this.batOffset + this.batLength;
    this.dataStart = this.metadataOffset + this.metadataLength;
    this.fileSize = this.dataStart + this.geometry.payloadBlocks * this.blockSize;

    const hs = new Uint8Array(HEADER_SECTION_RESERVED_OFFSET);
    hs.set(encodeFileIdentifier({ creator: options.creator ?? 'vdiskfs' }), 0);
    const header = (sequenceNumber: bigint) =>
      encodeHeader(freshHeader({ sequenceNumber, fileWriteGuid: options.fileWriteGuid, dataWriteGuid: options.dataWriteGuid, logOffset: this.logOffset, logLength: this.logLength }));
    // Two distinct sequence numbers: two valid headers with equal numbers must be identical (QEMU).
    hs.set(header(1n), HEADER1_OFFSET);
    hs.set(header(2n), HEADER2_OFFSET);
    const regions = encodeRegionTable([
      { guid: REGION_GUID_BAT, fileOffset: this.batOffset, length: this.batLength, required: true },
      { guid: REGION_GUID_METADATA, fileOffset: this.metadataOffset, length: this.metadataLength, required: true },
    ]);
    hs.set(regions, REGION_TABLE1_OFFSET);
    hs.set(regions, REGION_TABLE2_OFFSET);
    this.headerSection = hs;

    const items: [keyof typeof KNOWN_METADATA_ITEMS, Uint8Array][] = [
      ['fileParameters', encodeFileParameters({ blockSize: this.blockSize, leaveBlockAllocated: false, hasParent: false })],
      ['virtualDiskSize', encodeVirtualDiskSize(this.virtualSize)],
      ['virtualDiskId', encodeVirtualDiskId(options.diskId)],
      ['logicalSectorSize', encodeSectorSize(this.logicalSectorSize)],
      ['physicalSectorSize', encodeSectorSize(this.physicalSectorSize)],
    ];
    let at = METADATA_ITEMS_MIN_OFFSET;
    this.metadataEntries = items.map(([name, bytes]) => {
      const k = KNOWN_METADATA_ITEMS[name];
      const e: VhdxMetadataEntry = { itemId: k.guid, offset: at, length: bytes.length, isUser: false, isVirtualDisk: k.isVirtualDisk, isRequired: true };
      at += bytes.length;
      return e;
    });
    const md = new Uint8Array(at);
    md.set(encodeMetadataTable(this.metadataEntries), 0);
    items.forEach(([, bytes], i) => md.set(bytes, this.metadataEntries[i]!.offset));
    this.metadataBytes = md;
  }

  /** The value of BAT entry `index` (as a byte offset | state; 0 for sector-bitmap entries). */
  batEntry(index: number): { state: number; fileOffset: number } {
    const cr = this.geometry.chunkRatio;
    if (index >= this.geometry.entries || isSectorBitmapIndex(index, cr)) return { state: 0, fileOffset: 0 };
    return { state: PayloadBlockState.FULLY_PRESENT, fileOffset: this.dataStart + blockOfBatIndex(index, cr) * this.blockSize };
  }

  /** Ranges of the generated area, by what they hold (for write validation and docs). */
  structures(): { name: string; start: number; length: number; kind: 'identifier' | 'header' | 'fixed' | 'free' }[] {
    return [
      { name: 'file identifier', start: 0, length: 8, kind: 'identifier' },
      { name: 'header 1', start: HEADER1_OFFSET, length: HEADER_SIZE, kind: 'header' },
      { name: 'header 2', start: HEADER2_OFFSET, length: HEADER_SIZE, kind: 'header' },
      { name: 'region table 1', start: REGION_TABLE1_OFFSET, length: REGION_TABLE_SIZE, kind: 'fixed' },
      { name: 'region table 2', start: REGION_TABLE2_OFFSET, length: REGION_TABLE_SIZE, kind: 'fixed' },
      { name: 'log', start: this.logOffset, length: this.logLength, kind: 'free' },
      { name: 'BAT', start: this.batOffset, length: this.geometry.entries * BAT_ENTRY_SIZE, kind: 'fixed' },
      { name: 'metadata', start: this.metadataOffset, length: this.metadataBytes.length, kind: 'fixed' },
    ];
  }

  /** Fills `dest` with the generated bytes at `offset` (the range lies inside [0, dataStart)). */
  generate(dest: Uint8Array, offset: number): void {
    dest.fill(0);
    const end = offset + dest.length;
    copyIntersection(dest, offset, this.headerSection, 0);
    copyIntersection(dest, offset, this.metadataBytes, this.metadataOffset);
    const batEnd = this.batOffset + this.geometry.entries * BAT_ENTRY_SIZE;
    const from = Math.max(offset, this.batOffset);
    const to = Math.min(end, batEnd);
    if (from >= to) return;
    const v = viewOf(dest);
    const entry = new Uint8Array(BAT_ENTRY_SIZE);
    const ev = viewOf(entry);
    for (let i = Math.floor((from - this.batOffset) / BAT_ENTRY_SIZE); this.batOffset + i * BAT_ENTRY_SIZE < to; i++) {
      const e = this.batEntry(i);
      if (e.state === 0) continue;
      const lo = ((e.fileOffset % 0x100000000) | e.state) >>> 0;
      const hi = Math.floor(e.fileOffset / 0x100000000);
      const at = this.batOffset + i * BAT_ENTRY_SIZE - offset;
      if (at >= 0 && at + BAT_ENTRY_SIZE <= dest.length) {
        v.setUint32(at, lo, true);
        v.setUint32(at + 4, hi, true);
      } else {
        // An entry cut by the range's edge: encode it whole, copy the visible part.
        ev.setUint32(0, lo, true);
        ev.setUint32(4, hi, true);
        const a = Math.max(0, -at);
        const z = Math.min(BAT_ENTRY_SIZE, dest.length - at);
        dest.set(entry.subarray(a, z), at + a);
      }
    }
  }

  /** The parameters that determine every generated byte (the overlay's fingerprint). */
  describe(): Record<string, unknown> {
    return {
      format: 'vhdx', version: 1, virtualSize: this.virtualSize, blockSize: this.blockSize,
      logicalSectorSize: this.logicalSectorSize, physicalSectorSize: this.physicalSectorSize,
      dataStart: this.dataStart, batOffset: this.batOffset, metadataOffset: this.metadataOffset,
      diskId: this.options.diskId, dataWriteGuid: this.options.dataWriteGuid,
    };
  }
}

/** Copies the part of `src` (placed at file offset `srcStart`) that falls in dest's range. */
function copyIntersection(dest: Uint8Array, destStart: number, src: Uint8Array, srcStart: number): void {
  const a = Math.max(destStart, srcStart);
  const z = Math.min(destStart + dest.length, srcStart + src.length);
  if (a < z) dest.set(src.subarray(a - srcStart, z - srcStart), a - destStart);
}
