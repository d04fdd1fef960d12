/**
 * One layer of a differencing chain: a real VHD or VHDX file (fixed, dynamic or differencing),
 * read and written through a small interface. The chain device (chain-device.ts) stacks layers;
 * the parent resolver (parent-resolver.ts) finds each layer's parent from its locators.
 *
 * A layer never reads another file itself: `read` takes a `below` callback that supplies the bytes
 * of the sectors it does not hold (its parent chain, or zeros for the ultimate parent).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants, read as fsRead, write as fsWrite } from 'node:fs';
import { VdiskError, ioError } from '../../errors.js';

export type LayerFormat = 'vhd' | 'vhdx';
export type LayerType = 'fixed' | 'dynamic' | 'differencing';

/** Fills dest with the bytes at [offset, offset + dest.length) of the layers below. */
export type ReadBelow = (dest: Uint8Array, offset: number) => Promise<void>;

/** How a differencing layer names its parent. */
export interface ParentLink {
  /** Identities the parent may have: VHD Unique Id, or VHDX DataWriteGuid (parent_linkage, parent_linkage2). */
  ids: string[];
  /** Paths to try, in order, already mapped to this machine (absolute), with where each came from. */
  candidates: { path: string; source: string }[];
}

export interface LayerInfo {
  path: string;
  format: LayerFormat;
  type: LayerType;
  size: number;
  blockSize: number;
  fileSize: number;
  allocatedBlocks: number;
  totalBlocks: number;
  identity: string;
}

export interface Layer {
  readonly path: string;
  readonly format: LayerFormat;
  readonly type: LayerType;
  /** Virtual disk size in bytes. */
  readonly size: number;
  readonly blockSize: number;
  /** Logical sector size: the unit of the presence bitmaps and of writes (512; VHDX may say 4096). */
  readonly sectorSize: number;
  /** Writes are widened to multiples of this (whole sectors; whole bitmap bytes for VHD, see vhd-image.ts). */
  readonly writeGranularity: number;
  /** VHD: the footer's Unique Id. VHDX: the current header's DataWriteGuid (what children record). */
  readonly identity: string;
  readonly parent?: ParentLink;
  readonly writable: boolean;
  /** Reads [offset, offset + dest.length); sectors this layer lacks come from `below` (differencing) or are zeros. */
  read(dest: Uint8Array, offset: number, below: ReadBelow): Promise<void>;
  /**
   * Writes sector-aligned data (offset and length multiples of 512) and marks the sectors present.
   * The caller serializes writes. Metadata (BAT, bitmaps) reaches the file at the next flush().
   */
  write(src: Uint8Array, offset: number): Promise<void>;
  /** Makes every write so far durable, with its metadata, in the crash-safe order documented in docs/chains.md. */
  flush(): Promise<void>;
  /** Flushes and ends the write session, so that other tools see a clean file (VHDX: empty log). */
  seal(): Promise<void>;
  close(): Promise<void>;
  stats(): Record<string, unknown>;
  /** Byte ranges [offset, length] of the virtual disk this layer holds (for commit), in order. */
  presentRanges(): AsyncIterable<[number, number]>;
  info(): LayerInfo;
}

export const SECTOR = 512;

/**
 * A recorder of every mutation made to a layer file, in order (used by the crash test to rebuild
 * the file as it would be after a crash at any point).
 */
export type FileJournal = (op: { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'truncate'; size: number } | { kind: 'sync' }) => void;

let journalHook: ((path: string) => FileJournal | undefined) | undefined;
/** Test hook: a journal for every layer file opened for writing from now on (undefined to stop). */
export function setFileJournalHook(hook: ((path: string) => FileJournal | undefined) | undefined): void {
  journalHook = hook;
}

