/**
 * VHDX (MS-VHDX v2): every on-disk structure, pure encode/decode, no I/O.
 *
 * Each structure has a field table (byte offsets, checked against the structure's size at module
 * load), an interface of decoded values, an encoder that returns fresh bytes (checksums computed)
 * and a decoder that takes the raw bytes and throws VdiskError(EINVAL) with a specific message when
 * they are malformed. Integers are little-endian, GUIDs are in the Microsoft mixed-endian layout
 * (see guid.ts), checksums are CRC-32C with the checksum field zeroed (see crc32c.ts).
 *
 * Facts and test vectors: /work/shared/specs/vhdx-vhd.md §1 (the spec digest); the section numbers
 * below (§1.x) refer to it.
 *
 * File layout (§1.2):  0 file identifier | 64K header 1 | 128K header 2 | 192K region table 1 |
 * 256K region table 2 | 320K–1M reserved | then log, BAT, metadata region and blocks, each on a
 * 1 MiB boundary, anywhere.
 */
import { VdiskError } from '../errors.js';
import {
  KiB, MiB, TiB, assertSize, decodeUtf16LE, encodeUtf16LE, hasSignature, isPowerOfTwo,
  readBigU64LE, readU64LE, requireLength, viewOf, writeAscii, writeBigU64LE, writeU64LE,
} from './bytes.js';
import { crc32cWithZeroedField } from './crc32c.js';
import { NULL_GUID, parseGuid, readGuidLE, writeGuidLE, type Guid } from './guid.js';

const fail = (message: string) => new VdiskError('EINVAL', message);

// ─── Layout constants ───────────────────────────────────────────────────────────────────────────

/** Every object (log, BAT, metadata, payload and sector-bitmap blocks) is aligned to 1 MiB. */
export const VHDX_ALIGNMENT = MiB;
/** The header section: file identifier, two headers, two region tables, reserved. */
export const VHDX_HEADER_SECTION_SIZE = MiB;

export const FILE_IDENTIFIER_OFFSET = 0;
export const FILE_IDENTIFIER_SIZE = 64 * KiB;
export const HEADER1_OFFSET = 0x10000;
export const HEADER2_OFFSET = 0x20000;
/** Each header occupies a 64 KiB slot of which only the first 4 KiB is the structure. */
export const HEADER_SLOT_SIZE = 64 * KiB;
export const HEADER_SIZE = 4 * KiB;
export const REGION_TABLE1_OFFSET = 0x30000;
export const REGION_TABLE2_OFFSET = 0x40000;
export const REGION_TABLE_SIZE = 64 * KiB;
/** Bytes 0x50000–0xFFFFF of the header section are reserved (zeros). */
export const HEADER_SECTION_RESERVED_OFFSET = 0x50000;

export const VHDX_MAX_VIRTUAL_SIZE = 64 * TiB;
export const VHDX_MIN_BLOCK_SIZE = MiB;
export const VHDX_MAX_BLOCK_SIZE = 256 * MiB;
export const VHDX_MAX_TABLE_ENTRIES = 2047;

// ─── Well-known GUIDs (canonical text; written mixed-endian) ─────────────────────────────────────

export const REGION_GUID_BAT: Guid = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const REGION_GUID_METADATA: Guid = '8b7ca206-4790-4b9a-b8fe-575f050f886e';

export const METADATA_GUID_FILE_PARAMETERS: Guid = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
export const METADATA_GUID_VIRTUAL_DISK_SIZE: Guid = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
export const METADATA_GUID_VIRTUAL_DISK_ID: Guid = 'beca12ab-b2e6-4523-93ef-c309e000c746';
export const METADATA_GUID_LOGICAL_SECTOR_SIZE: Guid = '8141bf1d-a96f-4709-ba47-f233a8faab5f';
export const METADATA_GUID_PHYSICAL_SECTOR_SIZE: Guid = 'cda348c7-445d-4471-9cc9-e9885251c556';
export const METADATA_GUID_PARENT_LOCATOR: Guid = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';

/** The only parent locator type defined by the spec: a VHDX parent. */
export const PARENT_LOCATOR_TYPE_VHDX: Guid = 'b04aefb7-d19e-4a81-b789-25b8e9445913';

// ─── File type identifier (§1.2) ─────────────────────────────────────────────────────────────────

export const FILE_IDENTIFIER_SIGNATURE = 'vhdxfile';
export const FileIdentifierField = { signature: 0, creator: 8 } as const;
/** The creator string: UTF-16LE, up to 512 bytes (256 code units), diagnostics only. */
export const FILE_IDENTIFIER_CREATOR_BYTES = 512;
assertSize('file identifier', FileIdentifierField.creator + FILE_IDENTIFIER_CREATOR_BYTES, 520);

export interface VhdxFileIdentifier {
  creator: string;
}

/** The 64 KiB file identifier: "vhdxfile" then the creator (truncated to 256 UTF-16 units). */
export function encodeFileIdentifier(fi: VhdxFileIdentifier): Uint8Array {
  const out = new Uint8Array(FILE_IDENTIFIER_SIZE);
  writeAscii(out, FileIdentifierField.signature, FILE_IDENTIFIER_SIGNATURE);
  const creator = encodeUtf16LE(fi.creator).subarray(0, FILE_IDENTIFIER_CREATOR_BYTES);
  out.set(creator, FileIdentifierField.creator);
  return out;
}

/** True when `bytes` start with "vhdxfile" (the probe every reader uses). */
export function isVhdx(bytes: Uint8Array): boolean {
  return hasSignature(bytes, 0, FILE_IDENTIFIER_SIGNATURE);
}

export function decodeFileIdentifier(bytes: Uint8Array): VhdxFileIdentifier {
  requireLength(bytes, FileIdentifierField.creator + FILE_IDENTIFIER_CREATOR_BYTES, 'VHDX file identifier');
  if (!isVhdx(bytes)) throw fail('not a VHDX file: the first 8 bytes are not "vhdxfile"');
  const creatorBytes = bytes.subarray(FileIdentifierField.creator, FileIdentifierField.creator + FILE_IDENTIFIER_CREATOR_BYTES);
  return { creator: decodeUtf16LE(creatorBytes, true) };
}

// ─── Headers (§1.3) ──────────────────────────────────────────────────────────────────────────────

export const HEADER_SIGNATURE = 'head';
export const HeaderField = {
  signature: 0, // "head"
  checksum: 4, // CRC-32C over the whole 4 KiB, this field zeroed
  sequenceNumber: 8, // u64; the valid header with the higher number is current
  fileWriteGuid: 16, // changed on each open, before the first write of any kind
  dataWriteGuid: 32, // changed before the first user-visible change; children record it as parent identity
  logGuid: 48, // zero: log empty; otherwise only entries with this GUID are valid
  logVersion: 64, // u16, must be 0
  version: 66, // u16, must be 1
  logLength: 68, // u32, multiple of 1 MiB
  logOffset: 72, // u64, multiple of 1 MiB, ≥ 1 MiB
  reserved: 80, // 4016 bytes of zeros
} as const;
/** The bytes of a header that carry fields; QEMU writes exactly these 80 bytes when it updates one. */
export const HEADER_FIELDS_SIZE = HeaderField.reserved;
assertSize('header', HeaderField.reserved + 4016, HEADER_SIZE);

