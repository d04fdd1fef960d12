/**
 * The LBS on-disk format: pure encode/decode, no I/O. docs/lbs-format.md is the prose version of
 * this file; every offset and size here is stated there, and the sizes are asserted below.
 *
 * All integers are little-endian. 64-bit fields are written as JS numbers and must be safe
 * integers (< 2^53), which every quantity here is by construction.
 *
 * Two files:
 * - the data file (untrusted storage): a header block, then `clusterCount` clusters of blocks;
 * - the metadata log (protected mount): a 512-byte header, then entries. An entry starts with an
 *   8-byte prefix {type u8, flags u8, reserved u16, length u32}; `length` covers the whole entry,
 *   so a reader can step over an entry type it does not interpret.
 */
import { createHash } from 'node:crypto';
import { VdiskError } from '../../errors.js';

export const FORMAT_VERSION = 1;

// ---- data file header -------------------------------------------------------------------------

export const DATA_MAGIC = 'VDLBSDAT';
/** Bytes of the data header that carry fields (the rest of the header block is zero). */
export const DATA_HEADER_FIELDS = 128;
/** The header block is at least this big; the first cluster starts at max(this, blockSize). */
export const DATA_HEADER_BLOCK = 4096;

export const DataHeaderOffsets = {
  magic: 0, // 8 ASCII bytes
  version: 8, // u16
  fieldsSize: 10, // u16 = DATA_HEADER_FIELDS
  flags: 12, // u32, 0 (bit 0 reserved: data blocks are encrypted)
  storeId: 16, // 16 bytes, the store's UUID
  blockSize: 32, // u32
  clusterSize: 36, // u32
  clusterCount: 40, // u64
  logicalSize: 48, // u64, bytes of the virtual disk
  dataOffset: 56, // u64, where cluster 0 starts
  createdAt: 64, // u64, ms since the epoch
  reserved: 72, // 52 zero bytes
  headerChecksum: 124, // u32: first 4 bytes (LE) of SHA-256 over bytes [0, 124)
} as const;

export interface Geometry {
  blockSize: number;
  clusterSize: number;
  clusterCount: number;
  logicalSize: number;
  dataOffset: number;
}

export interface DataHeader extends Geometry {
  version: number;
  flags: number;
  storeId: string;
  createdAt: number;
}

// ---- metadata log header ----------------------------------------------------------------------

export const LOG_MAGIC = 'VDLBSLOG';
export const LOG_HEADER_SIZE = 512;

export const LogHeaderOffsets = {
  magic: 0, // 8 ASCII bytes
  version: 8, // u16
  headerSize: 10, // u16 = LOG_HEADER_SIZE (entries start here)
  flags: 12, // u32, 0
  storeId: 16, // 16 bytes: must equal the data file's
  blockSize: 32, // u32   \
  clusterSize: 36, // u32  |  the geometry, repeated: must equal the data file's
  clusterCount: 40, // u64 |
  logicalSize: 48, // u64  |
  dataOffset: 56, // u64  /
  checksum: 64, // u8: ChecksumId of the per-block checksums
  checksumSize: 65, // u8: bytes stored per block checksum (4 in version 1)
  encryption: 66, // u8: 0 = none (reserved for the encryption issue)
  reserved67: 67, // u8
  keyId: 68, // u32: 0 (reserved: which key wraps/derives the data key)
  generation: 72, // u64: 0; bumped each time compaction replaces the log
  createdAt: 80, // u64, ms since the epoch
  kdfSalt: 88, // 32 bytes, zero (reserved: passphrase KDF salt, kept on the protected side)
  reserved: 120, // zero up to 508
  headerChecksum: 508, // u32: first 4 bytes (LE) of SHA-256 over bytes [0, 508)
} as const;

export const enum ChecksumId {
  Fletcher32 = 1,
  Sha256_32 = 2,
}

export interface LogHeader extends Geometry {
  version: number;
  flags: number;
  storeId: string;
  checksum: ChecksumId;
  checksumSize: number;
  encryption: number;
  keyId: number;
  generation: number;
  createdAt: number;
}

// ---- log entries ------------------------------------------------------------------------------

export const ENTRY_PREFIX = 8;
export const enum EntryType {
  Map = 1,
  Barrier = 2,
  // Reserved for later issues: 3 = cluster note (GC), 4 = checkpoint (compaction), 5 = key change.
}
/** Map entry flags. Unknown bits in a verified entry are a format error. */
export const MAP_ZERO = 0x01;
/** The run was written by the cleaner (a relocation, same contents); informational. */
export const MAP_RELOCATED = 0x02;
export const MAP_KNOWN_FLAGS = MAP_ZERO | MAP_RELOCATED;

