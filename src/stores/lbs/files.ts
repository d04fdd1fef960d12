/**
 * The file layer under an LBS store: the few operations it does on its two files. The store takes
 * these as parameters so tests can substitute a layer that records writes and syncs and can cut
 * a file at any byte (test/lbs/crash-files.ts); production uses node:fs file handles.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants, read as fsRead, write as fsWrite } from 'node:fs';
import { VdiskError } from '../../errors.js';

export interface LbsFile {
  /** Reads up to `length` bytes at `position` into `buf` at `offset`; returns how many were read. */
  read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Writes all `length` bytes of `buf` from `offset` at `position`. */
  write(buf: Uint8Array, offset: number, length: number, position: number): Promise<void>;
  /** Makes every completed write durable (fdatasync). */
  datasync(): Promise<void>;
  truncate(size: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

/** Reads exactly `length` bytes or throws EIO naming the file. */
export async function readFully(f: LbsFile, buf: Uint8Array, offset: number, length: number, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const n = await f.read(buf, offset + done, length - done, position + done);
    if (n === 0) throw new VdiskError('EIO', `unexpected end of ${what} at offset ${position + done}`);
    done += n;
  }
}

export class NodeFile implements LbsFile {
  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
  ) {}

  static async open(path: string, options: { readOnly?: boolean; what: string }): Promise<NodeFile> {
    try {
      return new NodeFile(await open(path, options.readOnly ? constants.O_RDONLY : constants.O_RDWR), path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new VdiskError('ENOENT', `${options.what} ${path} does not exist`, { cause: err });
      if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') {
        throw new VdiskError(code, `cannot open ${options.what} ${path} for ${options.readOnly ? 'reading' : 'writing'}: ${code}`, { cause: err });
      }
      throw err;
    }
  }

  // The hot path uses the callback API on the raw descriptor (as FileDevice does): measured faster
  // than FileHandle's promise methods.
  read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const fd = this.handle.fd;
    return new Promise((done, fail) => fsRead(fd, buf, offset, length, position, (err, n) => (err ? fail(err) : done(n))));
  }

  async write(buf: Uint8Array, offset: number, length: number, position: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const fd = this.handle.fd;
      done += await new Promise<number>((ok, fail) =>
        fsWrite(fd, buf, offset + done, length - done, position + done, (err, n) => (err ? fail(err) : ok(n))),
      );
    }
  }

  datasync(): Promise<void> {
    return this.handle.datasync();
  }

  truncate(size: number): Promise<void> {
    return this.handle.truncate(size);
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