export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: Guid;
  dataWriteGuid: Guid;
  logGuid: Guid;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

/** A 4 KiB header with its checksum. */
export function encodeHeader(h: VhdxHeader): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = viewOf(out);
  writeAscii(out, HeaderField.signature, HEADER_SIGNATURE);
  writeBigU64LE(out, HeaderField.sequenceNumber, h.sequenceNumber);
  writeGuidLE(out, HeaderField.fileWriteGuid, h.fileWriteGuid);
  writeGuidLE(out, HeaderField.dataWriteGuid, h.dataWriteGuid);
  writeGuidLE(out, HeaderField.logGuid, h.logGuid);
  v.setUint16(HeaderField.logVersion, h.logVersion, true);
  v.setUint16(HeaderField.version, h.version, true);
  v.setUint32(HeaderField.logLength, h.logLength, true);
  writeU64LE(out, HeaderField.logOffset, h.logOffset);
  v.setUint32(HeaderField.checksum, crc32cWithZeroedField(out, HeaderField.checksum), true);
  return out;
}

/**
 * Decodes a header without judging it (for diagnostics and for `checkHeader`). Throws only if
 * the buffer is shorter than 4 KiB.
 */
export function decodeHeaderFields(bytes: Uint8Array): VhdxHeader & { signatureOk: boolean; checksum: number; checksumOk: boolean } {
  requireLength(bytes, HEADER_SIZE, 'VHDX header');
  const b = bytes.subarray(0, HEADER_SIZE);
  const v = viewOf(b);
  const checksum = v.getUint32(HeaderField.checksum, true);
  const logOffsetHi = v.getUint32(HeaderField.logOffset + 4, true);
  return {
    signatureOk: hasSignature(b, HeaderField.signature, HEADER_SIGNATURE),
    checksum,
    checksumOk: checksum === crc32cWithZeroedField(b, HeaderField.checksum),
    sequenceNumber: readBigU64LE(b, HeaderField.sequenceNumber),
    fileWriteGuid: readGuidLE(b, HeaderField.fileWriteGuid),
    dataWriteGuid: readGuidLE(b, HeaderField.dataWriteGuid),
    logGuid: readGuidLE(b, HeaderField.logGuid),
    logVersion: v.getUint16(HeaderField.logVersion, true),
    version: v.getUint16(HeaderField.version, true),
    logLength: v.getUint32(HeaderField.logLength, true),
    // An absurd offset is reported by checkHeader rather than thrown here.
    logOffset: logOffsetHi >= 0x200000 ? Number.MAX_SAFE_INTEGER : readU64LE(b, HeaderField.logOffset),
  };
}

/** Why a header is not valid, or undefined if it is (signature, CRC, versions, log placement). */
export function checkHeader(bytes: Uint8Array): string | undefined {
  if (bytes.length < HEADER_SIZE) return `a header needs ${HEADER_SIZE} bytes`;
  const h = decodeHeaderFields(bytes);
  if (!h.signatureOk) return 'signature is not "head"';
  if (!h.checksumOk) return `checksum 0x${h.checksum.toString(16)} does not match the contents`;
  if (h.version !== 1) return `version is ${h.version}, expected 1`;
  if (h.logVersion !== 0) return `log version is ${h.logVersion}, expected 0`;
  if (h.logLength % VHDX_ALIGNMENT !== 0) return `log length ${h.logLength} is not a multiple of 1 MiB`;
  if (h.logOffset % VHDX_ALIGNMENT !== 0 || h.logOffset < VHDX_HEADER_SECTION_SIZE) {
    return `log offset ${h.logOffset} is not a multiple of 1 MiB at or after 1 MiB`;
  }
  return undefined;
}

/** Decodes a header and insists it is valid. */
export function decodeHeader(bytes: Uint8Array, where = 'VHDX header'): VhdxHeader {
  const problem = checkHeader(bytes);
  if (problem) throw fail(`${where}: ${problem}`);
  const { signatureOk: _s, checksum: _c, checksumOk: _k, ...h } = decodeHeaderFields(bytes);
  return h;
}

/**
 * Chooses the current header (§1.3): the only valid one, or the valid one with the higher
 * sequence number. Two valid headers with equal numbers are accepted only when their fields are
 * byte-identical (QEMU's rule); otherwise there is no current header and the file is corrupt.
 */
export function selectCurrentHeader(header1: Uint8Array, header2: Uint8Array): { header: VhdxHeader; index: 1 | 2 } {
  const p1 = checkHeader(header1);
  const p2 = checkHeader(header2);
  if (p1 && p2) throw fail(`no valid VHDX header: header 1 ${p1}; header 2 ${p2}`);
  if (p2) return { header: decodeHeader(header1), index: 1 };
  if (p1) return { header: decodeHeader(header2), index: 2 };
  const h1 = decodeHeader(header1);
  const h2 = decodeHeader(header2);
  if (h1.sequenceNumber > h2.sequenceNumber) return { header: h1, index: 1 };
  if (h2.sequenceNumber > h1.sequenceNumber) return { header: h2, index: 2 };
  for (let i = 0; i < HEADER_FIELDS_SIZE; i++) {
    if (header1[i] !== header2[i]) throw fail('both VHDX headers are valid with the same sequence number but differ');
  }
  return { header: h1, index: 1 };
}

// ─── Region table (§1.4) ─────────────────────────────────────────────────────────────────────────

export const REGION_TABLE_SIGNATURE = 'regi';
export const RegionTableField = { signature: 0, checksum: 4, entryCount: 8, reserved: 12, entries: 16 } as const;
export const REGION_ENTRY_SIZE = 32;
export const RegionEntryField = { guid: 0, fileOffset: 16, length: 24, required: 28 } as const;
assertSize('region table entry', RegionEntryField.required + 4, REGION_ENTRY_SIZE);
assertSize('region table', RegionTableField.entries + VHDX_MAX_TABLE_ENTRIES * REGION_ENTRY_SIZE + 16, REGION_TABLE_SIZE);

export interface VhdxRegionEntry {
  guid: Guid;
  fileOffset: number;
  length: number;
  /** Bit 0: a reader that does not know this region must refuse the file. */
  required: boolean;
}

