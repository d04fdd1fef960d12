/**
 * The FUSE operation table, called with kernel-format requests (no mount): range checks at the
 * edge, errno mapping, the fixed tree, stats files, fallocate, and the cache invalidations that keep
 * every view of a store coherent. The channel and the mount are covered by fuse-channel.test.ts and
 * native-test/.
 */
import { describe, expect, it } from 'vitest';
import { constants } from 'node:os';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { pino } from 'pino';
import { createOperations, INVALIDATION_WAIT_MS, type ReplySink } from '../src/fuse/operations.js';
import { DiskTable } from '../src/disks/disk-table.js';
import { createFlatStore } from '../src/stores/flat/flat-store.js';
import { Fallocate, IN_HEADER_SIZE, OUT_HEADER_SIZE, ROOT_ID, WRITE_IN_SIZE, decodeInHeader, type InHeader } from '../src/fuse/protocol.js';
import type { FuseRequest } from '../src/fuse/kernel-channel.js';
import { body, direntNames, Op, request } from './support/fuse-requests.js';
import { scratchDir } from './support/tmp.js';

const { errno } = constants;
const log = pino({ level: 'silent' });
const dir = await scratchDir();
const src = join(dir, 'src');
await mkdir(src);
const SIZE = 10_000 * 512;
await createFlatStore({ descriptorPath: join(src, 'd.vdisk'), size: SIZE });
const table = await DiskTable.open(src, { views: ['raw', 'vhdx'] });

type Reply = { error: number; payload: Buffer };
const waiting = new Map<number, (r: Reply) => void>();
const invalidations: [number, number, number][] = [];
/** When set, what the kernel's taking of an invalidation waits for (a test holds it back). */
let invalidationTaken: Promise<void> | undefined;
const sink: ReplySink = {
  reply: (unique, payload) => settle(unique, 0, payload ?? Buffer.alloc(0)),
  replyPrepared: (unique, out, length) => settle(unique, 0, Buffer.from(out.subarray(OUT_HEADER_SIZE, OUT_HEADER_SIZE + length))),
  replyError: (unique, e) => settle(unique, -e, Buffer.alloc(0)),
  writeData: (req, size) => Buffer.from(req.body.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + size)),
  invalidate: (ino, offset, length) => {
    invalidations.push([ino, offset, length]);
    return invalidationTaken ?? Promise.resolve();
  },
  recycle: () => {},
  replyBuffer: (n) => Buffer.allocUnsafe(OUT_HEADER_SIZE + n),
};
function settle(unique: number, error: number, payload: Buffer): boolean {
  const done = waiting.get(unique);
  waiting.delete(unique);
  done?.({ error, payload });
  return done !== undefined;
}
const dispatch = createOperations(table, sink, { log });

function call(opcode: number, nodeid: number, b?: Buffer): Promise<Reply> {
  const raw = request(opcode, nodeid, b);
  const h: InHeader = decodeInHeader(raw);
  const req: FuseRequest = { ...h, body: raw.subarray(IN_HEADER_SIZE) };
  const p = new Promise<Reply>((done) => waiting.set(h.unique, done));
  dispatch(req);
  raw.fill(0xee); // the channel reuses its buffer at once: nothing may read it later
  return p;
}
const lookup = async (name: string, parent = ROOT_ID) => {
  const r = await call(Op.LOOKUP, parent, body.lookup(name));
  return { error: r.error, ino: r.error ? 0 : Number(r.payload.readBigUInt64LE(0)), size: r.error ? 0 : Number(r.payload.readBigUInt64LE(48)), mode: r.error ? 0 : r.payload.readUInt32LE(40 + 60) };
};
const open = async (ino: number, flags: number) => Number((await call(Op.OPEN, ino, body.open(flags))).payload.readBigUInt64LE(0));
const read = (ino: number, fh: number, offset: number, size: number) => call(Op.READ, ino, body.read(fh, offset, size));
const write = (ino: number, fh: number, offset: number, data: Buffer) => call(Op.WRITE, ino, body.write(fh, offset, data));

