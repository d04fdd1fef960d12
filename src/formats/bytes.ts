/**
 * Small byte-level helpers shared by the pure format modules (VHDX, VHD, VMDK): 64-bit integers as
 * safe JavaScript numbers, fixed ASCII signatures, UTF-16 strings in either byte order.
 *
 * Offsets and sizes in disk formats are u64 on disk but always below 2^53 in practice (VHDX caps a
 * disk at 64 TiB); reading one that is not a safe integer is a malformed file, and says so.
 */
import { VdiskError } from '../errors.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

/** A DataView over exactly the bytes of `bytes` (which may be a subarray). */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Throws a format error unless `bytes` holds at least `size` bytes. */
export function requireLength(bytes: Uint8Array, size: number, what: string): void {
  if (bytes.length < size) {
    throw new VdiskError('EINVAL', `${what}: need ${size} bytes, got ${bytes.length}`);
  }
}

export function readU64LE(bytes: Uint8Array, offset: number, what = 'u64 field'): number {
  const v = viewOf(bytes);
  const lo = v.getUint32(offset, true);
  const hi = v.getUint32(offset + 4, true);
  return combine(hi, lo, what);
}

export function readU64BE(bytes: Uint8Array, offset: number, what = 'u64 field'): number {
  const v = viewOf(bytes);
  const hi = v.getUint32(offset, false);
  const lo = v.getUint32(offset + 4, false);
  return combine(hi, lo, what);
}

function combine(hi: number, lo: number, what: string): number {
  // 2^53 = hi < 2^21.
  if (hi >= 0x200000) {
    throw new VdiskError('EINVAL', `${what} is 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')}, too large to be a byte offset or size`);
  }
  return hi * 0x100000000 + lo;
}

export function writeU64LE(bytes: Uint8Array, offset: number, value: number): void {
  assertU64(value);
  const v = viewOf(bytes);
  v.setUint32(offset, value % 0x100000000, true);
  v.setUint32(offset + 4, Math.floor(value / 0x100000000), true);
}

export function writeU64BE(bytes: Uint8Array, offset: number, value: number): void {
  assertU64(value);
  const v = viewOf(bytes);
  v.setUint32(offset, Math.floor(value / 0x100000000), false);
  v.setUint32(offset + 4, value % 0x100000000, false);
}

function assertU64(value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not an unsigned 64-bit safe integer: ${value}`);
}

export function readBigU64LE(bytes: Uint8Array, offset: number): bigint {
  return viewOf(bytes).getBigUint64(offset, true);
}

export function writeBigU64LE(bytes: Uint8Array, offset: number, value: bigint): void {
  viewOf(bytes).setBigUint64(offset, value, true);
}

/** True when `bytes` at `offset` hold exactly the ASCII characters of `signature`. */
export function hasSignature(bytes: Uint8Array, offset: number, signature: string): boolean {
  if (offset + signature.length > bytes.length) return false;
  for (let i = 0; i < signature.length; i++) {
    if (bytes[offset + i] !== signature.charCodeAt(i)) return false;
  }
  return true;
}

export function writeAscii(bytes: Uint8Array, offset: number, text: string): void {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) throw new RangeError(`not ASCII: ${JSON.stringify(text)}`);
    bytes[offset + i] = c;
  }
}

/** One byte per code unit (0–255): the inverse of readAscii for any bytes it read. */
export function writeLatin1(bytes: Uint8Array, offset: number, text: string): void {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`not a byte string: ${JSON.stringify(text)}`);
    bytes[offset + i] = c;
  }
}

export function readAscii(bytes: Uint8Array, offset: number, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) s += String.fromCharCode(bytes[offset + i]!);
  return s;
}

/** UTF-16 code units of `text` in little-endian order (VHDX strings, VHD W2ru/W2ku locators). */
export function encodeUtf16LE(text: string): Uint8Array {
  const out = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    out[2 * i] = c & 0xff;
    out[2 * i + 1] = c >>> 8;
  }
  return out;
}

/** Decodes UTF-16LE; stops at the first NUL code unit when `stopAtNul`. */
export function decodeUtf16LE(bytes: Uint8Array, stopAtNul = false): string {
  let s = '';
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const c = bytes[i]! | (bytes[i + 1]! << 8);
    if (stopAtNul && c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

/** UTF-16 big-endian (the VHD dynamic header's Parent Unicode Name). */
export function encodeUtf16BE(text: string): Uint8Array {
  const out = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    out[2 * i] = c >>> 8;
    out[2 * i + 1] = c & 0xff;
  }
  return out;
}

export function decodeUtf16BE(bytes: Uint8Array, stopAtNul = false): string {
  let s = '';
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const c = (bytes[i]! << 8) | bytes[i + 1]!;
    if (stopAtNul && c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

export function isAllZero(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

/** Asserts at module load that a layout table adds up (struct sizes, as QEMU's vhdx.h does). */
export function assertSize(what: string, actual: number, expected: number): void {
  if (actual !== expected) throw new Error(`format table ${what}: size ${actual}, expected ${expected}`);
}