export function encodeRegionTable(entries: readonly VhdxRegionEntry[]): Uint8Array {
  if (entries.length > VHDX_MAX_TABLE_ENTRIES) throw fail(`a region table holds at most ${VHDX_MAX_TABLE_ENTRIES} entries`);
  const out = new Uint8Array(REGION_TABLE_SIZE);
  const v = viewOf(out);
  writeAscii(out, RegionTableField.signature, REGION_TABLE_SIGNATURE);
  v.setUint32(RegionTableField.entryCount, entries.length, true);
  entries.forEach((e, i) => {
    const at = RegionTableField.entries + i * REGION_ENTRY_SIZE;
    writeGuidLE(out, at + RegionEntryField.guid, e.guid);
    writeU64LE(out, at + RegionEntryField.fileOffset, e.fileOffset);
    v.setUint32(at + RegionEntryField.length, e.length, true);
    v.setUint32(at + RegionEntryField.required, e.required ? 1 : 0, true);
  });
  v.setUint32(RegionTableField.checksum, crc32cWithZeroedField(out, RegionTableField.checksum), true);
  return out;
}

/** Why a region table is not valid, or undefined (signature, CRC, count, alignment, overlaps). */
export function checkRegionTable(bytes: Uint8Array): string | undefined {
  try {
    decodeRegionTable(bytes);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

export function decodeRegionTable(bytes: Uint8Array, where = 'VHDX region table'): VhdxRegionEntry[] {
  requireLength(bytes, REGION_TABLE_SIZE, where);
  const b = bytes.subarray(0, REGION_TABLE_SIZE);
  const v = viewOf(b);
  if (!hasSignature(b, RegionTableField.signature, REGION_TABLE_SIGNATURE)) throw fail(`${where}: signature is not "regi"`);
  const checksum = v.getUint32(RegionTableField.checksum, true);
  if (checksum !== crc32cWithZeroedField(b, RegionTableField.checksum)) {
    throw fail(`${where}: checksum 0x${checksum.toString(16)} does not match the contents`);
  }
  const count = v.getUint32(RegionTableField.entryCount, true);
  if (count > VHDX_MAX_TABLE_ENTRIES) throw fail(`${where}: ${count} entries (at most ${VHDX_MAX_TABLE_ENTRIES})`);
  const entries: VhdxRegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = RegionTableField.entries + i * REGION_ENTRY_SIZE;
    const e: VhdxRegionEntry = {
      guid: readGuidLE(b, at + RegionEntryField.guid),
      fileOffset: readU64LE(b, at + RegionEntryField.fileOffset, `${where}: entry ${i} file offset`),
      length: v.getUint32(at + RegionEntryField.length, true),
      required: (v.getUint32(at + RegionEntryField.required, true) & 1) === 1,
    };
    if (e.fileOffset % VHDX_ALIGNMENT !== 0 || e.fileOffset < VHDX_HEADER_SECTION_SIZE) {
      throw fail(`${where}: region ${e.guid} starts at ${e.fileOffset}, not a multiple of 1 MiB at or after 1 MiB`);
    }
    if (e.length % VHDX_ALIGNMENT !== 0 || e.length === 0) {
      throw fail(`${where}: region ${e.guid} has length ${e.length}, not a positive multiple of 1 MiB`);
    }
    for (const other of entries) {
      if (other.guid === e.guid) throw fail(`${where}: region ${e.guid} appears twice`);
      if (e.fileOffset < other.fileOffset + other.length && other.fileOffset < e.fileOffset + e.length) {
        throw fail(`${where}: regions ${other.guid} and ${e.guid} overlap`);
      }
    }
    entries.push(e);
  }
  return entries;
}

// ─── BAT (§1.6) ──────────────────────────────────────────────────────────────────────────────────

export const BAT_ENTRY_SIZE = 8;
/** Bits 0–2 of a BAT entry. */
export const BAT_STATE_MASK = 0x7;
/** Bits 20–63 hold FileOffsetMB; since offsets are 1 MiB multiples, entry = byteOffset | state. */
export const BAT_FILE_OFFSET_SHIFT = 20;

/** States of a payload block entry. */
export const PayloadBlockState = {
  NOT_PRESENT: 0,
  UNDEFINED: 1,
  ZERO: 2,
  UNMAPPED: 3,
  /** The v0.95 draft's UNMAPPED; QEMU still treats it as unmapped. */
  UNMAPPED_V095: 5,
  FULLY_PRESENT: 6,
  /** Differencing files only: consult the sector bitmap. */
  PARTIALLY_PRESENT: 7,
} as const;

/** States of a sector-bitmap entry (every CR+1-th BAT entry). */
export const SectorBitmapState = { NOT_PRESENT: 0, PRESENT: 6 } as const;

export interface BatEntry {
  state: number;
  /** Byte offset in the file (a multiple of 1 MiB), 0 when the entry has none. */
  fileOffset: number;
}

export function encodeBatEntry(dest: Uint8Array, offset: number, entry: BatEntry): void {
  if (entry.fileOffset % VHDX_ALIGNMENT !== 0) throw new RangeError(`BAT file offset ${entry.fileOffset} is not a multiple of 1 MiB`);
  if (entry.state < 0 || entry.state > BAT_STATE_MASK) throw new RangeError(`BAT state ${entry.state}`);
  const v = viewOf(dest);
  // The low 32 bits: offset bits 20–31 and the state; the offset is a multiple of 2^20.
  v.setUint32(offset, ((entry.fileOffset % 0x100000000) | entry.state) >>> 0, true);
  v.setUint32(offset + 4, Math.floor(entry.fileOffset / 0x100000000), true);
}

export function decodeBatEntry(src: Uint8Array, offset: number): BatEntry {
  const v = viewOf(src);
  const lo = v.getUint32(offset, true);
  const hi = v.getUint32(offset + 4, true);
  if (hi >= 0x200000) throw fail(`VHDX BAT entry at byte ${offset} points past 2^53 bytes`);
  return { state: lo & BAT_STATE_MASK, fileOffset: hi * 0x100000000 + ((lo & 0xfff00000) >>> 0) };
}

/** Geometry of the BAT for one disk (§1.6). */
export interface BatGeometry {
  virtualSize: number;
  blockSize: number;
  logicalSectorSize: number;
  /** Payload blocks per chunk: CR = 2^23 · L / B. One chunk has one sector-bitmap entry after it. */
  chunkRatio: number;
  /** Payload blocks N = ceil(V / B). */
  payloadBlocks: number;
  /** Sector-bitmap blocks S = ceil(N / CR). */
  sectorBitmapBlocks: number;
  /** Entries in the BAT: N + floor((N−1)/CR) for fixed/dynamic, S·(CR+1) for differencing. */
  entries: number;
  /** The BAT region's length: entries × 8 rounded up to 1 MiB. */
  regionLength: number;
}

export function batGeometry(options: { virtualSize: number; blockSize: number; logicalSectorSize: number; differencing?: boolean }): BatGeometry {
  const { virtualSize, blockSize, logicalSectorSize } = options;
  validateDiskParameters(virtualSize, blockSize, logicalSectorSize);
  const chunkRatio = (2 ** 23 * logicalSectorSize) / blockSize;
  const payloadBlocks = Math.ceil(virtualSize / blockSize);
  const sectorBitmapBlocks = Math.ceil(payloadBlocks / chunkRatio);
  const entries = options.differencing
    ? sectorBitmapBlocks * (chunkRatio + 1)
    : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  const regionLength = Math.max(VHDX_ALIGNMENT, Math.ceil((entries * BAT_ENTRY_SIZE) / VHDX_ALIGNMENT) * VHDX_ALIGNMENT);
  return { virtualSize, blockSize, logicalSectorSize, chunkRatio, payloadBlocks, sectorBitmapBlocks, entries, regionLength };
}

/** The BAT index of payload block `block`: block + floor(block / CR). */
export const payloadBatIndex = (block: number, chunkRatio: number): number => block + Math.floor(block / chunkRatio);

/** The BAT index of the sector-bitmap entry of chunk `chunk`: chunk·(CR+1) + CR. */
export const sectorBitmapBatIndex = (chunk: number, chunkRatio: number): number => chunk * (chunkRatio + 1) + chunkRatio;

/** True when BAT index `index` is a sector-bitmap entry rather than a payload entry. */
export const isSectorBitmapIndex = (index: number, chunkRatio: number): boolean => index % (chunkRatio + 1) === chunkRatio;

/** The payload block at BAT index `index` (which must not be a sector-bitmap index). */
export const blockOfBatIndex = (index: number, chunkRatio: number): number => index - Math.floor(index / (chunkRatio + 1));

/** A sector-bitmap block is always 1 MiB: 2^23 bits, one per logical sector of its chunk. */
export const SECTOR_BITMAP_BLOCK_SIZE = MiB;

/**
 * Where payload block `block` finds its bits inside its chunk's sector-bitmap block: block j of
 * the chunk (j = block mod CR) owns the bytes from j·(B/L/8), B/L/8 bytes long.
 */
export function sectorBitmapSlice(block: number, g: Pick<BatGeometry, 'chunkRatio' | 'blockSize' | 'logicalSectorSize'>): { offset: number; length: number } {
  const length = g.blockSize / g.logicalSectorSize / 8;
  return { offset: (block % g.chunkRatio) * length, length };
}

/** Sector-bitmap bits are LSB-first: bit 0 of byte 0 is the chunk's first sector. */
export function sectorBitmapGet(bitmap: Uint8Array, sector: number): boolean {
  return (bitmap[sector >>> 3]! & (1 << (sector & 7))) !== 0;
}

export function sectorBitmapSet(bitmap: Uint8Array, sector: number, present: boolean): void {
  if (present) bitmap[sector >>> 3]! |= 1 << (sector & 7);
  else bitmap[sector >>> 3]! &= ~(1 << (sector & 7));
}

/** Sets or clears the bits of sectors [first, first + count) (LSB-first). */
export function sectorBitmapSetRange(bitmap: Uint8Array, first: number, count: number, present: boolean): void {
  let s = first;
  const end = first + count;
  while (s < end && s & 7) sectorBitmapSet(bitmap, s++, present);
  const fullBytes = Math.floor((end - s) / 8);
  bitmap.fill(present ? 0xff : 0, s >>> 3, (s >>> 3) + fullBytes);
  s += fullBytes * 8;
  while (s < end) sectorBitmapSet(bitmap, s++, present);
}

// ─── Metadata region (§1.7) ──────────────────────────────────────────────────────────────────────

export const METADATA_TABLE_SIGNATURE = 'metadata';
export const METADATA_TABLE_SIZE = 64 * KiB;
/** Items live at offsets ≥ 64 KiB from the start of the metadata region. */
export const METADATA_ITEMS_MIN_OFFSET = 64 * KiB;
export const METADATA_ITEM_MAX_LENGTH = MiB;
export const MetadataTableField = { signature: 0, reserved: 8, entryCount: 10, reserved2: 12, entries: 32 } as const;
export const METADATA_ENTRY_SIZE = 32;
export const MetadataEntryField = { itemId: 0, offset: 16, length: 20, flags: 24, reserved: 28 } as const;
export const MetadataFlag = { IS_USER: 1, IS_VIRTUAL_DISK: 2, IS_REQUIRED: 4 } as const;
assertSize('metadata entry', MetadataEntryField.reserved + 4, METADATA_ENTRY_SIZE);
assertSize('metadata table', MetadataTableField.entries + VHDX_MAX_TABLE_ENTRIES * METADATA_ENTRY_SIZE, METADATA_TABLE_SIZE);

export interface VhdxMetadataEntry {
  itemId: Guid;
  /** Relative to the start of the metadata region; ≥ 64 KiB (or 0 when length is 0). */
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

export function encodeMetadataTable(entries: readonly VhdxMetadataEntry[]): Uint8Array {
  if (entries.length > VHDX_MAX_TABLE_ENTRIES) throw fail(`a metadata table holds at most ${VHDX_MAX_TABLE_ENTRIES} entries`);
  const out = new Uint8Array(METADATA_TABLE_SIZE);
  const v = viewOf(out);
  writeAscii(out, MetadataTableField.signature, METADATA_TABLE_SIGNATURE);
  v.setUint16(MetadataTableField.entryCount, entries.length, true);
  entries.forEach((e, i) => {
    const at = MetadataTableField.entries + i * METADATA_ENTRY_SIZE;
    writeGuidLE(out, at + MetadataEntryField.itemId, e.itemId);
    v.setUint32(at + MetadataEntryField.offset, e.offset, true);
    v.setUint32(at + MetadataEntryField.length, e.length, true);
    const flags = (e.isUser ? MetadataFlag.IS_USER : 0) | (e.isVirtualDisk ? MetadataFlag.IS_VIRTUAL_DISK : 0) | (e.isRequired ? MetadataFlag.IS_REQUIRED : 0);
    v.setUint32(at + MetadataEntryField.flags, flags, true);
  });
  return out;
}

/**
 * Decodes the metadata table. `regionLength` (the metadata region's length from the region
 * table) bounds the items; overlapping items, misplaced items and duplicate ids are refused.
 */
export function decodeMetadataTable(bytes: Uint8Array, regionLength: number, where = 'VHDX metadata table'): VhdxMetadataEntry[] {
  requireLength(bytes, METADATA_TABLE_SIZE, where);
  const v = viewOf(bytes);
  if (!hasSignature(bytes, MetadataTableField.signature, METADATA_TABLE_SIGNATURE)) throw fail(`${where}: signature is not "metadata"`);
  const count = v.getUint16(MetadataTableField.entryCount, true);
  if (count > VHDX_MAX_TABLE_ENTRIES) throw fail(`${where}: ${count} entries (at most ${VHDX_MAX_TABLE_ENTRIES})`);
  const entries: VhdxMetadataEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = MetadataTableField.entries + i * METADATA_ENTRY_SIZE;
    const flags = v.getUint32(at + MetadataEntryField.flags, true);
    const e: VhdxMetadataEntry = {
      itemId: readGuidLE(bytes, at + MetadataEntryField.itemId),
      offset: v.getUint32(at + MetadataEntryField.offset, true),
      length: v.getUint32(at + MetadataEntryField.length, true),
      isUser: (flags & MetadataFlag.IS_USER) !== 0,
      isVirtualDisk: (flags & MetadataFlag.IS_VIRTUAL_DISK) !== 0,
      isRequired: (flags & MetadataFlag.IS_REQUIRED) !== 0,
    };
    if (e.length === 0) {
      if (e.offset !== 0) throw fail(`${where}: item ${e.itemId} has length 0 but offset ${e.offset}`);
    } else {
      if (e.offset < METADATA_ITEMS_MIN_OFFSET) throw fail(`${where}: item ${e.itemId} at offset ${e.offset}, inside the table`);
      if (e.length > METADATA_ITEM_MAX_LENGTH) throw fail(`${where}: item ${e.itemId} is ${e.length} bytes (at most 1 MiB)`);
      if (e.offset + e.length > regionLength) throw fail(`${where}: item ${e.itemId} passes the end of the metadata region`);
    }
    for (const other of entries) {
      if (other.itemId === e.itemId && other.isUser === e.isUser) throw fail(`${where}: item ${e.itemId} appears twice`);
      if (e.length && other.length && e.offset < other.offset + other.length && other.offset < e.offset + e.length) {
        throw fail(`${where}: items ${other.itemId} and ${e.itemId} overlap`);
      }
    }
    entries.push(e);
  }
  return entries;
}

/** The six system items the spec defines, with the flags Hyper-V and QEMU write. */
export const KNOWN_METADATA_ITEMS = {
  fileParameters: { guid: METADATA_GUID_FILE_PARAMETERS, length: 8, isVirtualDisk: false },
  virtualDiskSize: { guid: METADATA_GUID_VIRTUAL_DISK_SIZE, length: 8, isVirtualDisk: true },
  virtualDiskId: { guid: METADATA_GUID_VIRTUAL_DISK_ID, length: 16, isVirtualDisk: true },
  logicalSectorSize: { guid: METADATA_GUID_LOGICAL_SECTOR_SIZE, length: 4, isVirtualDisk: true },
  physicalSectorSize: { guid: METADATA_GUID_PHYSICAL_SECTOR_SIZE, length: 4, isVirtualDisk: true },
  /** Variable length; present exactly when File Parameters has HasParent. */
  parentLocator: { guid: METADATA_GUID_PARENT_LOCATOR, length: 0, isVirtualDisk: false },
} as const;

// File Parameters (8 bytes)
export const FileParametersField = { blockSize: 0, flags: 4 } as const;
export const FileParametersFlag = { LEAVE_BLOCK_ALLOCATED: 1, HAS_PARENT: 2 } as const;
assertSize('file parameters', FileParametersField.flags + 4, KNOWN_METADATA_ITEMS.fileParameters.length);

export interface VhdxFileParameters {
  blockSize: number;
  /** "Fixed": blocks stay allocated. Ignored when hasParent. */
  leaveBlockAllocated: boolean;
  /** Differencing disk: a Parent Locator item must exist. */
  hasParent: boolean;
}

export function encodeFileParameters(p: VhdxFileParameters): Uint8Array {
  const out = new Uint8Array(8);
  const v = viewOf(out);
  v.setUint32(FileParametersField.blockSize, p.blockSize, true);
  v.setUint32(FileParametersField.flags, (p.leaveBlockAllocated ? 1 : 0) | (p.hasParent ? 2 : 0), true);
  return out;
}

export function decodeFileParameters(bytes: Uint8Array): VhdxFileParameters {
  if (bytes.length !== 8) throw fail(`VHDX File Parameters item is ${bytes.length} bytes, expected 8`);
  const v = viewOf(bytes);
  const blockSize = v.getUint32(FileParametersField.blockSize, true);
  const flags = v.getUint32(FileParametersField.flags, true);
  if (!isPowerOfTwo(blockSize) || blockSize < VHDX_MIN_BLOCK_SIZE || blockSize > VHDX_MAX_BLOCK_SIZE) {
    throw fail(`VHDX block size ${blockSize} is not a power of 2 between 1 MiB and 256 MiB`);
  }
  if (flags & ~3) throw fail(`VHDX File Parameters flags 0x${flags.toString(16)} has reserved bits set`);
  return { blockSize, leaveBlockAllocated: (flags & 1) !== 0, hasParent: (flags & 2) !== 0 };
}

export function encodeVirtualDiskSize(size: number): Uint8Array {
  const out = new Uint8Array(8);
  writeU64LE(out, 0, size);
  return out;
}

export function decodeVirtualDiskSize(bytes: Uint8Array): number {
  if (bytes.length !== 8) throw fail(`VHDX Virtual Disk Size item is ${bytes.length} bytes, expected 8`);
  const size = readU64LE(bytes, 0, 'VHDX virtual disk size');
  if (size === 0 || size > VHDX_MAX_VIRTUAL_SIZE) throw fail(`VHDX virtual disk size ${size} is outside 1 byte – 64 TiB`);
  return size;
}

export function encodeVirtualDiskId(id: Guid): Uint8Array {
  const out = new Uint8Array(16);
  writeGuidLE(out, 0, id);
  return out;
}

export function decodeVirtualDiskId(bytes: Uint8Array): Guid {
  if (bytes.length !== 16) throw fail(`VHDX Virtual Disk ID item is ${bytes.length} bytes, expected 16`);
  return readGuidLE(bytes, 0);
}

/** Logical or physical sector size items (4 bytes, 512 or 4096). */
export function encodeSectorSize(size: number): Uint8Array {
  if (size !== 512 && size !== 4096) throw new RangeError(`sector size ${size}`);
  const out = new Uint8Array(4);
  viewOf(out).setUint32(0, size, true);
  return out;
}

export function decodeSectorSize(bytes: Uint8Array, what: 'logical' | 'physical'): number {
  if (bytes.length !== 4) throw fail(`VHDX ${what} sector size item is ${bytes.length} bytes, expected 4`);
  const size = viewOf(bytes).getUint32(0, true);
  if (size !== 512 && size !== 4096) throw fail(`VHDX ${what} sector size is ${size}, expected 512 or 4096`);
  return size;
}

// Parent Locator (§1.7)
export const ParentLocatorField = { locatorType: 0, reserved: 16, keyValueCount: 18, entries: 20 } as const;
export const PARENT_LOCATOR_ENTRY_SIZE = 12;
export const ParentLocatorEntryField = { keyOffset: 0, valueOffset: 4, keyLength: 8, valueLength: 10 } as const;
assertSize('parent locator entry', ParentLocatorEntryField.valueLength + 2, PARENT_LOCATOR_ENTRY_SIZE);

/** Standard parent locator keys. */
export const ParentLocatorKey = {
  PARENT_LINKAGE: 'parent_linkage',
  PARENT_LINKAGE2: 'parent_linkage2',
  RELATIVE_PATH: 'relative_path',
  VOLUME_PATH: 'volume_path',
  ABSOLUTE_WIN32_PATH: 'absolute_win32_path',
} as const;

export interface VhdxParentLocator {
  locatorType: Guid;
  /** Key/value pairs in file order (keys are case-sensitive and unique). */
  entries: { key: string; value: string }[];
}

export function encodeParentLocator(loc: VhdxParentLocator): Uint8Array {
  const keys = new Set<string>();
  for (const { key, value } of loc.entries) {
    if (!key || !value) throw fail('parent locator keys and values must not be empty');
    if (keys.has(key)) throw fail(`parent locator key "${key}" appears twice`);
    keys.add(key);
  }
  const strings = loc.entries.map(({ key, value }) => ({ key: encodeUtf16LE(key), value: encodeUtf16LE(value) }));
  const headerLength = ParentLocatorField.entries + loc.entries.length * PARENT_LOCATOR_ENTRY_SIZE;
  const total = headerLength + strings.reduce((n, s) => n + s.key.length + s.value.length, 0);
  if (total > METADATA_ITEM_MAX_LENGTH) throw fail('parent locator is larger than 1 MiB');
  if (strings.some((s) => s.key.length > 0xffff || s.value.length > 0xffff)) throw fail('a parent locator key or value is longer than 64 KiB');
  const out = new Uint8Array(total);
  const v = viewOf(out);
  writeGuidLE(out, ParentLocatorField.locatorType, loc.locatorType);
  v.setUint16(ParentLocatorField.keyValueCount, loc.entries.length, true);
  let at = headerLength;
  strings.forEach((s, i) => {
    const e = ParentLocatorField.entries + i * PARENT_LOCATOR_ENTRY_SIZE;
    v.setUint32(e + ParentLocatorEntryField.keyOffset, at, true);
    out.set(s.key, at);
    at += s.key.length;
    v.setUint32(e + ParentLocatorEntryField.valueOffset, at, true);
    out.set(s.value, at);
    at += s.value.length;
    v.setUint16(e + ParentLocatorEntryField.keyLength, s.key.length, true);
    v.setUint16(e + ParentLocatorEntryField.valueLength, s.value.length, true);
  });
  return out;
}

export function decodeParentLocator(bytes: Uint8Array): VhdxParentLocator {
  const where = 'VHDX parent locator';
  requireLength(bytes, ParentLocatorField.entries, where);
  const v = viewOf(bytes);
  const count = v.getUint16(ParentLocatorField.keyValueCount, true);
  requireLength(bytes, ParentLocatorField.entries + count * PARENT_LOCATOR_ENTRY_SIZE, where);
  const entries: { key: string; value: string }[] = [];
  const slice = (off: number, len: number, what: string) => {
    if (off === 0 || len === 0 || off + len > bytes.length) throw fail(`${where}: ${what} at ${off}+${len} lies outside the item`);
    return bytes.subarray(off, off + len);
  };
  for (let i = 0; i < count; i++) {
    const e = ParentLocatorField.entries + i * PARENT_LOCATOR_ENTRY_SIZE;
    const key = decodeUtf16LE(slice(v.getUint32(e + ParentLocatorEntryField.keyOffset, true), v.getUint16(e + ParentLocatorEntryField.keyLength, true), `key ${i}`));
    const value = decodeUtf16LE(slice(v.getUint32(e + ParentLocatorEntryField.valueOffset, true), v.getUint16(e + ParentLocatorEntryField.valueLength, true), `value ${i}`));
    if (entries.some((x) => x.key === key)) throw fail(`${where}: key "${key}" appears twice`);
    entries.push({ key, value });
  }
  return { locatorType: readGuidLE(bytes, ParentLocatorField.locatorType), entries };
}

/** Looks up a parent locator key (case-sensitive, as the spec says). */
export function parentLocatorValue(loc: VhdxParentLocator, key: string): string | undefined {
  return loc.entries.find((e) => e.key === key)?.value;
}

/** Parses a parent_linkage value "{guid}" in either case. */
export function parseParentLinkage(value: string): Guid {
  return parseGuid(value, 'parent_linkage');
}

/** Everything the metadata region says, decoded and cross-checked. */
export interface VhdxMetadata {
  fileParameters: VhdxFileParameters;
  virtualDiskSize: number;
  virtualDiskId: Guid;
  logicalSectorSize: number;
  physicalSectorSize: number;
  parentLocator?: VhdxParentLocator;
}

/**
 * Decodes the items of a metadata region given its table entries and a reader for item bytes
 * (relative to the region start). Refuses unknown required items, missing required items, and a
 * HasParent flag without a parent locator.
 */
export function decodeMetadataItems(entries: readonly VhdxMetadataEntry[], item: (offset: number, length: number) => Uint8Array): VhdxMetadata {
  const get = (guid: Guid) => entries.find((e) => e.itemId === guid && !e.isUser);
  for (const e of entries) {
    const known = Object.values(KNOWN_METADATA_ITEMS).some((k) => k.guid === e.itemId);
    if (!known && e.isRequired && !e.isUser) throw fail(`VHDX metadata: unknown required item ${e.itemId}; this file needs a newer reader`);
  }
  const need = (name: keyof typeof KNOWN_METADATA_ITEMS) => {
    const e = get(KNOWN_METADATA_ITEMS[name].guid);
    if (!e) throw fail(`VHDX metadata: the required item ${name} is missing`);
    return item(e.offset, e.length);
  };
  const fileParameters = decodeFileParameters(need('fileParameters'));
  const virtualDiskSize = decodeVirtualDiskSize(need('virtualDiskSize'));
  const logicalSectorSize = decodeSectorSize(need('logicalSectorSize'), 'logical');
  const meta: VhdxMetadata = {
    fileParameters,
    virtualDiskSize,
    virtualDiskId: decodeVirtualDiskId(need('virtualDiskId')),
    logicalSectorSize,
    physicalSectorSize: decodeSectorSize(need('physicalSectorSize'), 'physical'),
  };
  if (virtualDiskSize % logicalSectorSize !== 0) {
    throw fail(`VHDX virtual disk size ${virtualDiskSize} is not a multiple of the logical sector size ${logicalSectorSize}`);
  }
  const loc = get(METADATA_GUID_PARENT_LOCATOR);
  if (fileParameters.hasParent) {
    if (!loc) throw fail('VHDX metadata: a differencing disk (HasParent) without a parent locator');
    meta.parentLocator = decodeParentLocator(item(loc.offset, loc.length));
  }
  return meta;
}

/** Checks the disk parameters a VHDX can express; throws a clear error otherwise. */
export function validateDiskParameters(virtualSize: number, blockSize: number, logicalSectorSize: number): void {
  if (!isPowerOfTwo(blockSize) || blockSize < VHDX_MIN_BLOCK_SIZE || blockSize > VHDX_MAX_BLOCK_SIZE) {
    throw fail(`VHDX block size ${blockSize} is not a power of 2 between 1 MiB and 256 MiB`);
  }
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw fail(`VHDX logical sector size ${logicalSectorSize} is not 512 or 4096`);
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0) throw fail(`VHDX virtual size ${virtualSize} is not a positive size`);
  if (virtualSize > VHDX_MAX_VIRTUAL_SIZE) {
    throw new VdiskError('EFBIG', `a VHDX can describe at most 64 TiB; this disk is ${virtualSize} bytes`);
  }
  if (virtualSize % logicalSectorSize !== 0) {
    throw fail(`a VHDX disk size must be a multiple of its ${logicalSectorSize}-byte sector; ${virtualSize} is not`);
  }
}