/** A layer's file: positional reads and writes on the raw descriptor (the fast path FileDevice uses). */
export class LayerFile {
  private journal?: FileJournal;
  bytesRead = 0;
  bytesWritten = 0;
  syncs = 0;

  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    public size: number,
    readonly writable: boolean,
  ) {
    if (writable) this.journal = journalHook?.(path);
  }

  static async open(path: string, writable: boolean): Promise<LayerFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, writable ? constants.O_RDWR : constants.O_RDONLY);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new VdiskError('ENOENT', `disk file ${path} does not exist`, { cause: err });
      if (code === 'EACCES' || code === 'EROFS' || code === 'EISDIR') {
        throw new VdiskError(code, `cannot open ${path} for ${writable ? 'writing' : 'reading'}: ${code}`, { cause: err });
      }
      throw err;
    }
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      throw new VdiskError('EINVAL', `${path} is not a regular file`);
    }
    return new LayerFile(handle, path, st.size, writable);
  }

  /** Reads exactly dest.length bytes at `offset`; reading past the end of the file is an error (a truncated file). */
  async read(dest: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < dest.length) {
      const n = await new Promise<number>((res, rej) =>
        fsRead(this.handle.fd, dest, done, dest.length - done, offset + done, (err, k) => (err ? rej(err) : res(k))),
      );
      if (n === 0) throw ioError(`${this.path} ends at ${offset + done}, but the image needs bytes up to ${offset + dest.length} (truncated file?)`);
      done += n;
    }
    this.bytesRead += done;
  }

  async readBytes(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.read(out, offset);
    return out;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    if (!this.writable) throw new VdiskError('EROFS', `${this.path} is open read-only`);
    this.journal?.({ kind: 'write', offset, data: Uint8Array.from(src) });
    let done = 0;
    while (done < src.length) {
      done += await new Promise<number>((res, rej) =>
        fsWrite(this.handle.fd, src, done, src.length - done, offset + done, (err, k) => (err ? rej(err) : res(k))),
      );
    }
    this.bytesWritten += done;
    if (offset + src.length > this.size) this.size = offset + src.length;
  }

  async truncate(size: number): Promise<void> {
    this.journal?.({ kind: 'truncate', size });
    await this.handle.truncate(size);
    this.size = size;
  }

  async sync(): Promise<void> {
    this.syncs++;
    this.journal?.({ kind: 'sync' });
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/**
 * Calls `fn` for each run of sectors [first, first + count) with equal presence, where
 * `present(s)` says whether sector s is present. Byte-at-a-time skipping keeps it cheap on big runs.
 */
export function forEachRun(present: (sector: number) => boolean, first: number, count: number, fn: (start: number, length: number, isPresent: boolean) => void): void {
  let s = first;
  const end = first + count;
  while (s < end) {
    const p = present(s);
    let e = s + 1;
    while (e < end && present(e) === p) e++;
    fn(s, e - s, p);
    s = e;
  }
}

/** Zero-fill helper for the ultimate parent. */
export const readZeros: ReadBelow = async (dest) => {
  dest.fill(0);
};

/**
 * Reads the part of one block at dest (virtual offset `voff`, `inBlock` bytes into the block) whose
 * sectors alternate between "in this file" and "absent" (from below, or zeros). Rather than one
 * request per run, it makes at most two: the absent source for the whole range, and one file read
 * spanning the first to the last present run; the present runs are then laid over. On fragmented
 * differencing blocks this is several times faster than a request per run.
 */
export async function readMixedBlock(
  dest: Uint8Array,
  voff: number,
  inBlock: number,
  present: (sector: number) => boolean,
  sectorSize: number,
  readFile: (buf: Uint8Array, inBlockOffset: number) => Promise<void>,
  absent: ReadBelow | undefined,
): Promise<void> {
  const n = dest.length;
  const s0 = Math.floor(inBlock / sectorSize);
  const s1 = Math.ceil((inBlock + n) / sectorSize);
  const runs: [number, number][] = [];
  let absentBytes = 0;
  forEachRun(present, s0, s1 - s0, (s, count, isPresent) => {
    const a = Math.max(inBlock, s * sectorSize);
    const b = Math.min(inBlock + n, (s + count) * sectorSize);
    if (isPresent) runs.push([a, b]);
    else absentBytes += b - a;
  });
  if (!runs.length) return absent ? absent(dest, voff) : void dest.fill(0);
  if (!absentBytes) return readFile(dest, inBlock);
  const first = runs[0]![0];
  const last = runs[runs.length - 1]![1];
  const tmp = new Uint8Array(last - first);
  await Promise.all([readFile(tmp, first), absent ? absent(dest, voff) : dest.fill(0)]);
  for (const [a, b] of runs) dest.set(tmp.subarray(a - first, b - first), a - inBlock);
}

const ZEROS = Buffer.alloc(1 << 20);
/** True when every byte is zero (memcmp speed, 1 MiB at a time). */
export function isZeroData(data: Uint8Array): boolean {
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, data.length - at);
    if (Buffer.compare(Buffer.from(data.buffer, data.byteOffset + at, n), ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}
