/**
 * MemoryDevice: a sparse in-memory disk. It is the reference oracle of the conformance suite, so it
 * is written to be obviously right rather than fast: fixed-size chunks allocated on first write,
 * unwritten chunks read as zeros.
 */
import type { BlockDevice, Capabilities } from './block-device.js';

const CHUNK = 64 * 1024;

export class MemoryDevice implements BlockDevice {
  readonly capabilities: Capabilities = { writable: true, flush: false, discard: true, preferredBlockSize: 512 };
  private readonly chunks = new Map<number, Uint8Array>();

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad size ${size}`);
  }

  async read(dest: Uint8Array, offset: number): Promise<void> {
    this.forEachPiece(offset, dest.length, (chunk, inChunk, at, n) => {
      const data = this.chunks.get(chunk);
      if (data) dest.set(data.subarray(inChunk, inChunk + n), at);
      else dest.fill(0, at, at + n);
    });
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.forEachPiece(offset, src.length, (chunk, inChunk, at, n) => {
      let data = this.chunks.get(chunk);
      if (!data) {
        data = new Uint8Array(CHUNK);
        this.chunks.set(chunk, data);
      }
      data.set(src.subarray(at, at + n), inChunk);
    });
  }

  async discard(offset: number, length: number): Promise<void> {
    this.forEachPiece(offset, length, (chunk, inChunk, _at, n) => {
      if (n === CHUNK) this.chunks.delete(chunk);
      else this.chunks.get(chunk)?.fill(0, inChunk, inChunk + n);
    });
  }

  /** Bytes of memory held (for tests of sparseness). */
  get allocatedBytes(): number {
    return this.chunks.size * CHUNK;
  }

  private forEachPiece(
    offset: number,
    length: number,
    fn: (chunk: number, inChunk: number, at: number, n: number) => void,
  ): void {
    let at = 0;
    while (at < length) {
      const pos = offset + at;
      const chunk = Math.floor(pos / CHUNK);
      const inChunk = pos - chunk * CHUNK;
      const n = Math.min(CHUNK - inChunk, length - at);
      fn(chunk, inChunk, at, n);
      at += n;
    }
  }
}