// ─── Log (§1.5) ──────────────────────────────────────────────────────────────────────────────────

export const LOG_SECTOR_SIZE = 4 * KiB;
export const LOG_ENTRY_SIGNATURE = 'loge';
export const LOG_ZERO_SIGNATURE = 'zero';
export const LOG_DESC_SIGNATURE = 'desc';
export const LOG_DATA_SIGNATURE = 'data';
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;
export const LogEntryHeaderField = {
  signature: 0, checksum: 4, entryLength: 8, tail: 12, sequenceNumber: 16, descriptorCount: 24,
  reserved: 28, logGuid: 32, flushedFileOffset: 48, lastFileOffset: 56,
} as const;
assertSize('log entry header', LogEntryHeaderField.lastFileOffset + 8, LOG_ENTRY_HEADER_SIZE);
export const ZeroDescriptorField = { signature: 0, reserved: 4, zeroLength: 8, fileOffset: 16, sequenceNumber: 24 } as const;
export const DataDescriptorField = { signature: 0, trailingBytes: 4, leadingBytes: 8, fileOffset: 16, sequenceNumber: 24 } as const;
assertSize('zero descriptor', ZeroDescriptorField.sequenceNumber + 8, LOG_DESCRIPTOR_SIZE);
assertSize('data descriptor', DataDescriptorField.sequenceNumber + 8, LOG_DESCRIPTOR_SIZE);
export const DataSectorField = { signature: 0, sequenceHigh: 4, data: 8, sequenceLow: 4092 } as const;
/** The payload bytes a data sector carries: bytes 8–4091 of the 4 KiB sector it restores. */
export const LOG_DATA_SECTOR_PAYLOAD = DataSectorField.sequenceLow - DataSectorField.data;
assertSize('data sector', DataSectorField.sequenceLow + 4, LOG_SECTOR_SIZE);
/** Descriptors in the first sector of an entry (after the 64-byte header), and in each later one. */
export const LOG_DESCRIPTORS_IN_FIRST_SECTOR = (LOG_SECTOR_SIZE - LOG_ENTRY_HEADER_SIZE) / LOG_DESCRIPTOR_SIZE;
export const LOG_DESCRIPTORS_PER_SECTOR = LOG_SECTOR_SIZE / LOG_DESCRIPTOR_SIZE;

