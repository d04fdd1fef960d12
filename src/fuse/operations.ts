/**
 * The FUSE operation table over a MountTable: the thin layer between the kernel and the views.
 * Range checks happen here, once: reads are clamped at EOF (a short read only at EOF), writes that
 * would pass EOF are refused whole with ENOSPC, and truncation to another size is refused.
 */
import { constants } from 'node:os';
import { constants as fsConstants } from 'node:fs';
import type { Logger } from '../log.js';
import { CONTROL_DIR, type MountTable, type MountedFile } from '../mount/mount-table.js';
import { runSafely, type SafeHandlerOptions } from './safe-handler.js';

const { errno } = constants;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const O_ACCMODE = 3;

interface OpenFile {
  readonly file: MountedFile;
  readonly writable: boolean;
  dirty: boolean;
}

type Cb = (...args: any[]) => void;

export function createOperations(table: MountTable, options: SafeHandlerOptions): Record<string, Cb> {
  const log: Logger = options.log;
  const handles = new Map<number, OpenFile>();
  let nextHandle = 1;
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const trace = () => log.isLevelEnabled('trace');

  const dirStat = (mode: number) => ({
    mode: S_IFDIR | mode, size: 4096, nlink: 2, uid, gid,
    atime: table.createdAt, mtime: table.createdAt, ctime: table.createdAt,
  });
  const fileStat = (size: number, mode: number, mtime: number) => ({
    mode: S_IFREG | mode, size, nlink: 1, uid, gid, blksize: 4096, blocks: Math.ceil(size / 512),
    atime: mtime, mtime, ctime: mtime,
  });
  const fileOf = (path: string) => table.files.get(path.slice(1));
  const statsName = (path: string) => (path.startsWith(`/${CONTROL_DIR}/`) ? path.slice(CONTROL_DIR.length + 2) : undefined);
  // A stats file's size must agree between getattr and the reads that follow it, so one snapshot
  // of the JSON serves every request for half a second.
  const statsCache = new Map<string, { at: number; bytes: Buffer }>();
  const statsBytes = (name: string): Buffer | undefined => {
    const cached = statsCache.get(name);
    if (cached && Date.now() - cached.at < 500) return cached.bytes;
    const json = table.statsJson(name);
    if (json === undefined) return undefined;
    const bytes = Buffer.from(json);
    statsCache.set(name, { at: Date.now(), bytes });
    return bytes;
  };

  const safe = (op: string, ctx: Record<string, unknown>, cb: Cb, fn: (isOpen: () => boolean) => Promise<[number, unknown?]>) =>
    runSafely(op, ctx, options, cb, fn);

  return {
    getattr(path: string, cb: Cb) {
      safe('getattr', { path }, cb, async () => {
        if (path === '/') return [0, dirStat(0o755)];
        if (path === `/${CONTROL_DIR}`) return [0, dirStat(0o555)];
        const f = fileOf(path);
        if (f) return [0, fileStat(f.view.size, f.view.writable ? 0o644 : 0o444, f.mtime)];
        const name = statsName(path);
        if (name) {
          const bytes = statsBytes(name);
          if (bytes) return [0, fileStat(bytes.length, 0o444, Date.now())];
        }
        return [-errno.ENOENT];
      });
    },

    readdir(path: string, cb: Cb) {
      safe('readdir', { path }, cb, async () => {
        if (path === '/') return [0, [...table.files.keys(), CONTROL_DIR]];
        if (path === `/${CONTROL_DIR}`) return [0, table.statsFileNames()];
        return [-errno.ENOTDIR];
      });
    },

    open(path: string, flags: number, cb: Cb) {
      safe('open', { path, flags }, cb, async () => {
        const wantsWrite = (flags & O_ACCMODE) !== fsConstants.O_RDONLY;
        const f = fileOf(path);
        if (!f) {
          const name = statsName(path);
          if (name && statsBytes(name)) return wantsWrite ? [-errno.EACCES] : [0, 0];
          return [-errno.ENOENT];
        }
        if (wantsWrite && !f.view.writable) return [-errno.EROFS];
        const fh = nextHandle++;
        if (nextHandle > 0x7fffffff) nextHandle = 1; // handles are 32-bit and 0 means "none"
        handles.set(fh, { file: f, writable: wantsWrite, dirty: false });
        return [0, fh];
      });
    },

    release(path: string, fd: number, cb: Cb) {
      safe('release', { path, fd }, cb, async () => {
        const h = handles.get(fd);
        handles.delete(fd);
        if (h?.dirty) await h.file.view.flush();
        return [0];
      });
    },

    read(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      safe('read', { path, len, pos }, cb, async (isOpen) => {
        if (trace()) log.trace({ path, len, pos }, 'read');
        const f = handles.get(fd)?.file ?? fileOf(path);
        if (!f) {
          const name = statsName(path);
          const bytes = name ? statsBytes(name) : undefined;
          if (!bytes) return [-errno.ENOENT];
          const n = Math.max(0, Math.min(len, bytes.length - pos));
          if (n > 0) bytes.copy(buf, 0, pos, pos + n);
          return [n];
        }
        const size = f.view.size;
        if (pos >= size) return [0];
        const n = Math.min(len, size - pos);
        // Read into a private buffer and copy only while the request is still open: after a
        // timeout the kernel's buffer is gone and touching it would crash the process.
        const data = Buffer.allocUnsafe(n);
        await f.view.read(data, pos);
        if (!isOpen()) return [-errno.EIO];
        data.copy(buf, 0, 0, n);
        return [n];
      });
    },

    write(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      // Copy before anything asynchronous: the kernel's buffer is valid only until we reply.
      // (allocUnsafe + copy: Buffer.from would zero-fill the new memory first.)
      const data = Buffer.allocUnsafe(len);
      buf.copy(data, 0, 0, len);
      safe('write', { path, len, pos }, cb, async () => {
        if (trace()) log.trace({ path, len, pos }, 'write');
        const h = handles.get(fd);
        const f = h?.file ?? fileOf(path);
        if (!f) return [-errno.ENOENT];
        if (h && !h.writable) return [-errno.EBADF];
        if (!f.view.writable) return [-errno.EROFS];
        if (pos + len > f.view.size) {
          log.warn({ path, pos, len, size: f.view.size }, 'write past the end of the disk refused');
          return [-errno.ENOSPC];
        }
        await f.view.write(data, pos);
        f.mtime = Date.now();
        if (h) h.dirty = true;
        return [len];
      });
    },

    flush(path: string, fd: number, cb: Cb) {
      safe('flush', { path, fd }, cb, async () => {
        const h = handles.get(fd);
        if (h?.dirty) {
          await h.file.view.flush();
          h.dirty = false;
        }
        return [0];
      });
    },

    fsync(path: string, datasync: number, fd: number, cb: Cb) {
      safe('fsync', { path, fd }, cb, async () => {
        const f = handles.get(fd)?.file ?? fileOf(path);
        if (f) await f.view.flush();
        const h = handles.get(fd);
        if (h) h.dirty = false;
        return [0];
      });
    },

    truncate(path: string, size: number, cb: Cb) {
      safe('truncate', { path, size }, cb, async () => truncateTo(path, size));
    },

    ftruncate(path: string, _fd: number, size: number, cb: Cb) {
      safe('ftruncate', { path, size }, cb, async () => truncateTo(path, size));
    },

    utimens(path: string, _atime: number, _mtime: number, cb: Cb) {
      // Accepted and ignored, so that `touch` and `cp -p` onto a view do not fail.
      safe('utimens', { path }, cb, async () => (fileOf(path) || path === '/' ? [0] : [-errno.ENOENT]));
    },

    statfs(path: string, cb: Cb) {
      safe('statfs', { path }, cb, async () => {
        let total = 0;
        for (const f of table.files.values()) total += f.view.size;
        const blocks = Math.min(Math.ceil(total / 4096), 0xffffffff); // the binding passes 32 bits
        return [0, { bsize: 4096, frsize: 4096, blocks, bfree: 0, bavail: 0, files: table.files.size, ffree: 0, favail: 0, namemax: 255 }];
      });
    },
  };

  function truncateTo(path: string, size: number): [number] {
    const f = fileOf(path);
    if (!f) return [-errno.ENOENT];
    if (size === f.view.size) return [0];
    log.warn({ path, size, current: f.view.size }, 'truncate refused: a disk file cannot change size');
    return [-errno.EPERM];
  }
}
