/**
 * VHD (Microsoft Virtual Hard Disk Image Format 1.0): every on-disk structure, pure encode/decode,
 * no I/O. Integers are big-endian, sectors are 512 bytes, UUIDs are in RFC 4122 byte order,
 * timestamps count seconds since 2000-01-01 UTC, and the footer and dynamic header carry a
 * one's-complement byte-sum checksum. Facts: /work/shared/specs/vhdx-vhd.md §3.
 *
 * Fixed disk:    data [0, size) | footer (512)
 * Dynamic/diff:  footer copy (512) | dynamic header (1024) | BAT | blocks (bitmap + data)… | footer
 */
import { VdiskError } from '../errors.js';
import {
  GiB, assertSize, decodeUtf16BE, encodeUtf16BE, hasSignature, isPowerOfTwo, readAscii, readU64BE,
  requireLength, viewOf, writeAscii, writeLatin1, writeU64BE,
} from './bytes.js';
import { readUuidBE, writeUuidBE, type Guid } from './guid.js';

const fail = (message: string) => new VdiskError('EINVAL', message);

export const VHD_SECTOR_SIZE = 512;
/** QEMU's limit (0xFF000000 sectors), which is also the spec's 2040 GiB. */
export const VHD_MAX_SIZE = 2040 * GiB;
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC). */
export const VHD_EPOCH_OFFSET = 946684800;

// ─── Checksum ────────────────────────────────────────────────────────────────────────────────────

/** One's complement of the 32-bit sum of every byte, with the 4-byte checksum field read as zero. */
export function vhdChecksum(structure: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < structure.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum += structure[i]!;
  }
  return ~sum >>> 0;
}

// ─── Timestamps ──────────────────────────────────────────────────────────────────────────────────

export function vhdTimestamp(date: Date): number {
  return Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH_OFFSET) >>> 0;
}

export function dateFromVhdTimestamp(ts: number): Date {
  return new Date((ts + VHD_EPOCH_OFFSET) * 1000);
}

// ─── CHS geometry (spec appendix) ────────────────────────────────────────────────────────────────