export interface VhdxLogEntryHeader {
  checksum: number;
  entryLength: number;
  tail: number;
  sequenceNumber: bigint;
  descriptorCount: number;
  logGuid: Guid;
  flushedFileOffset: number;
  lastFileOffset: number;
}

/** The number of 4 KiB descriptor sectors an entry with `count` descriptors needs (QEMU's formula). */
export function logDescriptorSectors(count: number): number {
  return Math.ceil((count + 2) / LOG_DESCRIPTORS_PER_SECTOR);
}

/** Decodes the 64-byte header of a log entry (signature checked; the entry CRC is separate). */
export function decodeLogEntryHeader(bytes: Uint8Array): VhdxLogEntryHeader {
  requireLength(bytes, LOG_ENTRY_HEADER_SIZE, 'VHDX log entry header');
  if (!hasSignature(bytes, LogEntryHeaderField.signature, LOG_ENTRY_SIGNATURE)) throw fail('VHDX log entry: signature is not "loge"');
  const v = viewOf(bytes);
  const h: VhdxLogEntryHeader = {
    checksum: v.getUint32(LogEntryHeaderField.checksum, true),
    entryLength: v.getUint32(LogEntryHeaderField.entryLength, true),
    tail: v.getUint32(LogEntryHeaderField.tail, true),
    sequenceNumber: readBigU64LE(bytes, LogEntryHeaderField.sequenceNumber),
    descriptorCount: v.getUint32(LogEntryHeaderField.descriptorCount, true),
    logGuid: readGuidLE(bytes, LogEntryHeaderField.logGuid),
    flushedFileOffset: readU64LE(bytes, LogEntryHeaderField.flushedFileOffset, 'VHDX log FlushedFileOffset'),
    lastFileOffset: readU64LE(bytes, LogEntryHeaderField.lastFileOffset, 'VHDX log LastFileOffset'),
  };
  if (h.entryLength === 0 || h.entryLength % LOG_SECTOR_SIZE !== 0) throw fail(`VHDX log entry length ${h.entryLength} is not a positive multiple of 4 KiB`);
  if (h.tail % LOG_SECTOR_SIZE !== 0) throw fail(`VHDX log entry tail ${h.tail} is not a multiple of 4 KiB`);
  if (h.sequenceNumber === 0n) throw fail('VHDX log entry sequence number is 0');
  if (logDescriptorSectors(h.descriptorCount) * LOG_SECTOR_SIZE > h.entryLength) {
    throw fail(`VHDX log entry: ${h.descriptorCount} descriptors do not fit in ${h.entryLength} bytes`);
  }
  return h;
}

