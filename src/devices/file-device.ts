/**
 * FileDevice: a flat raw image file (the "flat" store, and the building block of others).
 * Reads past the end of a shorter-than-declared file are refused at open, not papered over.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants, read as fsRead, write as fsWrite } from 'node:fs';
import type { BlockDevice, Capabilities } from './block-device.js';
import { VdiskError, ioError } from '../errors.js';

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
  private readonly inFlight = new Set<{ start: number; end: number; done: Promise<void> }>();

  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    readonly size: number,
    readOnly: boolean,
  ) {
    this.capabilities = { writable: !readOnly, flush: true, discard: false, preferredBlockSize: 4096 };
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
    while (done < dest.length) {
      const bytesRead = await preadOnce(this.handle.fd, dest, done, dest.length - done, offset + done);
      if (bytesRead === 0) throw ioError(`unexpected end of file in ${this.path} at offset ${offset + done}`);
      done += bytesRead;
    }
    this.bytesRead += done;
  }

  /**
   * Writes run concurrently on the thread pool, which may reorder them; a write that overlaps one
   * still in flight waits for it, so overlapping writes land in arrival order.
   */
  async write(src: Uint8Array, offset: number): Promise<void> {
    const end = offset + src.length;
    const before: Promise<void>[] = [];
    for (const w of this.inFlight) if (w.start < end && offset < w.end) before.push(w.done);
    const entry = { start: offset, end, done: Promise.resolve() };
    entry.done = (async () => {
      if (before.length) await Promise.allSettled(before);
      let done = 0;
      while (done < src.length) {
        done += await pwriteOnce(this.handle.fd, src, done, src.length - done, offset + done);
      }
      this.bytesWritten += done;
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
    return { bytesRead: this.bytesRead, bytesWritten: this.bytesWritten, flushes: this.flushes };
  }
}

function preadOnce(fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fsRead(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

function pwriteOnce(fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fsWrite(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}
