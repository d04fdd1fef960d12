/**
 * The FUSE operation table: kernel requests (protocol.ts) over the disk table's views. The thin
 * layer between the kernel and the views. Range checks happen here, once: reads are clamped at
 * EOF (a short read only at EOF), writes that would pass EOF are refused whole with ENOSPC, and
 * truncation to another size is refused. Errors become -errno in one place (errno.ts).
 *
 * The tree is fixed for the life of the mount: the root (inode 1) holds every view file and the
 * `.vdiskfs/` directory of stats files, so inode numbers are indexes into one array.
 *
 * Cache coherence: a write (or discard) through one view of a store changes bytes of its other
 * views; the kernel is told to drop exactly those cached ranges. Each inode remembers the span it
 * has served since its cache was last dropped, so writes far from anything cached cost nothing.
 */
import { constants } from 'node:os';
import type { Logger } from '../log.js';
import type { DiskTable, DiskFile, OpenStore } from '../disks/disk-table.js';
import { deviceRangesOf, fileRangesOf, type View } from '../views/view.js';
import { errnoForReply } from './errno.js';
import {
  DT_DIR, DT_REG, FATTR_SIZE, Fallocate, OUT_HEADER_SIZE, Op, OpenFlag, ROOT_ID, decodeName, encodeAttrOut,
  encodeDirents, encodeEntryOut, encodeOpenOut, encodeStatfsOut, encodeWriteOut, u64, type Attr, type DirEntry,
} from './protocol.js';
import type { FuseRequest } from './kernel-channel.js';

const { errno } = constants;
export const CONTROL_DIR = '.vdiskfs';
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const O_ACCMODE = 3;
const FATTR_MODE_UID_GID = 0b111;
/** Names never change while mounted; attributes (mtime) may. */
const ENTRY_VALID_S = 3600;
const ATTR_VALID_S = 1;

/** What the operations need of the channel (kernel-channel.ts); tests supply their own. */
export interface ReplySink {
  reply(unique: number, payload?: Buffer): boolean;
  replyPrepared(unique: number, out: Buffer, length: number): boolean;
  /** A buffer with room for OUT_HEADER_SIZE + length bytes (replyPrepared may reuse it). */
  replyBuffer(length: number): Buffer;
  replyError(unique: number, errnoValue: number): boolean;
  writeData(req: FuseRequest, size: number): Buffer;
  /** The store has finished with a buffer writeData returned. */
  recycle(data: Buffer): void;
  /** Drops kernel-cached pages; settles (never rejects) once the kernel has done so. */
  invalidate(ino: number, offset: number, length: number): Promise<void>;
}

type Node =
  | { kind: 'dir'; ino: number; name: string; parent: number; mode: number; entries: () => DirEntry[] }
  | { kind: 'view'; ino: number; name: string; parent: number; file: DiskFile }
  | { kind: 'stats'; ino: number; name: string; parent: number; store: OpenStore };

interface Handle {
  readonly node: Node;
  readonly writable: boolean;
  /** A stats file's contents as of its open (read with direct I/O, so size never disagrees). */
  readonly snapshot?: Buffer;
}

/** Per view inode: how often the kernel holds it, and the span of its bytes it may cache. */
interface CacheSpan {
  lookups: number;
  lo: number;
  hi: number;
}

export interface OperationsOptions {
  log: Logger;
  /** FUSE counters shown next to each store's own in its stats file. */
  counters?: () => Record<string, unknown>;
  /** Whether the kernel's writeback cache was negotiated (WRITE then comes from writeback). */
  writebackCache?: () => boolean;
}

/**
 * The longest a reply waits for the kernel to drop other views' cached pages. The wait is what
 * makes a write through NAME.raw visible to the next cached read of NAME.vhdx; the bound is what
 * keeps two buffered writes through two views of the same bytes from waiting on each other's
 * locked pages for ever (each write holds its own pages locked until we answer it).
 */
export const INVALIDATION_WAIT_MS = 100;

