/**
 * Per-block checksums of the plaintext, 32 bits each (what the block map holds per block).
 *
 * Measured on 4 KiB blocks (Node 20, 2 vCPUs, CPU time, best of 7; see docs/lbs-format.md):
 *   Fletcher-32, WebAssembly SIMD (runs) ....... ~15 GB/s incl. the copy into wasm memory
 *   Fletcher-32, plain JS, int32 sums .......... ~3.5–4.4 GB/s (~1 µs/block)
 *   SHA-256 via crypto.hash, truncated .......... ~1.2 GB/s (3.4 µs/block)
 *   SHA-256 via createHash().digest() ........... ~0.96 GB/s (4.3 µs/block)
 * Fletcher-32 is the default: it is the faster one and catches what a checksum here must catch
 * (torn, stale, misplaced or bit-rotted blocks). SHA-256 (truncated to 32 bits) is there for
 * users who want a cryptographic mixer; the keyed variant comes with encryption.
 */
import { createHash } from 'node:crypto';
import * as nodeCrypto from 'node:crypto';
import { ChecksumId } from './format.js';
import { VdiskError } from '../../errors.js';
import { makeSimdFletcherRun } from './fletcher-simd.js';

export type BlockChecksum = (data: Uint8Array) => number;

/**
 * Fletcher-32 over little-endian 16-bit words, sums modulo 65535, result (sum2 << 16) | sum1.
 * The loop reads two 16-bit words per 32-bit load and stays in int32 arithmetic: reducing every
 * 64 loads (128 words) keeps sum2 below 2^31 (sum1 ≤ 65534 + 128 × 65535 ≈ 8.4 M, sum2 ≤ 1.1 G).
 * Measured 3.5–4.4 GB/s on 4 KiB blocks, against ~2.1 GB/s for the same sums in doubles.
 */
export function fletcher32Words(words: Uint32Array, start: number, end: number): number {
  let s1 = 0;
  let s2 = 0;
  let i = start;
  while (i < end) {
    const stop = Math.min(end, i + 64);
    for (; i + 1 < stop; i += 2) {
      let v = words[i]!;
      s1 = (s1 + (v & 0xffff)) | 0;
      s2 = (s2 + s1) | 0;
      s1 = (s1 + (v >>> 16)) | 0;
      s2 = (s2 + s1) | 0;
      v = words[i + 1]!;
      s1 = (s1 + (v & 0xffff)) | 0;
      s2 = (s2 + s1) | 0;
      s1 = (s1 + (v >>> 16)) | 0;
      s2 = (s2 + s1) | 0;
    }
    if (i < stop) {
      const v = words[i++]!;
      s1 = (s1 + (v & 0xffff)) | 0;
      s2 = (s2 + s1) | 0;
      s1 = (s1 + (v >>> 16)) | 0;
      s2 = (s2 + s1) | 0;
    }
    s1 %= 65535;
    s2 %= 65535;
  }
  return ((s2 << 16) | s1) >>> 0;
}

/** Words of `data` as a Uint32Array: a view when aligned, else a zero-padded copy. */
function wordsOf(data: Uint8Array): Uint32Array {
  if ((data.byteOffset & 3) === 0 && (data.length & 3) === 0) return new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
  const copy = new Uint8Array((data.length + 3) & ~3);
  copy.set(data);
  return new Uint32Array(copy.buffer);
}

export function fletcher32(data: Uint8Array): number {
  const w = wordsOf(data);
  return fletcher32Words(w, 0, w.length);
}

/** Checksums of `count` consecutive blocks of `buf` into `out` (one word view for the whole run). */
export function fletcher32Run(buf: Uint8Array, blockSize: number, count: number, out: Uint32Array): void {
  const w = wordsOf(buf.subarray(0, blockSize * count));
  const per = blockSize >>> 2;
  for (let i = 0; i < count; i++) out[i] = fletcher32Words(w, i * per, (i + 1) * per);
}

const hashOnce = (nodeCrypto as unknown as { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Buffer }).hash;

/** The first 4 bytes (little-endian) of SHA-256. */
export function sha256_32(data: Uint8Array): number {
  if (hashOnce) return hashOnce('sha256', data, 'buffer').readUInt32LE(0);
  return createHash('sha256').update(data).digest().readUInt32LE(0);
}

export interface ChecksumKind {
  readonly id: ChecksumId;
  readonly name: string;
  /** The checksum of one block. */
  readonly fn: BlockChecksum;
  /** The checksums of `count` consecutive blocks at the start of `buf`, into `out`. */
  readonly run: (buf: Uint8Array, blockSize: number, count: number, out: Uint32Array) => void;
}

function perBlock(fn: BlockChecksum): ChecksumKind['run'] {
  return (buf, blockSize, count, out) => {
    for (let i = 0; i < count; i++) out[i] = fn(buf.subarray(i * blockSize, (i + 1) * blockSize));
  };
}

export const CHECKSUMS: readonly ChecksumKind[] = [
  // Runs of blocks (every read, and each written block) go through WebAssembly SIMD where available.
  { id: ChecksumId.Fletcher32, name: 'fletcher32', fn: fletcher32, run: makeSimdFletcherRun() ?? fletcher32Run },
  { id: ChecksumId.Sha256_32, name: 'sha256', fn: sha256_32, run: perBlock(sha256_32) },
];

export const DEFAULT_CHECKSUM = 'fletcher32';

export function checksumByName(name: string): ChecksumKind {
  const k = CHECKSUMS.find((c) => c.name === name.toLowerCase());
  if (!k) throw new VdiskError('EINVAL', `unknown checksum "${name}" (known: ${CHECKSUMS.map((c) => c.name).join(', ')})`);
  return k;
}

export function checksumById(id: number, where: string): ChecksumKind {
  const k = CHECKSUMS.find((c) => c.id === id);
  if (!k) throw new VdiskError('EINVAL', `${where}: checksum algorithm ${id} is not supported by this vdiskfs`);
  return k;
}