describe('FUSE operations', () => {
  it('looks up fixed names with exact sizes and modes, ENOENT otherwise', async () => {
    const raw = await lookup('d.raw');
    expect(raw).toMatchObject({ error: 0, size: SIZE, mode: 0o100644 });
    expect((await lookup('nope')).error).toBe(-errno.ENOENT);
    const root = await call(Op.READDIR, ROOT_ID, body.readdir(0, 4096));
    expect(direntNames(root.payload)).toEqual(['.', '..', '.vdiskfs', 'd.raw', 'd.vhdx']);
    // A small reply buffer continues where the kernel says.
    const first = direntNames((await call(Op.READDIR, ROOT_ID, body.readdir(0, 64))).payload);
    const rest = direntNames((await call(Op.READDIR, ROOT_ID, body.readdir(first.length, 4096))).payload);
    expect([...first, ...rest]).toEqual(['.', '..', '.vdiskfs', 'd.raw', 'd.vhdx']);
  });

  it('reads are clamped at EOF; writes past EOF are refused whole', async () => {
    const { ino } = await lookup('d.raw');
    const fh = await open(ino, 2);
    expect((await write(ino, fh, SIZE - 4096, Buffer.alloc(4096, 7))).payload.readUInt32LE(0)).toBe(4096);
    const tail = await read(ino, fh, SIZE - 100, 4096);
    expect(tail.payload.length).toBe(100);
    expect(tail.payload.every((b) => b === 7)).toBe(true);
    expect((await read(ino, fh, SIZE, 4096)).payload.length).toBe(0);
    expect((await write(ino, fh, SIZE - 100, Buffer.alloc(4096, 9))).error).toBe(-errno.ENOSPC);
    expect((await read(ino, fh, SIZE - 100, 100)).payload.every((b) => b === 7)).toBe(true); // nothing of the refused write landed
    expect((await call(Op.SETATTR, ino, body.setattrSize(0))).error).toBe(-errno.EPERM);
    expect((await call(Op.SETATTR, ino, body.setattrSize(SIZE))).error).toBe(0);
    expect((await call(Op.FSYNC, ino, body.fh(fh))).error).toBe(0);
    expect((await call(Op.RELEASE, ino, body.fh(fh))).error).toBe(0);
  });

  it('a read-only open cannot write; names cannot be created', async () => {
    const { ino } = await lookup('d.raw');
    const fh = await open(ino, 0);
    expect((await write(ino, fh, 0, Buffer.alloc(1))).error).toBe(-errno.EBADF);
    expect((await call(Op.CREATE, ROOT_ID, body.lookup('new'))).error).toBe(-errno.EPERM);
    expect((await call(Op.GETXATTR, ino)).error).toBe(-errno.ENOSYS);
  });

  it('serves store stats as JSON under .vdiskfs/, a snapshot per open', async () => {
    const ctl = await lookup('.vdiskfs');
    const stats = await lookup('d.stats.json', ctl.ino);
    expect(stats.error).toBe(0);
    const fh = await open(stats.ino, 0);
    const json = (await read(stats.ino, fh, 0, 1 << 20)).payload;
    expect(JSON.parse(json.toString())).toMatchObject({ store: 'd', kind: 'flat', size: SIZE, stats: { io: { writes: 1 } } });
    expect((await call(Op.OPEN, stats.ino, body.open(1))).error).toBe(-errno.EACCES);
  });

  it('fallocate punches holes and zeroes ranges; the disk never grows', async () => {
    const { ino } = await lookup('d.raw');
    const fh = await open(ino, 2);
    await write(ino, fh, 8192, Buffer.alloc(8192, 5));
    const punch = Fallocate.PUNCH_HOLE | Fallocate.KEEP_SIZE;
    expect((await call(Op.FALLOCATE, ino, body.fallocate(fh, 8192, 4096, punch))).error).toBe(0);
    expect((await call(Op.FALLOCATE, ino, body.fallocate(fh, 12288, 4096, Fallocate.ZERO_RANGE))).error).toBe(0);
    expect((await read(ino, fh, 8192, 8192)).payload.every((b) => b === 0)).toBe(true);
    expect((await call(Op.FALLOCATE, ino, body.fallocate(fh, 0, 4096, 0))).error).toBe(0);
    expect((await call(Op.FALLOCATE, ino, body.fallocate(fh, SIZE - 10, 4096, 0))).error).toBe(-errno.EFBIG);
    expect((await call(Op.FALLOCATE, ino, body.fallocate(fh, 0, 4096, Fallocate.PUNCH_HOLE))).error).toBe(-errno.EOPNOTSUPP);
    expect((await call(Op.FALLOCATE, ino, body.fallocate(fh, 0, 4096, 0x08 /* collapse */))).error).toBe(-errno.EOPNOTSUPP);
  });

  /** Both views of d, opened read-write, and where the raw bytes lie in the VHDX file. */
  async function openBothViews() {
    const raw = await lookup('d.raw');
    const vhdx = await lookup('d.vhdx');
    const payload = table.files.get('d.vhdx')!.view.payload[0]!;
    return { raw, vhdx, payload, rawFh: await open(raw.ino, 2), vhdxFh: await open(vhdx.ino, 2) };
  }

  it('a write through one view drops exactly the changed range from the other views\' caches', async () => {
    const { raw, vhdx, payload, rawFh, vhdxFh } = await openBothViews();
    invalidations.length = 0;
    await write(raw.ino, rawFh, 4096, Buffer.alloc(4096, 1));
    expect(invalidations).toEqual([]); // nothing of the VHDX payload has been read since its open
    await read(vhdx.ino, vhdxFh, payload.fileOffset, 64 * 1024);
    await write(raw.ino, rawFh, 4096, Buffer.alloc(4096, 2));
    expect(invalidations).toEqual([[vhdx.ino, payload.fileOffset + 4096, 4096]]);
    await read(raw.ino, rawFh, 0, 64 * 1024);
    invalidations.length = 0;
    await write(vhdx.ino, vhdxFh, payload.fileOffset + 8192, Buffer.alloc(512, 3));
    expect(invalidations).toEqual([[raw.ino, 8192, 512]]);
    const seen = await read(raw.ino, rawFh, 8192, 512);
    expect(seen.payload.every((b) => b === 3)).toBe(true);
  });

  it('a write is acknowledged only once the kernel has dropped the other views\' pages, and never waits past the bound', async () => {
    const { raw, vhdx, payload, rawFh, vhdxFh } = await openBothViews();
    await read(vhdx.ino, vhdxFh, payload.fileOffset, 64 * 1024);
    let release!: () => void;
    invalidationTaken = new Promise((r) => { release = r; });
    try {
      let acknowledged = false;
      const written = write(raw.ino, rawFh, 0, Buffer.alloc(4096, 7)).then(() => { acknowledged = true; });
      await new Promise((r) => setTimeout(r, INVALIDATION_WAIT_MS / 4));
      expect(acknowledged, 'acknowledged before the invalidation was taken').toBe(false);
      release();
      await written;
      // A kernel that never takes it (two writes waiting on each other's pages) delays by the bound only.
      invalidationTaken = new Promise(() => {});
      const started = Date.now();
      await write(raw.ino, rawFh, 0, Buffer.alloc(4096, 8));
      expect(Date.now() - started).toBeGreaterThanOrEqual(INVALIDATION_WAIT_MS - 5);
      const fsynced = await call(Op.FSYNC, raw.ino, body.fh(rawFh));
      expect(fsynced.error).toBe(0);
    } finally {
      invalidationTaken = undefined;
    }
  });

  it('unknown opcodes get ENOSYS; FORGET and INTERRUPT get no reply', async () => {
    expect((await call(4000, ROOT_ID)).error).toBe(-errno.ENOSYS);
    const raw = request(Op.FORGET, 3, Buffer.alloc(8));
    dispatch({ ...decodeInHeader(raw), body: raw.subarray(IN_HEADER_SIZE) });
    expect(waiting.size).toBe(0);
  });
});