/** Map entry: prefix, lbnStart u64, pbnStart u64, count u32, keyId u32 (0), then the per-block part. */
export const MAP_FIXED = 32;
/** Per non-zero block: checksum u32, timestamp u64. */
export const MAP_PER_BLOCK = 12;
/** A zero run carries one u64: the timestamp of its first block (block i has first + i). */
export const MAP_ZERO_TAIL = 8;
/** Upper bound on blocks per map entry, so an entry always fits a small read. */
export const MAP_MAX_RUN = 65536;

export const BARRIER_MAGIC = 'VDISKBAR';
/** Barrier: prefix, magic 8, sequence u64, clock u64, entryCount u32, reserved u32, SHA-256 32. */
export const BARRIER_SIZE = 72;
export const BARRIER_HASH_OFFSET = 40;
/** Largest entry a reader accepts before calling the tail corrupt. */
export const MAX_ENTRY = MAP_FIXED + MAP_MAX_RUN * MAP_PER_BLOCK;

export const NO_BLOCK = 0xffffffff;

// Sizes asserted at load: a changed constant that breaks the layout fails loudly.
function assertLayout(): void {
  const ok =
    DataHeaderOffsets.headerChecksum + 4 === DATA_HEADER_FIELDS &&
    DataHeaderOffsets.reserved + 52 === DataHeaderOffsets.headerChecksum &&
    LogHeaderOffsets.headerChecksum + 4 === LOG_HEADER_SIZE &&
    LogHeaderOffsets.kdfSalt + 32 === LogHeaderOffsets.reserved &&
    MAP_FIXED === ENTRY_PREFIX + 8 + 8 + 4 + 4 &&
    BARRIER_SIZE === BARRIER_HASH_OFFSET + 32 &&
    BARRIER_HASH_OFFSET === ENTRY_PREFIX + 8 + 8 + 8 + 4 + 4;
  if (!ok) throw new Error('LBS format layout constants are inconsistent');
}
assertLayout();

// ---- helpers ----------------------------------------------------------------------------------

function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

function headerChecksum(buf: Buffer, end: number): number {
  return sha256(buf.subarray(0, end)).readUInt32LE(0);
}

export function uuidToBytes(id: string): Buffer {
  const hex = id.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new VdiskError('EINVAL', `"${id}" is not a UUID`);
  return Buffer.from(hex, 'hex');
}