/** Runs `then` once `pending` settles, or after INVALIDATION_WAIT_MS, whichever comes first. */
function afterInvalidations(pending: Promise<unknown> | undefined, then: () => void): void {
  if (!pending) return then();
  let done = false;
  const go = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    then();
  };
  const timer = setTimeout(go, INVALIDATION_WAIT_MS);
  pending.then(go, go);
}

export function createOperations(table: DiskTable, sink: ReplySink, options: OperationsOptions): (req: FuseRequest) => void {
  const log = options.log;
  const tracing = log.isLevelEnabled('trace');
  const writebackCache = options.writebackCache ?? (() => false);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;

  // Inodes: 1 = root, 2 = .vdiskfs/, then one per view file, then one per stats file.
  const nodes: (Node | undefined)[] = [undefined];
  const byName = new Map<string, Node>(); // "parent/name"
  const add = (n: Node) => {
    nodes[n.ino] = n;
    byName.set(`${n.parent}/${n.name}`, n);
  };
  const root: Node = { kind: 'dir', ino: ROOT_ID, name: '', parent: ROOT_ID, mode: 0o755, entries: () => listing(ROOT_ID) };
  nodes[ROOT_ID] = root;
  add({ kind: 'dir', ino: 2, name: CONTROL_DIR, parent: ROOT_ID, mode: 0o555, entries: () => listing(2) });
  for (const [name, file] of table.files) add({ kind: 'view', ino: nodes.length, name, parent: ROOT_ID, file });
  for (const store of table.stores) add({ kind: 'stats', ino: nodes.length, name: `${store.name}.stats.json`, parent: 2, store });
  const cache: CacheSpan[] = nodes.map(() => ({ lookups: 0, lo: Infinity, hi: 0 }));
  /** The view inodes of each store, for coherence. */
  const viewInodes = new Map<OpenStore, { ino: number; view: View }[]>();
  for (const n of nodes) {
    if (n?.kind !== 'view') continue;
    const list = viewInodes.get(n.file.store) ?? [];
    list.push({ ino: n.ino, view: n.file.view });
    viewInodes.set(n.file.store, list);
  }
  /** Stores written since their last barrier. */
  const dirty = new Set<OpenStore>();

  function listing(dir: number): DirEntry[] {
    const out: DirEntry[] = [{ ino: dir, name: '.', type: DT_DIR }, { ino: ROOT_ID, name: '..', type: DT_DIR }];
    for (const n of nodes) if (n && n.ino !== ROOT_ID && n.parent === dir) out.push({ ino: n.ino, name: n.name, type: n.kind === 'dir' ? DT_DIR : DT_REG });
    return out;
  }

  const statsBytes = (store: OpenStore) => Buffer.from(table.statsJson(store, options.counters?.()));

  function attrOf(n: Node): Attr {
    switch (n.kind) {
      case 'dir':
        return { ino: n.ino, size: 4096, mode: S_IFDIR | n.mode, nlink: 2, uid, gid, mtimeMs: table.createdAt };
      case 'view':
        return { ino: n.ino, size: n.file.view.size, mode: S_IFREG | (n.file.view.writable ? 0o644 : 0o444), nlink: 1, uid, gid, mtimeMs: n.file.mtime };
      case 'stats':
        return { ino: n.ino, size: statsBytes(n.store).length, mode: S_IFREG | 0o444, nlink: 1, uid, gid, mtimeMs: Date.now() };
    }
  }

  const fail = (req: FuseRequest, what: Record<string, unknown>) => (err: unknown) => {
    sink.replyError(req.unique, errnoForReply(err, log, { op: req.opcode, ino: req.nodeid, ...what }));
  };

  /** Invalidations written but not yet taken by the kernel (FSYNC and FLUSH wait for them). */
  const pendingInvalidations = new Set<Promise<void>>();
  /** FSYNC and FLUSH: answered once every invalidation already written has been taken (bounded). */
  const replyAfterPendingInvalidations = (unique: number) =>
    afterInvalidations(pendingInvalidations.size ? Promise.all(pendingInvalidations) : undefined, () => sink.reply(unique));

  /**
   * After store bytes changed through `from`: drop what other views' caches hold of them.
   * Returns what to wait for before the change is acknowledged (undefined: nothing was cached).
   */
  function changed(from: { ino: number; view: View }, offset: number, length: number, includeSelf: boolean): Promise<unknown> | undefined {
    const node = nodes[from.ino] as Node & { kind: 'view' };
    node.file.mtime = Date.now();
    const siblings = viewInodes.get(node.file.store)!;
    if (siblings.length === 1 && !includeSelf) return undefined;
    let issued: Promise<void>[] | undefined;
    for (const [devOffset, n] of deviceRangesOf(from.view, offset, length)) {
      for (const s of siblings) {
        if (s.ino === from.ino && !includeSelf) continue;
        const span = cache[s.ino]!;
        if (span.lookups <= 0) continue;
        for (const [fileOffset, len] of fileRangesOf(s.view, devOffset, n)) {
          if (fileOffset + len <= span.lo || fileOffset >= span.hi) continue;
          const p = sink.invalidate(s.ino, fileOffset, len);
          pendingInvalidations.add(p);
          void p.finally(() => pendingInvalidations.delete(p));
          (issued ??= []).push(p);
        }
      }
    }
    return issued && Promise.all(issued);
  }

  const served = (ino: number, offset: number, length: number) => {
    const span = cache[ino]!;
    if (offset < span.lo) span.lo = offset;
    if (offset + length > span.hi) span.hi = offset + length;
  };

  function viewNode(req: FuseRequest, fh: number): (Node & { kind: 'view' }) | undefined {
    const n = handles.get(fh)?.node ?? nodes[req.nodeid];
    return n?.kind === 'view' ? n : undefined;
  }

  const handles = new Map<number, Handle>();
  let nextHandle = 1;

  async function barrier(store: OpenStore, view: View): Promise<void> {
    dirty.delete(store);
    await view.flush();
  }

  return function dispatch(req: FuseRequest): void {
    const { unique, body } = req;
    switch (req.opcode) {
      case Op.READ: {
        const fh = u64(body, 0);
        const offset = u64(body, 8);
        const size = body.readUInt32LE(16);
        if (tracing) log.trace({ ino: req.nodeid, offset, size }, 'read');
        const h = handles.get(fh);
        if (h?.snapshot) {
          const n = Math.max(0, Math.min(size, h.snapshot.length - offset));
          sink.reply(unique, h.snapshot.subarray(offset, offset + n));
          return;
        }
        const node = viewNode(req, fh);
        if (!node) return void sink.replyError(unique, errno.EBADF);
        const view = node.file.view;
        const n = offset >= view.size ? 0 : Math.min(size, view.size - offset);
        if (n === 0) return void sink.reply(unique);
        served(node.ino, offset, n);
        const out = sink.replyBuffer(n);
        view.read(out.subarray(OUT_HEADER_SIZE, OUT_HEADER_SIZE + n), offset).then(() => sink.replyPrepared(unique, out, n), fail(req, { offset, size }));
        return;
      }

      case Op.WRITE: {
        const fh = u64(body, 0);
        const offset = u64(body, 8);
        const size = body.readUInt32LE(16);
        if (tracing) log.trace({ ino: req.nodeid, offset, size }, 'write');
        const node = viewNode(req, fh);
        if (!node || handles.get(fh)?.writable === false) return void sink.replyError(unique, errno.EBADF);
        const view = node.file.view;
        if (!view.writable) return void sink.replyError(unique, errno.EROFS);
        if (offset + size > view.size) {
          log.warn({ file: node.name, offset, size, fileSize: view.size }, 'write past the end of the disk refused');
          return void sink.replyError(unique, errno.ENOSPC);
        }
        const data = sink.writeData(req, size);
        served(node.ino, offset, size);
        dirty.add(node.file.store);
        view.write(data, offset).then(() => {
          sink.recycle(data);
          const pending = changed({ ino: node.ino, view }, offset, size, false);
          // With the writeback cache this WRITE is the kernel's own writeback, and invalidating a
          // sibling may need that sibling's writeback first: never hold it; FSYNC/FLUSH wait instead.
          if (writebackCache()) sink.reply(unique, encodeWriteOut(size));
          else afterInvalidations(pending, () => sink.reply(unique, encodeWriteOut(size)));
        }, fail(req, { offset, size }));
        return;
      }

      case Op.LOOKUP: {
        const n = byName.get(`${req.nodeid}/${decodeName(body)}`);
        if (!n) return void sink.replyError(unique, errno.ENOENT);
        cache[n.ino]!.lookups++;
        sink.reply(unique, encodeEntryOut(attrOf(n), ENTRY_VALID_S, n.kind === 'stats' ? 0 : ATTR_VALID_S));
        return;
      }

      case Op.FORGET:
        forget(req.nodeid, u64(body, 0));
        return;

      case Op.BATCH_FORGET: {
        const count = body.readUInt32LE(0);
        for (let i = 0; i < count && 8 + i * 16 + 16 <= body.length; i++) forget(u64(body, 8 + i * 16), u64(body, 16 + i * 16));
        return;
      }

      case Op.GETATTR: {
        const n = nodes[req.nodeid];
        if (!n) return void sink.replyError(unique, errno.ENOENT);
        sink.reply(unique, encodeAttrOut(attrOf(n), n.kind === 'stats' ? 0 : ATTR_VALID_S));
        return;
      }

      case Op.SETATTR: {
        const n = nodes[req.nodeid];
        if (!n) return void sink.replyError(unique, errno.ENOENT);
        const valid = body.readUInt32LE(0);
        if (valid & FATTR_MODE_UID_GID) return void sink.replyError(unique, errno.EPERM);
        if (valid & FATTR_SIZE) {
          const size = u64(body, 16);
          const current = attrOf(n).size;
          if (n.kind !== 'view' || size !== current) {
            log.warn({ file: n.name, size, current }, 'truncate refused: a disk file cannot change size');
            return void sink.replyError(unique, errno.EPERM);
          }
        }
        // Times are accepted and ignored, so that `touch` and `cp -p` onto a view work.
        sink.reply(unique, encodeAttrOut(attrOf(n), ATTR_VALID_S));
        return;
      }

      case Op.OPEN: {
        const n = nodes[req.nodeid];
        if (!n || n.kind === 'dir') return void sink.replyError(unique, n ? errno.EISDIR : errno.ENOENT);
        const wantsWrite = (body.readUInt32LE(0) & O_ACCMODE) !== 0;
        if (wantsWrite && (n.kind === 'stats' || !n.file.view.writable)) return void sink.replyError(unique, n.kind === 'stats' ? errno.EACCES : errno.EROFS);
        const fh = nextHandle++;
        if (n.kind === 'stats') {
          handles.set(fh, { node: n, writable: false, snapshot: statsBytes(n.store) });
          return void sink.reply(unique, encodeOpenOut(fh, OpenFlag.DIRECT_IO));
        }
        handles.set(fh, { node: n, writable: wantsWrite });
        // Without KEEP_CACHE the kernel drops the file's cache on every open.
        const span = cache[n.ino]!;
        span.lo = Infinity;
        span.hi = 0;
        sink.reply(unique, encodeOpenOut(fh, 0));
        return;
      }

      case Op.FLUSH:
      case Op.RELEASE: {
        const fh = u64(body, 0);
        const h = handles.get(fh);
        if (req.opcode === Op.RELEASE) handles.delete(fh);
        // Each close of a written descriptor is the store's barrier, as a block device's is.
        if (h?.writable && h.node.kind === 'view' && dirty.has(h.node.file.store)) {
          barrier(h.node.file.store, h.node.file.view).then(() => replyAfterPendingInvalidations(unique), fail(req, {}));
        } else replyAfterPendingInvalidations(unique);
        return;
      }

      case Op.FSYNC: {
        const node = viewNode(req, u64(body, 0));
        if (!node) return void sink.reply(unique);
        barrier(node.file.store, node.file.view).then(() => replyAfterPendingInvalidations(unique), fail(req, {}));
        return;
      }

      case Op.FALLOCATE: {
        const fh = u64(body, 0);
        const offset = u64(body, 8);
        const length = u64(body, 16);
        const mode = body.readUInt32LE(24);
        const node = viewNode(req, fh);
        if (!node) return void sink.replyError(unique, errno.EBADF);
        const view = node.file.view;
        if (!view.writable) return void sink.replyError(unique, errno.EROFS);
        const zeroing = mode & (Fallocate.PUNCH_HOLE | Fallocate.ZERO_RANGE);
        if (mode & ~(Fallocate.KEEP_SIZE | Fallocate.PUNCH_HOLE | Fallocate.ZERO_RANGE)) return void sink.replyError(unique, errno.EOPNOTSUPP);
        if ((mode & Fallocate.PUNCH_HOLE) && !(mode & Fallocate.KEEP_SIZE)) return void sink.replyError(unique, errno.EOPNOTSUPP);
        // A disk file never grows: past the end is refused unless the size is kept.
        if (offset + length > view.size && !(mode & Fallocate.KEEP_SIZE)) return void sink.replyError(unique, errno.EFBIG);
        if (!zeroing || offset >= view.size) return void sink.reply(unique); // preallocation: every byte already exists
        const n = Math.min(length, view.size - offset);
        if (tracing) log.trace({ ino: req.nodeid, offset, length: n, mode }, 'fallocate');
        dirty.add(node.file.store);
        view.discard(offset, n).then(() => {
          afterInvalidations(changed({ ino: node.ino, view }, offset, n, true), () => sink.reply(unique));
        }, fail(req, { offset, length, mode }));
        return;
      }

      case Op.OPENDIR:
        return void sink.reply(unique, encodeOpenOut(0, 0));

      case Op.READDIR: {
        const n = nodes[req.nodeid];
        if (n?.kind !== 'dir') return void sink.replyError(unique, errno.ENOTDIR);
        sink.reply(unique, encodeDirents(n.entries(), u64(body, 8), body.readUInt32LE(16)));
        return;
      }

      case Op.STATFS: {
        let total = 0;
        for (const f of table.files.values()) total += f.view.size;
        sink.reply(unique, encodeStatfsOut({ blocks: Math.ceil(total / 4096), bfree: 0, bavail: 0, files: table.files.size, ffree: 0, bsize: 4096, namelen: 255 }));
        return;
      }

      case Op.SYNCFS:
        table.flushAll().then(() => { dirty.clear(); sink.reply(unique); }, fail(req, {}));
        return;

      case Op.RELEASEDIR:
      case Op.FSYNCDIR:
      case Op.ACCESS:
      case Op.DESTROY:
        return void sink.reply(unique);

      case Op.INTERRUPT:
      case Op.NOTIFY_REPLY:
        return; // answered by the request itself when it completes

      case Op.CREATE: case Op.MKNOD: case Op.MKDIR: case Op.UNLINK: case Op.RMDIR: case Op.RENAME:
      case Op.RENAME2: case Op.LINK: case Op.SYMLINK: case Op.TMPFILE: case Op.SETXATTR: case Op.REMOVEXATTR:
        return void sink.replyError(unique, errno.EPERM); // the tree is the set of stores

      case Op.READLINK:
        return void sink.replyError(unique, errno.EINVAL);

      case Op.IOCTL:
        return void sink.replyError(unique, errno.ENOTTY);

      default:
        // GETXATTR, LISTXATTR, GETLK/SETLK (the kernel keeps locks itself), POLL, LSEEK, BMAP,
        // COPY_FILE_RANGE…: ENOSYS makes the kernel fall back and stop asking.
        sink.replyError(unique, errno.ENOSYS);
    }
  };

  function forget(ino: number, count: number): void {
    const span = cache[ino];
    if (span) span.lookups = Math.max(0, span.lookups - count);
  }
}