export interface ChsGeometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** The spec's CHS algorithm for a disk of `size` bytes; saturates at 65535/16/255 (~127 GiB). */
export function chsGeometry(size: number): ChsGeometry {
  const totalSectors = Math.min(Math.floor(size / VHD_SECTOR_SIZE), 65535 * 16 * 255);
  let spt: number;
  let heads: number;
  let cth: number;
  if (totalSectors >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(totalSectors / spt);
  } else {
    spt = 17;
    cth = Math.floor(totalSectors / spt);
    heads = Math.max(4, Math.ceil(cth / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

export const chsSize = (g: ChsGeometry): number => g.cylinders * g.heads * g.sectorsPerTrack * VHD_SECTOR_SIZE;

// ─── Footer (§3.2) ───────────────────────────────────────────────────────────────────────────────

export const VHD_FOOTER_SIZE = 512;
export const VHD_FOOTER_COOKIE = 'conectix';
export const FooterField = {
  cookie: 0, // "conectix"
  features: 8, // 0x2 (reserved bit always set); bit 0 = temporary
  fileFormatVersion: 12, // 0x00010000
  dataOffset: 16, // fixed: all ones; dynamic/differencing: offset of the dynamic header
  timestamp: 24, // creation, VHD epoch seconds
  creatorApplication: 28, // 4 ASCII bytes
  creatorVersion: 32, // major<<16 | minor
  creatorHostOs: 36, // "Wi2k" or "Mac "
  originalSize: 40, // u64
  currentSize: 48, // u64: the virtual size
  cylinders: 56, // u16
  heads: 58, // u8
  sectorsPerTrack: 59, // u8
  diskType: 60, // u32
  checksum: 64, // u32
  uniqueId: 68, // 16 bytes, RFC 4122 order
  savedState: 84, // u8
  reserved: 85, // 427 bytes of zeros
} as const;
assertSize('VHD footer', FooterField.reserved + 427, VHD_FOOTER_SIZE);

export const VhdDiskType = { NONE: 0, FIXED: 2, DYNAMIC: 3, DIFFERENCING: 4 } as const;
export const VHD_FEATURES_RESERVED = 0x2;
export const VHD_FEATURES_TEMPORARY = 0x1;
export const VHD_VERSION = 0x00010000;
export const VHD_HOST_OS_WINDOWS = 0x5769326b; // "Wi2k"
export const VHD_HOST_OS_MAC = 0x4d616320; // "Mac "
/** Creators for which QEMU 7.2 trusts Current Size rather than the CHS product. */
export const VHD_EXACT_SIZE_CREATORS = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'] as const;

export interface VhdFooter {
  features: number;
  fileFormatVersion: number;
  /** Offset of the dynamic header, or undefined for a fixed disk (stored as all ones). */
  dataOffset: number | undefined;
  timestamp: number;
  /** 4 ASCII characters, e.g. "win ", "qemu", "vpc ". */
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: number;
  originalSize: number;
  currentSize: number;
  geometry: ChsGeometry;
  diskType: number;
  uniqueId: Guid;
  savedState: boolean;
}

export function encodeVhdFooter(f: VhdFooter): Uint8Array {
  const out = new Uint8Array(VHD_FOOTER_SIZE);
  const v = viewOf(out);
  writeAscii(out, FooterField.cookie, VHD_FOOTER_COOKIE);
  v.setUint32(FooterField.features, f.features, false);
  v.setUint32(FooterField.fileFormatVersion, f.fileFormatVersion, false);
  if (f.dataOffset === undefined) {
    v.setUint32(FooterField.dataOffset, 0xffffffff, false);
    v.setUint32(FooterField.dataOffset + 4, 0xffffffff, false);
  } else {
    writeU64BE(out, FooterField.dataOffset, f.dataOffset);
  }
  v.setUint32(FooterField.timestamp, f.timestamp, false);
  if (f.creatorApplication.length !== 4) throw new RangeError(`creator application must be 4 characters: ${JSON.stringify(f.creatorApplication)}`);
  // Written back byte for byte as read (readAscii maps each byte to one code unit): a tool that put
  // a non-ASCII byte there must not make the disk unwritable.
  writeLatin1(out, FooterField.creatorApplication, f.creatorApplication);
  v.setUint32(FooterField.creatorVersion, f.creatorVersion, false);
  v.setUint32(FooterField.creatorHostOs, f.creatorHostOs, false);
  writeU64BE(out, FooterField.originalSize, f.originalSize);
  writeU64BE(out, FooterField.currentSize, f.currentSize);
  v.setUint16(FooterField.cylinders, f.geometry.cylinders, false);
  v.setUint8(FooterField.heads, f.geometry.heads);
  v.setUint8(FooterField.sectorsPerTrack, f.geometry.sectorsPerTrack);
  v.setUint32(FooterField.diskType, f.diskType, false);
  writeUuidBE(out, FooterField.uniqueId, f.uniqueId);
  v.setUint8(FooterField.savedState, f.savedState ? 1 : 0);
  v.setUint32(FooterField.checksum, vhdChecksum(out, FooterField.checksum), false);
  return out;
}

export function isVhdFooter(bytes: Uint8Array): boolean {
  return hasSignature(bytes, FooterField.cookie, VHD_FOOTER_COOKIE);
}

/** Why a footer is not valid (cookie, version, checksum, disk type), or undefined. */
export function checkVhdFooter(bytes: Uint8Array): string | undefined {
  if (bytes.length < VHD_FOOTER_SIZE) return `a footer needs ${VHD_FOOTER_SIZE} bytes`;
  const b = bytes.subarray(0, VHD_FOOTER_SIZE);
  const v = viewOf(b);
  if (!isVhdFooter(b)) return 'cookie is not "conectix"';
  const version = v.getUint32(FooterField.fileFormatVersion, false);
  if (version !== VHD_VERSION) return `file format version 0x${version.toString(16)}, expected 0x00010000`;
  const checksum = v.getUint32(FooterField.checksum, false);
  if (checksum !== vhdChecksum(b, FooterField.checksum)) return `checksum 0x${checksum.toString(16)} does not match the contents`;
  const type = v.getUint32(FooterField.diskType, false);
  if (type !== VhdDiskType.FIXED && type !== VhdDiskType.DYNAMIC && type !== VhdDiskType.DIFFERENCING) return `disk type ${type} is not fixed (2), dynamic (3) or differencing (4)`;
  return undefined;
}

/** Decodes a footer; with `verify` (the default) it must pass checkVhdFooter. */
export function decodeVhdFooter(bytes: Uint8Array, options: { verify?: boolean } = {}): VhdFooter {
  requireLength(bytes, VHD_FOOTER_SIZE, 'VHD footer');
  const b = bytes.subarray(0, VHD_FOOTER_SIZE);
  if (options.verify !== false) {
    const problem = checkVhdFooter(b);
    if (problem) throw fail(`VHD footer: ${problem}`);
  } else if (!isVhdFooter(b)) {
    throw fail('VHD footer: cookie is not "conectix"');
  }
  const v = viewOf(b);
  const hi = v.getUint32(FooterField.dataOffset, false);
  const lo = v.getUint32(FooterField.dataOffset + 4, false);
  // All ones means "none"; the spec's prose says 0xFFFFFFFF, so accept a 32-bit all-ones too.
  const none = lo === 0xffffffff && (hi === 0xffffffff || hi === 0);
  return {
    features: v.getUint32(FooterField.features, false),
    fileFormatVersion: v.getUint32(FooterField.fileFormatVersion, false),
    dataOffset: none ? undefined : readU64BE(b, FooterField.dataOffset, 'VHD data offset'),
    timestamp: v.getUint32(FooterField.timestamp, false),
    creatorApplication: readAscii(b, FooterField.creatorApplication, 4),
    creatorVersion: v.getUint32(FooterField.creatorVersion, false),
    creatorHostOs: v.getUint32(FooterField.creatorHostOs, false),
    originalSize: readU64BE(b, FooterField.originalSize, 'VHD original size'),
    currentSize: readU64BE(b, FooterField.currentSize, 'VHD current size'),
    geometry: {
      cylinders: v.getUint16(FooterField.cylinders, false),
      heads: v.getUint8(FooterField.heads),
      sectorsPerTrack: v.getUint8(FooterField.sectorsPerTrack),
    },
    diskType: v.getUint32(FooterField.diskType, false),
    uniqueId: readUuidBE(b, FooterField.uniqueId),
    savedState: v.getUint8(FooterField.savedState) !== 0,
  };
}

/**
 * A new footer as Hyper-V writes one: creator "win " (so QEMU trusts Current Size), host "Wi2k",
 * spec CHS. Fixed disks have no data offset; dynamic and differencing disks point at the dynamic
 * header, 512 by default (right after the footer copy at offset 0).
 */
export function newVhdFooter(options: {
  size: number;
  uniqueId: Guid;
  diskType: number;
  timestamp?: number;
  creatorApplication?: string;
  dynamicHeaderOffset?: number;
}): VhdFooter {
  validateVhdSize(options.size);
  const fixed = options.diskType === VhdDiskType.FIXED;
  if (!fixed && options.diskType !== VhdDiskType.DYNAMIC && options.diskType !== VhdDiskType.DIFFERENCING) {
    throw new RangeError(`VHD disk type ${options.diskType}`);
  }
  return {
    features: VHD_FEATURES_RESERVED,
    fileFormatVersion: VHD_VERSION,
    dataOffset: fixed ? undefined : (options.dynamicHeaderOffset ?? VHD_FOOTER_SIZE),
    timestamp: options.timestamp ?? 0,
    creatorApplication: options.creatorApplication ?? 'win ',
    creatorVersion: 0x000a0000,
    creatorHostOs: VHD_HOST_OS_WINDOWS,
    originalSize: options.size,
    currentSize: options.size,
    geometry: chsGeometry(options.size),
    diskType: options.diskType,
    uniqueId: options.uniqueId,
    savedState: false,
  };
}

/** A footer for a fixed disk of `size` bytes (creator "win ", exact size). */
export function fixedVhdFooter(options: { size: number; uniqueId: Guid; timestamp?: number; creatorApplication?: string }): VhdFooter {
  return newVhdFooter({ ...options, diskType: VhdDiskType.FIXED });
}

/** Throws a clear error unless a VHD can describe a disk of `size` bytes. */
export function validateVhdSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) throw fail(`a VHD disk size must be a positive number of bytes, got ${size}`);
  if (size % VHD_SECTOR_SIZE !== 0) throw fail(`a VHD disk size must be a multiple of 512 bytes; ${size} is not`);
  if (size > VHD_MAX_SIZE) throw new VdiskError('EFBIG', `a VHD can describe at most 2040 GiB; this disk is ${size} bytes`);
}

// ─── Dynamic disk header (§3.4) ──────────────────────────────────────────────────────────────────

export const VHD_DYNAMIC_HEADER_SIZE = 1024;
export const VHD_DYNAMIC_HEADER_COOKIE = 'cxsparse';
export const VHD_DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
export const VHD_PARENT_LOCATOR_COUNT = 8;
export const VHD_PARENT_LOCATOR_ENTRY_SIZE = 24;
export const VHD_PARENT_NAME_BYTES = 512;
export const DynamicHeaderField = {
  cookie: 0, // "cxsparse"
  dataOffset: 8, // all ones (unused)
  tableOffset: 16, // u64: absolute offset of the BAT
  headerVersion: 24, // 0x00010000
  maxTableEntries: 28, // u32
  blockSize: 32, // u32: data bytes per block (without the bitmap)
  checksum: 36,
  parentUniqueId: 40, // 16 bytes, RFC order (differencing)
  parentTimestamp: 56, // u32, VHD epoch seconds
  reserved1: 60,
  parentUnicodeName: 64, // 512 bytes UTF-16BE, NUL-padded
  parentLocators: 576, // 8 × 24
  reserved2: 768, // 256 bytes
} as const;
export const ParentLocatorEntryField = { platformCode: 0, platformDataSpace: 4, platformDataLength: 8, reserved: 12, platformDataOffset: 16 } as const;
assertSize('VHD parent locator entry', ParentLocatorEntryField.platformDataOffset + 8, VHD_PARENT_LOCATOR_ENTRY_SIZE);
assertSize('VHD dynamic header', DynamicHeaderField.reserved2 + 256, VHD_DYNAMIC_HEADER_SIZE);
assertSize('VHD parent locators', DynamicHeaderField.parentLocators + VHD_PARENT_LOCATOR_COUNT * VHD_PARENT_LOCATOR_ENTRY_SIZE, DynamicHeaderField.reserved2);
assertSize('VHD parent name', DynamicHeaderField.parentUnicodeName + VHD_PARENT_NAME_BYTES, DynamicHeaderField.parentLocators);

/** Parent locator platform codes (big-endian u32 of 4 ASCII characters). */
export const VhdPlatformCode = {
  NONE: 0,
  WI2R: 0x57693272, // "Wi2r": deprecated, relative, single-byte charset
  WI2K: 0x5769326b, // "Wi2k": deprecated, absolute, single-byte charset
  W2RU: 0x57327275, // "W2ru": relative path, UTF-16LE in practice
  W2KU: 0x57326b75, // "W2ku": absolute path, UTF-16LE in practice
  MAC: 0x4d616320, // "Mac ": alias blob
  MACX: 0x4d616358, // "MacX": file:// URL, UTF-8
} as const;

export interface VhdParentLocatorEntry {
  platformCode: number;
  /** Space reserved for the data. The spec says sectors; Virtual PC and Hyper-V store bytes. */
  platformDataSpace: number;
  platformDataLength: number;
  /** Absolute file offset of the locator data. */
  platformDataOffset: number;
}

export interface VhdDynamicHeader {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  parentUniqueId: Guid;
  parentTimestamp: number;
  parentUnicodeName: string;
  /** Always 8 entries; unused ones have platformCode 0. */
  parentLocators: VhdParentLocatorEntry[];
}

const EMPTY_LOCATOR: VhdParentLocatorEntry = { platformCode: 0, platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 };

export function encodeVhdDynamicHeader(h: VhdDynamicHeader): Uint8Array {
  const out = new Uint8Array(VHD_DYNAMIC_HEADER_SIZE);
  const v = viewOf(out);
  writeAscii(out, DynamicHeaderField.cookie, VHD_DYNAMIC_HEADER_COOKIE);
  v.setUint32(DynamicHeaderField.dataOffset, 0xffffffff, false);
  v.setUint32(DynamicHeaderField.dataOffset + 4, 0xffffffff, false);
  writeU64BE(out, DynamicHeaderField.tableOffset, h.tableOffset);
  v.setUint32(DynamicHeaderField.headerVersion, h.headerVersion, false);
  v.setUint32(DynamicHeaderField.maxTableEntries, h.maxTableEntries, false);
  v.setUint32(DynamicHeaderField.blockSize, h.blockSize, false);
  writeUuidBE(out, DynamicHeaderField.parentUniqueId, h.parentUniqueId);
  v.setUint32(DynamicHeaderField.parentTimestamp, h.parentTimestamp, false);
  const name = encodeUtf16BE(h.parentUnicodeName);
  if (name.length > VHD_PARENT_NAME_BYTES) throw fail(`VHD parent name is longer than ${VHD_PARENT_NAME_BYTES / 2} characters`);
  out.set(name, DynamicHeaderField.parentUnicodeName);
  if (h.parentLocators.length > VHD_PARENT_LOCATOR_COUNT) throw fail('a VHD holds at most 8 parent locators');
  for (let i = 0; i < VHD_PARENT_LOCATOR_COUNT; i++) {
    const l = h.parentLocators[i] ?? EMPTY_LOCATOR;
    const at = DynamicHeaderField.parentLocators + i * VHD_PARENT_LOCATOR_ENTRY_SIZE;
    v.setUint32(at + ParentLocatorEntryField.platformCode, l.platformCode, false);
    v.setUint32(at + ParentLocatorEntryField.platformDataSpace, l.platformDataSpace, false);
    v.setUint32(at + ParentLocatorEntryField.platformDataLength, l.platformDataLength, false);
    writeU64BE(out, at + ParentLocatorEntryField.platformDataOffset, l.platformDataOffset);
  }
  v.setUint32(DynamicHeaderField.checksum, vhdChecksum(out, DynamicHeaderField.checksum), false);
  return out;
}

/** Decodes a dynamic header; `verifyChecksum` (default true) also checks its checksum. */
export function decodeVhdDynamicHeader(bytes: Uint8Array, options: { verifyChecksum?: boolean } = {}): VhdDynamicHeader {
  requireLength(bytes, VHD_DYNAMIC_HEADER_SIZE, 'VHD dynamic header');
  const b = bytes.subarray(0, VHD_DYNAMIC_HEADER_SIZE);
  const v = viewOf(b);
  if (!hasSignature(b, DynamicHeaderField.cookie, VHD_DYNAMIC_HEADER_COOKIE)) throw fail('VHD dynamic header: cookie is not "cxsparse"');
  const headerVersion = v.getUint32(DynamicHeaderField.headerVersion, false);
  if (headerVersion !== VHD_VERSION) throw fail(`VHD dynamic header: version 0x${headerVersion.toString(16)}, expected 0x00010000`);
  if (options.verifyChecksum !== false) {
    const checksum = v.getUint32(DynamicHeaderField.checksum, false);
    if (checksum !== vhdChecksum(b, DynamicHeaderField.checksum)) throw fail(`VHD dynamic header: checksum 0x${checksum.toString(16)} does not match the contents`);
  }
  const blockSize = v.getUint32(DynamicHeaderField.blockSize, false);
  if (!isPowerOfTwo(blockSize) || blockSize < VHD_SECTOR_SIZE) throw fail(`VHD block size ${blockSize} is not a power of 2 of at least 512`);
  const parentLocators: VhdParentLocatorEntry[] = [];
  for (let i = 0; i < VHD_PARENT_LOCATOR_COUNT; i++) {
    const at = DynamicHeaderField.parentLocators + i * VHD_PARENT_LOCATOR_ENTRY_SIZE;
    parentLocators.push({
      platformCode: v.getUint32(at + ParentLocatorEntryField.platformCode, false),
      platformDataSpace: v.getUint32(at + ParentLocatorEntryField.platformDataSpace, false),
      platformDataLength: v.getUint32(at + ParentLocatorEntryField.platformDataLength, false),
      platformDataOffset: readU64BE(b, at + ParentLocatorEntryField.platformDataOffset, 'VHD parent locator offset'),
    });
  }
  return {
    tableOffset: readU64BE(b, DynamicHeaderField.tableOffset, 'VHD table offset'),
    headerVersion,
    maxTableEntries: v.getUint32(DynamicHeaderField.maxTableEntries, false),
    blockSize,
    parentUniqueId: readUuidBE(b, DynamicHeaderField.parentUniqueId),
    parentTimestamp: v.getUint32(DynamicHeaderField.parentTimestamp, false),
    parentUnicodeName: decodeUtf16BE(b.subarray(DynamicHeaderField.parentUnicodeName, DynamicHeaderField.parentLocators), true),
    parentLocators,
  };
}

export function platformCodeName(code: number): string {
  return String.fromCharCode((code >>> 24) & 0xff, (code >>> 16) & 0xff, (code >>> 8) & 0xff, code & 0xff);
}

/** Locator data for W2ru/W2ku: the path in UTF-16LE (what VirtualBox and Hyper-V write). */
export const encodeLocatorPath = (path: string): Uint8Array => {
  const out = new Uint8Array(path.length * 2);
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    out[2 * i] = c & 0xff;
    out[2 * i + 1] = c >>> 8;
  }
  return out;
};

/** Decodes locator data by platform code: UTF-16LE for W2ru/W2ku, UTF-8 for MacX, Latin-1 for Wi2r/Wi2k. */
export function decodeLocatorPath(code: number, data: Uint8Array): string | undefined {
  switch (code) {
    case VhdPlatformCode.W2RU:
    case VhdPlatformCode.W2KU: {
      let s = '';
      for (let i = 0; i + 1 < data.length; i += 2) {
        const c = data[i]! | (data[i + 1]! << 8);
        if (c === 0) break;
        s += String.fromCharCode(c);
      }
      return s;
    }
    case VhdPlatformCode.MACX:
      return Buffer.from(data).toString('utf8').replace(/\0+$/, '');
    case VhdPlatformCode.WI2R:
    case VhdPlatformCode.WI2K:
      return Buffer.from(data).toString('latin1').replace(/\0+$/, '');
    default:
      return undefined;
  }
}

// ─── BAT and blocks (§3.5) ───────────────────────────────────────────────────────────────────────

/** A BAT entry for a block that is not allocated. */
export const VHD_BAT_UNUSED = 0xffffffff;

/** The BAT's size on disk: 4 bytes per entry, padded to a multiple of 512 (with 0xFF). */
export const vhdBatSize = (entries: number): number => Math.ceil((entries * 4) / VHD_SECTOR_SIZE) * VHD_SECTOR_SIZE;

/** Entries are sector numbers (× 512 = byte offset of the block's bitmap), big-endian. */
export function decodeVhdBat(bytes: Uint8Array, entries: number): Uint32Array {
  requireLength(bytes, entries * 4, 'VHD BAT');
  const v = viewOf(bytes);
  const out = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) out[i] = v.getUint32(i * 4, false);
  return out;
}