export function bytesToUuid(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const isPow2 = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** Validates a geometry; throws EINVAL naming the first bad field. */
export function checkGeometry(g: Geometry, where: string): void {
  const bad = (what: string) => new VdiskError('EINVAL', `${where}: ${what}`);
  if (!isPow2(g.blockSize) || g.blockSize < 512 || g.blockSize > 1 << 20) throw bad(`block size ${g.blockSize} must be a power of two from 512 B to 1 MiB`);
  if (!isPow2(g.clusterSize) || g.clusterSize < g.blockSize || g.clusterSize > 1 << 30) {
    throw bad(`cluster size ${g.clusterSize} must be a power of two, at least the block size (${g.blockSize}) and at most 1 GiB`);
  }
  if (g.clusterSize / g.blockSize > MAP_MAX_RUN) throw bad(`a cluster may hold at most ${MAP_MAX_RUN} blocks`);
  if (!Number.isSafeInteger(g.logicalSize) || g.logicalSize <= 0) throw bad(`disk size ${g.logicalSize} must be a positive number of bytes`);
  if (!Number.isSafeInteger(g.clusterCount) || g.clusterCount < 1) throw bad(`cluster count ${g.clusterCount} is invalid`);
  const logicalBlocks = Math.ceil(g.logicalSize / g.blockSize);
  const physicalBlocks = g.clusterCount * (g.clusterSize / g.blockSize);
  // Block numbers live in Uint32Arrays with 0xffffffff meaning "none".
  if (logicalBlocks >= NO_BLOCK || physicalBlocks >= NO_BLOCK) throw bad('too many blocks for this block size (at most 2^32 - 2); use a larger block size');
  if (g.dataOffset !== Math.max(DATA_HEADER_BLOCK, g.blockSize)) throw bad(`data offset ${g.dataOffset} is not max(4096, block size)`);
}

export function dataFileSize(g: Geometry): number {
  return g.dataOffset + g.clusterCount * g.clusterSize;
}

// ---- data header ------------------------------------------------------------------------------

const u64 = (b: Buffer, at: number) => Number(b.readBigUInt64LE(at));

/** The fields both headers carry, at the same offsets: flags, the store's identity, the geometry. */
type SharedFields = Geometry & { flags: number; storeId: string };
type SharedOffsets = { [K in keyof SharedFields]: number };

function writeSharedFields(b: Buffer, o: SharedOffsets, h: SharedFields): void {
  b.writeUInt32LE(h.flags, o.flags);
  uuidToBytes(h.storeId).copy(b, o.storeId);
  b.writeUInt32LE(h.blockSize, o.blockSize);
  b.writeUInt32LE(h.clusterSize, o.clusterSize);
  b.writeBigUInt64LE(BigInt(h.clusterCount), o.clusterCount);
  b.writeBigUInt64LE(BigInt(h.logicalSize), o.logicalSize);
  b.writeBigUInt64LE(BigInt(h.dataOffset), o.dataOffset);
}

function readSharedFields(b: Buffer, o: SharedOffsets): SharedFields {
  return {
    flags: b.readUInt32LE(o.flags),
    storeId: bytesToUuid(b.subarray(o.storeId, o.storeId + 16)),
    blockSize: b.readUInt32LE(o.blockSize),
    clusterSize: b.readUInt32LE(o.clusterSize),
    clusterCount: u64(b, o.clusterCount),
    logicalSize: u64(b, o.logicalSize),
    dataOffset: u64(b, o.dataOffset),
  };
}

export function encodeDataHeader(h: DataHeader): Buffer {
  const b = Buffer.alloc(h.dataOffset);
  const o = DataHeaderOffsets;
  b.write(DATA_MAGIC, o.magic, 'latin1');
  b.writeUInt16LE(h.version, o.version);
  b.writeUInt16LE(DATA_HEADER_FIELDS, o.fieldsSize);
  writeSharedFields(b, o, h);
  b.writeBigUInt64LE(BigInt(h.createdAt), o.createdAt);
  b.writeUInt32LE(headerChecksum(b, o.headerChecksum), o.headerChecksum);
  return b;
}


/**
 * The checks both headers start with, in order: long enough, the right magic, an intact checksum,
 * a version we read. Returns the version.
 */
function checkHeaderPrologue(
  b: Buffer,
  o: { magic: number; headerChecksum: number; version: number },
  where: string,
  what: { size: number; magic: string; file: string; header: string; format: string },
): number {
  if (b.length < what.size) throw new VdiskError('EINVAL', `${where} is too short to be ${what.file}`);
  if (b.toString('latin1', o.magic, o.magic + 8) !== what.magic) {
    throw new VdiskError('EINVAL', `${where} is not ${what.file} (bad magic)`);
  }
  if (b.readUInt32LE(o.headerChecksum) !== headerChecksum(b, o.headerChecksum)) {
    throw new VdiskError('EIO', `${where}: the ${what.header} is damaged (checksum mismatch)`);
  }
  const version = b.readUInt16LE(o.version);
  if (version !== FORMAT_VERSION) {
    throw new VdiskError('EINVAL', `${where}: LBS ${what.format} format version ${version} is not supported (this vdiskfs reads version ${FORMAT_VERSION})`);
  }
  return version;
}

/** Decodes the data header; `where` names the file in errors. */
export function decodeDataHeader(b: Buffer, where: string): DataHeader {
  const o = DataHeaderOffsets;
  const version = checkHeaderPrologue(b, o, where, { size: DATA_HEADER_FIELDS, magic: DATA_MAGIC, file: 'an LBS data file', header: 'data file header', format: 'data' });
  const h: DataHeader = {
    version,
    ...readSharedFields(b, o),
    createdAt: u64(b, o.createdAt),
  };
  if (h.flags !== 0) throw new VdiskError('EINVAL', `${where}: data file flags 0x${h.flags.toString(16)} are not supported by this vdiskfs (encrypted store?)`);
  checkGeometry(h, where);
  return h;
}

// ---- log header -------------------------------------------------------------------------------

export function encodeLogHeader(h: LogHeader): Buffer {
  const b = Buffer.alloc(LOG_HEADER_SIZE);
  const o = LogHeaderOffsets;
  b.write(LOG_MAGIC, o.magic, 'latin1');
  b.writeUInt16LE(h.version, o.version);
  b.writeUInt16LE(LOG_HEADER_SIZE, o.headerSize);
  writeSharedFields(b, o, h);
  b.writeUInt8(h.checksum, o.checksum);
  b.writeUInt8(h.checksumSize, o.checksumSize);
  b.writeUInt8(h.encryption, o.encryption);
  b.writeUInt32LE(h.keyId, o.keyId);
  b.writeBigUInt64LE(BigInt(h.generation), o.generation);
  b.writeBigUInt64LE(BigInt(h.createdAt), o.createdAt);
  b.writeUInt32LE(headerChecksum(b, o.headerChecksum), o.headerChecksum);
  return b;
}

export function decodeLogHeader(b: Buffer, where: string): LogHeader {
  const o = LogHeaderOffsets;
  const version = checkHeaderPrologue(b, o, where, { size: LOG_HEADER_SIZE, magic: LOG_MAGIC, file: 'an LBS metadata log', header: 'metadata log header', format: 'log' });
  const h: LogHeader = {
    version,
    ...readSharedFields(b, o),
    checksum: b.readUInt8(o.checksum) as ChecksumId,
    checksumSize: b.readUInt8(o.checksumSize),
    encryption: b.readUInt8(o.encryption),
    keyId: b.readUInt32LE(o.keyId),
    generation: u64(b, o.generation),
    createdAt: u64(b, o.createdAt),
  };
  if (b.readUInt16LE(o.headerSize) !== LOG_HEADER_SIZE) throw new VdiskError('EINVAL', `${where}: unexpected log header size`);
  if (h.flags !== 0) throw new VdiskError('EINVAL', `${where}: log flags 0x${h.flags.toString(16)} are not supported by this vdiskfs`);
  if (h.encryption !== 0) throw new VdiskError('EINVAL', `${where}: the store is encrypted (scheme ${h.encryption}), which this vdiskfs does not support`);
  if (h.checksumSize !== 4) throw new VdiskError('EINVAL', `${where}: ${h.checksumSize}-byte block checksums are not supported`);
  checkGeometry(h, where);
  return h;
}

// ---- entries ----------------------------------------------------------------------------------

export interface MapEntry {
  type: EntryType.Map;
  flags: number;
  lbnStart: number;
  pbnStart: number;
  count: number;
  /** Per block (non-zero runs only). */
  checksums?: Uint32Array;
  timestamps?: Float64Array;
  /** Zero runs: the timestamp of the first block. */
  firstTimestamp?: number;
}

export function mapEntrySize(count: number, zero: boolean): number {
  return MAP_FIXED + (zero ? MAP_ZERO_TAIL : count * MAP_PER_BLOCK);
}

function writePrefix(b: Buffer, at: number, type: EntryType, flags: number, length: number): void {
  b.writeUInt8(type, at);
  b.writeUInt8(flags, at + 1);
  b.writeUInt16LE(0, at + 2);
  b.writeUInt32LE(length, at + 4);
}

/**
 * Encodes a map entry at `at` in `b` (which must have room: mapEntrySize). The per-block values
 * come from arrays at `from` (so a caller can encode a run straight out of its batch arrays).
 * Returns the entry's length.
 */
export function encodeMapEntry(
  b: Buffer,
  at: number,
  e: { flags: number; lbnStart: number; pbnStart: number; count: number },
  checksums: Uint32Array | undefined,
  timestamps: Float64Array,
  from: number,
): number {
  const zero = (e.flags & MAP_ZERO) !== 0;
  if (e.count < 1 || e.count > MAP_MAX_RUN) throw new RangeError(`map run of ${e.count} blocks`);
  const length = mapEntrySize(e.count, zero);
  writePrefix(b, at, EntryType.Map, e.flags, length);
  b.writeUIntLE(e.lbnStart, at + 8, 6);
  b.writeUInt16LE(0, at + 14);
  b.writeUIntLE(zero ? 0 : e.pbnStart, at + 16, 6);
  b.writeUInt16LE(0, at + 22);
  b.writeUInt32LE(e.count, at + 24);
  b.writeUInt32LE(0, at + 28);
  let p = at + MAP_FIXED;
  if (zero) {
    b.writeUIntLE(timestamps[from]!, p, 6);
    b.writeUInt16LE(0, p + 6);
  } else {
    for (let i = 0; i < e.count; i++, p += MAP_PER_BLOCK) {
      b.writeUInt32LE(checksums![from + i]!, p);
      b.writeUIntLE(timestamps[from + i]!, p + 4, 6);
      b.writeUInt16LE(0, p + 10);
    }
  }
  return length;
}

/** A u64 field that must fit 48 bits (block numbers and clocks do, by a wide margin). */
function readU48(b: Buffer, at: number): number {
  if (b.readUInt16LE(at + 6) !== 0) return -1;
  return b.readUIntLE(at, 6);
}

/**
 * Decodes the map entry at `at` (its prefix already checked); null if it is malformed. With
 * `scratch`, the per-block values go into those arrays (capacity MAP_MAX_RUN) instead of new ones,
 * which keeps replaying a million entries free of allocations.
 */
export function decodeMapEntry(b: Buffer, at: number, scratch?: { checksums: Uint32Array; timestamps: Float64Array }): MapEntry | null {
  const flags = b.readUInt8(at + 1);
  const length = b.readUInt32LE(at + 4);
  const lbnStart = readU48(b, at + 8);
  const pbnStart = readU48(b, at + 16);
  const count = b.readUInt32LE(at + 24);
  if (lbnStart < 0 || pbnStart < 0 || count < 1 || count > MAP_MAX_RUN) return null;
  const zero = (flags & MAP_ZERO) !== 0;
  if (length !== mapEntrySize(count, zero)) return null;
  const p = at + MAP_FIXED;
  if (zero) {
    const first = readU48(b, p);
    if (first < 0) return null;
    return { type: EntryType.Map, flags, lbnStart, pbnStart: 0, count, firstTimestamp: first };
  }
  const checksums = scratch ? scratch.checksums : new Uint32Array(count);
  const timestamps = scratch ? scratch.timestamps : new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const q = p + i * MAP_PER_BLOCK;
    checksums[i] = b.readUInt32LE(q);
    const ts = readU48(b, q + 4);
    if (ts < 0) return null;
    timestamps[i] = ts;
  }
  return { type: EntryType.Map, flags, lbnStart, pbnStart, count, checksums, timestamps };
}

