/**
 * The FUSE kernel protocol (linux/fuse.h, 7.38): opcodes, flags and the byte layout of every
 * message vdiskfs sends or reads. Pure encode/decode, no I/O: kernel-channel.ts moves the bytes.
 *
 * All integers are little-endian (x86-64 and arm64 hosts); every struct is padded to 8 bytes.
 * Offsets are written out next to each field so they can be checked against the header.
 */

export const KERNEL_MAJOR = 7;
/** The newest minor version whose structures this module encodes. */
export const KERNEL_MINOR = 38;
/** The oldest minor we accept: 7.31 brought FUSE_MAX_PAGES and everything else we rely on. */
export const OLDEST_MINOR = 31;
export const ROOT_ID = 1;

export const Op = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9,
  UNLINK: 10, RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17,
  RELEASE: 18, FSYNC: 20, SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25,
  INIT: 26, OPENDIR: 27, READDIR: 28, RELEASEDIR: 29, FSYNCDIR: 30, GETLK: 31, SETLK: 32,
  SETLKW: 33, ACCESS: 34, CREATE: 35, INTERRUPT: 36, BMAP: 37, DESTROY: 38, IOCTL: 39, POLL: 40,
  NOTIFY_REPLY: 41, BATCH_FORGET: 42, FALLOCATE: 43, READDIRPLUS: 44, RENAME2: 45, LSEEK: 46,
  COPY_FILE_RANGE: 47, SETUPMAPPING: 48, REMOVEMAPPING: 49, SYNCFS: 50, TMPFILE: 51,
} as const;

/** Opcodes the kernel sends without waiting for (or accepting) a reply. */
export function expectsReply(opcode: number): boolean {
  return opcode !== Op.FORGET && opcode !== Op.BATCH_FORGET && opcode !== Op.INTERRUPT;
}

/** fuse_init_in/out flags (the low 32 bits). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
} as const;

/** fuse_open_out.open_flags */
export const OpenFlag = { DIRECT_IO: 1 << 0, KEEP_CACHE: 1 << 1 } as const;

/** fallocate(2) modes the FALLOCATE request carries. */
export const Fallocate = { KEEP_SIZE: 0x01, PUNCH_HOLE: 0x02, ZERO_RANGE: 0x10 } as const;

export const NOTIFY_INVAL_INODE = 2;
export const FATTR_SIZE = 1 << 3;
export const DT_DIR = 4;
export const DT_REG = 8;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
/** fuse_write_in: the data of a WRITE follows it. */
export const WRITE_IN_SIZE = 40;
const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE; // 128
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE; // 104
export const INIT_OUT_SIZE = 64;
export const STATFS_OUT_SIZE = 80;
const DIRENT_HEADER_SIZE = 24;

export interface InHeader {
  readonly length: number;
  readonly opcode: number;
  readonly unique: number;
  readonly nodeid: number;
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

/** A u64 field as a number: unique ids, inode numbers, offsets and handles stay far below 2^53. */
export function u64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + 4) * 0x1_0000_0000 + buf.readUInt32LE(at);
}

function putU64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32LE(value >>> 0, at);
  buf.writeUInt32LE(Math.floor(value / 0x1_0000_0000) >>> 0, at + 4);
}

/**
 * fuse_in_header: len@0 opcode@4 unique@8 nodeid@16 uid@24 gid@28 pid@32 total_extlen@36.
 * `body` rides along so that the request is one object (one allocation per request).
 */