/** True when the CRC over the whole entry (entryLength bytes, checksum field zeroed) matches. */
export function logEntryChecksumOk(entry: Uint8Array): boolean {
  const h = decodeLogEntryHeader(entry);
  if (entry.length < h.entryLength) return false;
  return crc32cWithZeroedField(entry.subarray(0, h.entryLength), LogEntryHeaderField.checksum) === h.checksum;
}

export type VhdxLogDescriptor =
  | { kind: 'zero'; zeroLength: number; fileOffset: number; sequenceNumber: bigint }
  | {
      kind: 'data';
      /** Bytes 4092–4095 of the sector being restored. */
      trailingBytes: Uint8Array;
      /** Bytes 0–7 of the sector being restored. */
      leadingBytes: Uint8Array;
      fileOffset: number;
      sequenceNumber: bigint;
    };

/** The byte offset in an entry of descriptor `index` (descriptors follow the 64-byte header). */
export const logDescriptorOffset = (index: number): number => LOG_ENTRY_HEADER_SIZE + index * LOG_DESCRIPTOR_SIZE;

export function decodeLogDescriptor(bytes: Uint8Array, offset: number): VhdxLogDescriptor {
  requireLength(bytes, offset + LOG_DESCRIPTOR_SIZE, 'VHDX log descriptor');
  const d = bytes.subarray(offset, offset + LOG_DESCRIPTOR_SIZE);
  if (hasSignature(d, 0, LOG_ZERO_SIGNATURE)) {
    const zeroLength = readU64LE(d, ZeroDescriptorField.zeroLength, 'VHDX log ZeroLength');
    const fileOffset = readU64LE(d, ZeroDescriptorField.fileOffset, 'VHDX log FileOffset');
    if (zeroLength % LOG_SECTOR_SIZE || fileOffset % LOG_SECTOR_SIZE) throw fail('VHDX log zero descriptor is not 4 KiB aligned');
    return { kind: 'zero', zeroLength, fileOffset, sequenceNumber: readBigU64LE(d, ZeroDescriptorField.sequenceNumber) };
  }
  if (hasSignature(d, 0, LOG_DESC_SIGNATURE)) {
    const fileOffset = readU64LE(d, DataDescriptorField.fileOffset, 'VHDX log FileOffset');
    if (fileOffset % LOG_SECTOR_SIZE) throw fail('VHDX log data descriptor is not 4 KiB aligned');
    return {
      kind: 'data',
      trailingBytes: d.slice(DataDescriptorField.trailingBytes, DataDescriptorField.trailingBytes + 4),
      leadingBytes: d.slice(DataDescriptorField.leadingBytes, DataDescriptorField.leadingBytes + 8),
      fileOffset,
      sequenceNumber: readBigU64LE(d, DataDescriptorField.sequenceNumber),
    };
  }
  throw fail('VHDX log descriptor: signature is neither "zero" nor "desc"');
}

