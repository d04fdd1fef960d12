/** FUSE kernel requests as the kernel lays them out (linux/fuse.h), for tests of the op table and the channel. */
import { IN_HEADER_SIZE, Op } from '../../src/fuse/protocol.js';

let nextUnique = 100;

export function request(opcode: number, nodeid: number, body: Buffer = Buffer.alloc(0), unique = nextUnique++): Buffer {
  const b = Buffer.alloc(IN_HEADER_SIZE + body.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(opcode, 4);
  b.writeBigUInt64LE(BigInt(unique), 8);
  b.writeBigUInt64LE(BigInt(nodeid), 16);
  body.copy(b, IN_HEADER_SIZE);
  return b;
}

const u64 = (n: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); return b; };
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };

export const body = {
  init: (minor: number, flags = 0xffffffff) => Buffer.concat([u32(7), u32(minor), u32(1 << 20), u32(flags), Buffer.alloc(48)]),
  lookup: (name: string) => Buffer.concat([Buffer.from(name), Buffer.alloc(1)]),
  open: (flags: number) => Buffer.concat([u32(flags), u32(0)]),
  /** fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding */
  read: (fh: number, offset: number, size: number) => Buffer.concat([u64(fh), u64(offset), u32(size), u32(0), u64(0), u32(0), u32(0)]),
  write: (fh: number, offset: number, data: Buffer) => Buffer.concat([u64(fh), u64(offset), u32(data.length), u32(0), u64(0), u32(0), u32(0), data]),
  fh: (fh: number) => Buffer.concat([u64(fh), Buffer.alloc(16)]),
  fallocate: (fh: number, offset: number, length: number, mode: number) => Buffer.concat([u64(fh), u64(offset), u64(length), u32(mode), u32(0)]),
  setattrSize: (size: number) => { const b = Buffer.alloc(88); b.writeUInt32LE(1 << 3, 0); b.writeBigUInt64LE(BigInt(size), 16); return b; },
  readdir: (offset: number, size: number) => Buffer.concat([u64(0), u64(offset), u32(size), Buffer.alloc(20)]),
};

export { Op };

/** Decodes the names of a READDIR reply's fuse_dirent records. */
export function direntNames(payload: Buffer): string[] {
  const names: string[] = [];
  for (let at = 0; at + 24 <= payload.length;) {
    const len = payload.readUInt32LE(at + 16);
    names.push(payload.toString('utf8', at + 24, at + 24 + len));
    at += (24 + len + 7) & ~7;
  }
  return names;
}