export function decodeInHeader(buf: Buffer): InHeader;
export function decodeInHeader<B>(buf: Buffer, body: B): InHeader & { body: B };
export function decodeInHeader(buf: Buffer, body?: unknown): InHeader & { body?: unknown } {
  return {
    body,
    length: buf.readUInt32LE(0),
    opcode: buf.readUInt32LE(4),
    unique: u64(buf, 8),
    nodeid: u64(buf, 16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
  };
}

/** fuse_out_header, written into the first 16 bytes of `buf`: len@0 error@4 unique@8. */
export function putOutHeader(buf: Buffer, length: number, error: number, unique: number): void {
  buf.writeUInt32LE(length, 0);
  buf.writeInt32LE(error, 4);
  putU64(buf, 8, unique);
}

export interface InitIn { major: number; minor: number; maxReadahead: number; flags: number }

/** fuse_init_in: major@0 minor@4 max_readahead@8 flags@12. */
export function decodeInitIn(body: Buffer): InitIn {
  return { major: body.readUInt32LE(0), minor: body.readUInt32LE(4), maxReadahead: body.readUInt32LE(8), flags: body.readUInt32LE(12) };
}

export interface InitOut {
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
}

/** fuse_init_out: major@0 minor@4 max_readahead@8 flags@12 max_background@16 congestion@18 max_write@20 time_gran@24 max_pages@28. */
export function encodeInitOut(o: InitOut): Buffer {
  const b = Buffer.alloc(INIT_OUT_SIZE);
  b.writeUInt32LE(KERNEL_MAJOR, 0);
  b.writeUInt32LE(o.minor, 4);
  b.writeUInt32LE(o.maxReadahead, 8);
  b.writeUInt32LE(o.flags >>> 0, 12);
  b.writeUInt16LE(o.maxBackground, 16);
  b.writeUInt16LE(o.congestionThreshold, 18);
  b.writeUInt32LE(o.maxWrite, 20);
  b.writeUInt32LE(1, 24); // time_gran: nanoseconds
  b.writeUInt16LE(o.maxPages, 28);
  return b;
}

export interface Attr {
  ino: number;
  size: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Modification (and change) time, milliseconds since the epoch. */
  mtimeMs: number;
}

/** fuse_attr at `at`: ino@0 size@8 blocks@16 atime@24 mtime@32 ctime@40 *nsec@48.. mode@60 nlink@64 uid@68 gid@72 rdev@76 blksize@80. */
function putAttr(b: Buffer, at: number, a: Attr): void {
  const sec = Math.floor(a.mtimeMs / 1000);
  const nsec = Math.round((a.mtimeMs - sec * 1000) * 1e6) % 1e9;
  putU64(b, at, a.ino);
  putU64(b, at + 8, a.size);
  putU64(b, at + 16, Math.ceil(a.size / 512));
  for (const t of [24, 32, 40]) putU64(b, at + t, sec);
  for (const t of [48, 52, 56]) b.writeUInt32LE(nsec, at + t);
  b.writeUInt32LE(a.mode, at + 60);
  b.writeUInt32LE(a.nlink, at + 64);
  b.writeUInt32LE(a.uid, at + 68);
  b.writeUInt32LE(a.gid, at + 72);
  b.writeUInt32LE(0, at + 76);
  b.writeUInt32LE(4096, at + 80);
  b.writeUInt32LE(0, at + 84);
}

function putValid(b: Buffer, at: number, nsecAt: number, seconds: number): void {
  const whole = Math.floor(seconds);
  putU64(b, at, whole);
  b.writeUInt32LE(Math.round((seconds - whole) * 1e9), nsecAt);
}

/** fuse_entry_out: nodeid@0 generation@8 entry_valid@16 attr_valid@24 entry_valid_nsec@32 attr_valid_nsec@36 attr@40. */
export function encodeEntryOut(attr: Attr, entryValidSeconds: number, attrValidSeconds: number): Buffer {
  const b = Buffer.alloc(ENTRY_OUT_SIZE);
  putU64(b, 0, attr.ino);
  putValid(b, 16, 32, entryValidSeconds);
  putValid(b, 24, 36, attrValidSeconds);
  putAttr(b, 40, attr);
  return b;
}

/** fuse_attr_out: attr_valid@0 attr_valid_nsec@8 attr@16. */
export function encodeAttrOut(attr: Attr, attrValidSeconds: number): Buffer {
  const b = Buffer.alloc(ATTR_OUT_SIZE);
  putValid(b, 0, 8, attrValidSeconds);
  putAttr(b, 16, attr);
  return b;
}

/** fuse_open_out: fh@0 open_flags@8. */
export function encodeOpenOut(fh: number, openFlags: number): Buffer {
  const b = Buffer.alloc(16);
  putU64(b, 0, fh);
  b.writeUInt32LE(openFlags, 8);
  return b;
}

/** fuse_write_out: size@0. */
export function encodeWriteOut(size: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(size, 0);
  return b;
}

export interface StatfsOut { blocks: number; bfree: number; bavail: number; files: number; ffree: number; bsize: number; namelen: number }

/** fuse_kstatfs: blocks@0 bfree@8 bavail@16 files@24 ffree@32 bsize@40 namelen@44 frsize@48. */
export function encodeStatfsOut(s: StatfsOut): Buffer {
  const b = Buffer.alloc(STATFS_OUT_SIZE);
  putU64(b, 0, s.blocks);
  putU64(b, 8, s.bfree);
  putU64(b, 16, s.bavail);
  putU64(b, 24, s.files);
  putU64(b, 32, s.ffree);
  b.writeUInt32LE(s.bsize, 40);
  b.writeUInt32LE(s.namelen, 44);
  b.writeUInt32LE(s.bsize, 48);
  return b;
}

export interface DirEntry { ino: number; name: string; type: number }

/**
 * fuse_dirent records (ino@0 off@8 namelen@16 type@20 name@24, each padded to 8 bytes) for the
 * entries from index `from`, as many as fit in `maxBytes`. Each record's `off` is the index of
 * the entry after it, which is what the kernel passes back to continue.
 */
export function encodeDirents(entries: readonly DirEntry[], from: number, maxBytes: number): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (let i = from; i < entries.length; i++) {
    const e = entries[i]!;
    const name = Buffer.from(e.name);
    const size = (DIRENT_HEADER_SIZE + name.length + 7) & ~7;
    if (total + size > maxBytes) break;
    const rec = Buffer.alloc(size);
    putU64(rec, 0, e.ino);
    putU64(rec, 8, i + 1);
    rec.writeUInt32LE(name.length, 16);
    rec.writeUInt32LE(e.type, 20);
    name.copy(rec, DIRENT_HEADER_SIZE);
    parts.push(rec);
    total += size;
  }
  return Buffer.concat(parts, total);
}

/** fuse_notify_inval_inode_out: ino@0 off@8 len@16 (off < 0: attributes only; len ≤ 0: to the end). */
export function encodeInvalInode(ino: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(OUT_HEADER_SIZE + 24);
  putOutHeader(b, b.length, NOTIFY_INVAL_INODE, 0);
  putU64(b, OUT_HEADER_SIZE, ino);
  b.writeBigInt64LE(BigInt(offset), OUT_HEADER_SIZE + 8);
  b.writeBigInt64LE(BigInt(length), OUT_HEADER_SIZE + 16);
  return b;
}

/** The NUL-terminated name a LOOKUP carries. */
export function decodeName(body: Buffer): string {
  const end = body.indexOf(0);
  return body.toString('utf8', 0, end < 0 ? body.length : end);
}