export function encodeLogDescriptor(dest: Uint8Array, offset: number, d: VhdxLogDescriptor): void {
  const out = dest.subarray(offset, offset + LOG_DESCRIPTOR_SIZE);
  out.fill(0);
  if (d.kind === 'zero') {
    writeAscii(out, 0, LOG_ZERO_SIGNATURE);
    writeU64LE(out, ZeroDescriptorField.zeroLength, d.zeroLength);
    writeU64LE(out, ZeroDescriptorField.fileOffset, d.fileOffset);
    writeBigU64LE(out, ZeroDescriptorField.sequenceNumber, d.sequenceNumber);
  } else {
    writeAscii(out, 0, LOG_DESC_SIGNATURE);
    out.set(d.trailingBytes.subarray(0, 4), DataDescriptorField.trailingBytes);
    out.set(d.leadingBytes.subarray(0, 8), DataDescriptorField.leadingBytes);
    writeU64LE(out, DataDescriptorField.fileOffset, d.fileOffset);
    writeBigU64LE(out, DataDescriptorField.sequenceNumber, d.sequenceNumber);
  }
}

export interface VhdxLogDataSector {
  sequenceHigh: number;
  sequenceLow: number;
  /** The 4084 bytes carried (a view into the input). */
  data: Uint8Array;
}