export interface BarrierEntry {
  sequence: number;
  clock: number;
  entryCount: number;
  hash: Buffer;
}

/**
 * Encodes a barrier. Its hash is SHA-256 over every entry byte since the previous barrier, followed
 * by this barrier's own bytes [0, 40) (so its sequence, clock and count are covered too).
 */
export function encodeBarrier(entries: Uint8Array, sequence: number, clock: number, entryCount: number): Buffer {
  const b = Buffer.alloc(BARRIER_SIZE);
  writePrefix(b, 0, EntryType.Barrier, 0, BARRIER_SIZE);
  b.write(BARRIER_MAGIC, 8, 'latin1');
  b.writeBigUInt64LE(BigInt(sequence), 16);
  b.writeBigUInt64LE(BigInt(clock), 24);
  b.writeUInt32LE(entryCount, 32);
  b.writeUInt32LE(0, 36);
  sha256(entries, b.subarray(0, BARRIER_HASH_OFFSET)).copy(b, BARRIER_HASH_OFFSET);
  return b;
}

/** Decodes the barrier at `at` without checking its hash (see barrierHashMatches). */
export function decodeBarrier(b: Buffer, at: number): BarrierEntry | null {
  if (b.readUInt32LE(at + 4) !== BARRIER_SIZE || b.readUInt8(at + 1) !== 0) return null;
  if (b.toString('latin1', at + 8, at + 16) !== BARRIER_MAGIC) return null;
  return {
    sequence: u64(b, at + 16),
    clock: u64(b, at + 24),
    entryCount: b.readUInt32LE(at + 32),
    hash: b.subarray(at + BARRIER_HASH_OFFSET, at + BARRIER_SIZE),
  };
}

/** True if the barrier at `barrierAt` covers exactly the entry bytes [groupStart, barrierAt). */
export function barrierHashMatches(b: Buffer, groupStart: number, barrierAt: number): boolean {
  const want = sha256(b.subarray(groupStart, barrierAt), b.subarray(barrierAt, barrierAt + BARRIER_HASH_OFFSET));
  return want.equals(b.subarray(barrierAt + BARRIER_HASH_OFFSET, barrierAt + BARRIER_SIZE));
}

/** Reads an entry prefix; null if there are not 8 bytes or the length is implausible. */
export function readPrefix(b: Buffer, at: number, end: number): { type: number; flags: number; length: number } | null {
  if (end - at < ENTRY_PREFIX) return null;
  const length = b.readUInt32LE(at + 4);
  if (length < ENTRY_PREFIX || length > MAX_ENTRY || b.readUInt16LE(at + 2) !== 0) return null;
  return { type: b.readUInt8(at), flags: b.readUInt8(at + 1), length };
}
