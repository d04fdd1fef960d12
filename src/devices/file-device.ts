/**
 * FileDevice: a flat raw image file (the "flat" store, and the building block of others).
 * Reads past the end of a shorter-than-declared file are refused at open, not papered over.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants, fstatSync, read as fsRead, write as fsWrite } from 'node:fs';
import type { BlockDevice, Capabilities } from './block-device.js';
import { VdiskError, ioError } from '../errors.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, nativeSys } from '../util/native-sys.js';

const sys = nativeSys();
/** Reads up to this size may be served synchronously from the page cache. */
const NOWAIT_MAX = 128 * 1024;

export interface FileDeviceOptions {
  readOnly?: boolean;
  /** The size the caller expects; the file must have exactly this size. */
  expectedSize?: number;
}

export class FileDevice implements BlockDevice {
  readonly capabilities: Capabilities;
  private bytesRead = 0;
  private bytesWritten = 0;
  private flushes = 0;
  private bytesDiscarded = 0;
  private readonly inFlight = new Set<{ start: number; end: number; done: Promise<void> }>();

  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    readonly size: number,
    readOnly: boolean,
  ) {
    this.capabilities = { writable: !readOnly, flush: true, discard: !readOnly && sys !== undefined, preferredBlockSize: 4096 };
  }

  static async open(path: string, options: FileDeviceOptions = {}): Promise<FileDevice> {
    let handle: FileHandle;
    try {
      handle = await open(path, options.readOnly ? constants.O_RDONLY : constants.O_RDWR);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new VdiskError('ENOENT', `store file ${path} does not exist`, { cause: err });
      if (code === 'EACCES' || code === 'EROFS') {
        throw new VdiskError(code, `cannot open store file ${path} for ${options.readOnly ? 'reading' : 'writing'}: ${code}`, { cause: err });
      }
      throw err;
    }
    const stat = await handle.stat();
    if (!stat.isFile() && !stat.isBlockDevice()) {
      await handle.close();
      throw new VdiskError('EINVAL', `store file ${path} is not a regular file`);
    }
    const size = stat.size;
    if (options.expectedSize !== undefined && size !== options.expectedSize) {
      await handle.close();
      throw new VdiskError(
        'EINVAL',
        `store file ${path} is ${size} bytes, but its descriptor says ${options.expectedSize}: was it truncated or replaced?`,
      );
    }
    return new FileDevice(handle, path, size, !!options.readOnly);
  }

  // The hot path uses the callback API on the raw descriptor: measured faster than FileHandle's
  // promise methods, which add a round of bookkeeping per call.
  async read(dest: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    // Small reads the page cache can answer are served at once on this thread (preadv2 with
    // RWF_NOWAIT never waits for the disk): a thread-pool round trip costs more than the copy.
    if (sys && dest.length <= NOWAIT_MAX) {
      const n = sys.preadNowait(this.handle.fd, dest, offset);
      if (n > 0) done = n;
    }
    while (done < dest.length) {
      const bytesRead = await preadOnce(this.handle.fd, dest, done, dest.length - done, offset + done);
      if (bytesRead === 0) throw ioError(`unexpected end of file in ${this.path} at offset ${offset + done}`);
      done += bytesRead;
    }
    this.bytesRead += done;
  }

  /**
   * Writes run concurrently on the thread pool, which may reorder them; a write (or discard) that
   * overlaps one still in flight waits for it, so overlapping changes land in arrival order.
   */
  write(src: Uint8Array, offset: number): Promise<void> {
    return this.ordered(offset, offset + src.length, async () => {
      let done = 0;
      while (done < src.length) {
        done += await pwriteOnce(this.handle.fd, src, done, src.length - done, offset + done);
      }
      this.bytesWritten += done;
    });
  }

  /** Punches a hole (the range reads as zeros and frees its space); zeros where holes are not supported. */
  discard(offset: number, length: number): Promise<void> {
    return this.ordered(offset, offset + length, async () => {
      const rc = sys ? sys.fallocate(this.handle.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) : -1;
      if (rc === 0) {
        this.bytesDiscarded += length;
        return;
      }
      const zeros = new Uint8Array(Math.min(length, 1 << 20));
      for (let done = 0; done < length;) {
        const n = Math.min(zeros.length, length - done);
        let k = 0;
        while (k < n) k += await pwriteOnce(this.handle.fd, zeros, k, n - k, offset + done + k);
        done += n;
      }
      this.bytesWritten += length;
    });
  }

  private async ordered(start: number, end: number, run: () => Promise<void>): Promise<void> {
    const before: Promise<void>[] = [];
    for (const w of this.inFlight) if (w.start < end && start < w.end) before.push(w.done);
    const entry = { start, end, done: Promise.resolve() };
    entry.done = (async () => {
      if (before.length) await Promise.allSettled(before);
      await run();
    })();
    this.inFlight.add(entry);
    try {
      await entry.done;
    } finally {
      this.inFlight.delete(entry);
    }
  }

  async flush(): Promise<void> {
    this.flushes++;
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    try {
      if (this.capabilities.writable) await this.handle.datasync();
    } finally {
      await this.handle.close();
    }
  }

  stats(): Record<string, unknown> {
    let allocatedBytes: number | undefined;
    try {
      allocatedBytes = fstatSync(this.handle.fd).blocks * 512;
    } catch {
      /* closed */
    }
    return { bytesRead: this.bytesRead, bytesWritten: this.bytesWritten, bytesDiscarded: this.bytesDiscarded, flushes: this.flushes, allocatedBytes };
  }
}

function preadOnce(fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fsRead(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

function pwriteOnce(fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fsWrite(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}