export function decodeLogDataSector(bytes: Uint8Array): VhdxLogDataSector {
  requireLength(bytes, LOG_SECTOR_SIZE, 'VHDX log data sector');
  if (!hasSignature(bytes, DataSectorField.signature, LOG_DATA_SIGNATURE)) throw fail('VHDX log data sector: signature is not "data"');
  const v = viewOf(bytes);
  return {
    sequenceHigh: v.getUint32(DataSectorField.sequenceHigh, true),
    sequenceLow: v.getUint32(DataSectorField.sequenceLow, true),
    data: bytes.subarray(DataSectorField.data, DataSectorField.sequenceLow),
  };
}

export function encodeLogDataSector(sector: Uint8Array, sequenceNumber: bigint): Uint8Array {
  requireLength(sector, LOG_SECTOR_SIZE, 'sector to log');
  const out = new Uint8Array(LOG_SECTOR_SIZE);
  const v = viewOf(out);
  writeAscii(out, 0, LOG_DATA_SIGNATURE);
  v.setUint32(DataSectorField.sequenceHigh, Number(sequenceNumber >> 32n), true);
  out.set(sector.subarray(DataSectorField.data, DataSectorField.sequenceLow), DataSectorField.data);
  v.setUint32(DataSectorField.sequenceLow, Number(sequenceNumber & 0xffffffffn), true);
  return out;
}

/** The 4 KiB sector a data descriptor and its data sector restore: leading + data + trailing. */
export function restoreLoggedSector(desc: Extract<VhdxLogDescriptor, { kind: 'data' }>, data: VhdxLogDataSector): Uint8Array {
  const out = new Uint8Array(LOG_SECTOR_SIZE);
  out.set(desc.leadingBytes, 0);
  out.set(data.data, DataSectorField.data);
  out.set(desc.trailingBytes, DataSectorField.sequenceLow);
  return out;
}

/** A descriptor's sequence number must equal its entry's; a data sector's halves must too. */
export function logSequenceMatches(entry: bigint, sector: VhdxLogDataSector): boolean {
  return BigInt(sector.sequenceHigh) * 0x100000000n + BigInt(sector.sequenceLow) === entry;
}

/** Encodes a log entry header into the first 64 bytes of `entry` and sets the entry CRC (over entryLength bytes). */
export function encodeLogEntry(entry: Uint8Array, h: Omit<VhdxLogEntryHeader, 'checksum'>): void {
  requireLength(entry, h.entryLength, 'VHDX log entry');
  const v = viewOf(entry);
  writeAscii(entry, LogEntryHeaderField.signature, LOG_ENTRY_SIGNATURE);
  v.setUint32(LogEntryHeaderField.checksum, 0, true);
  v.setUint32(LogEntryHeaderField.entryLength, h.entryLength, true);
  v.setUint32(LogEntryHeaderField.tail, h.tail, true);
  writeBigU64LE(entry, LogEntryHeaderField.sequenceNumber, h.sequenceNumber);
  v.setUint32(LogEntryHeaderField.descriptorCount, h.descriptorCount, true);
  v.setUint32(LogEntryHeaderField.reserved, 0, true);
  writeGuidLE(entry, LogEntryHeaderField.logGuid, h.logGuid);
  writeU64LE(entry, LogEntryHeaderField.flushedFileOffset, h.flushedFileOffset);
  writeU64LE(entry, LogEntryHeaderField.lastFileOffset, h.lastFileOffset);
  v.setUint32(LogEntryHeaderField.checksum, crc32cWithZeroedField(entry.subarray(0, h.entryLength), LogEntryHeaderField.checksum), true);
}

// ─── Convenience ─────────────────────────────────────────────────────────────────────────────────

/** A header with the log empty, for a fresh file. */
export function freshHeader(options: { sequenceNumber: bigint; fileWriteGuid: Guid; dataWriteGuid: Guid; logOffset: number; logLength: number }): VhdxHeader {
  return { ...options, logGuid: NULL_GUID, logVersion: 0, version: 1 };
}