export function encodeVhdBat(entries: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(vhdBatSize(entries.length)).fill(0xff);
  const v = viewOf(out);
  for (let i = 0; i < entries.length; i++) v.setUint32(i * 4, entries[i]!, false);
  return out;
}

/** The per-block sector bitmap's size: one bit per sector, rounded up to 512 bytes. */
export const vhdBlockBitmapSize = (blockSize: number): number =>
  Math.ceil(Math.ceil(blockSize / VHD_SECTOR_SIZE / 8) / VHD_SECTOR_SIZE) * VHD_SECTOR_SIZE;

/** The byte offset in the file of sector `sector` of a block whose BAT entry is `batEntry`. */
export const vhdSectorOffset = (batEntry: number, blockSize: number, sector: number): number =>
  batEntry * VHD_SECTOR_SIZE + vhdBlockBitmapSize(blockSize) + sector * VHD_SECTOR_SIZE;

/** VHD bitmaps are MSB-first: sector s is bit 0x80 >> (s & 7) of byte s >> 3. */
export function vhdBitmapGet(bitmap: Uint8Array, sector: number): boolean {
  return (bitmap[sector >>> 3]! & (0x80 >>> (sector & 7))) !== 0;
}

export function vhdBitmapSet(bitmap: Uint8Array, sector: number, present: boolean): void {
  if (present) bitmap[sector >>> 3]! |= 0x80 >>> (sector & 7);
  else bitmap[sector >>> 3]! &= ~(0x80 >>> (sector & 7));
}

/** Sets or clears the bits of sectors [first, first + count) (MSB-first). */
export function vhdBitmapSetRange(bitmap: Uint8Array, first: number, count: number, present: boolean): void {
  let s = first;
  const end = first + count;
  while (s < end && s & 7) vhdBitmapSet(bitmap, s++, present);
  const fullBytes = Math.floor((end - s) / 8);
  bitmap.fill(present ? 0xff : 0, s >>> 3, (s >>> 3) + fullBytes);
  s += fullBytes * 8;
  while (s < end) vhdBitmapSet(bitmap, s++, present);
}

