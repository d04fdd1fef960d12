/**
 * GUIDs/UUIDs and their two on-disk byte orders.
 *
 * A GUID is handled as its canonical lower-case text, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
 * - VHDX stores GUIDs in the Microsoft mixed-endian layout: Data1 (u32 LE), Data2 (u16 LE),
 *   Data3 (u16 LE), then Data4 (8 bytes as they are) — Python's `uuid.UUID(...).bytes_le`.
 * - VHD stores its Unique Id and Parent Unique Id in RFC 4122 order (the text's bytes in order).
 */
import { createHash, randomUUID } from 'node:crypto';
import { VdiskError } from '../errors.js';

export type Guid = string;

export const GUID_SIZE = 16;
export const NULL_GUID: Guid = '00000000-0000-0000-0000-000000000000';

const GUID_RE = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

/** Parses a GUID in any case, with or without braces; returns the canonical lower-case text. */
export function parseGuid(text: string, what = 'GUID'): Guid {
  const m = GUID_RE.exec(text.trim());
  if (!m || text.trim().startsWith('{') !== text.trim().endsWith('}')) {
    throw new VdiskError('EINVAL', `${what} "${text}" is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
  }
  return `${m[1]}-${m[2]}-${m[3]}-${m[4]}-${m[5]}`.toLowerCase();
}

export function isGuid(text: string): boolean {
  try {
    parseGuid(text);
    return true;
  } catch {
    return false;
  }
}

export const isNullGuid = (g: Guid): boolean => g === NULL_GUID;
export const guidEquals = (a: Guid, b: Guid): boolean => parseGuid(a) === parseGuid(b);

/** "{xxxxxxxx-…}" in lower case: the form of a VHDX parent_linkage value (libvhdi needs lower case). */
export const bracedGuid = (g: Guid): string => `{${parseGuid(g)}}`;

function hexBytes(g: Guid): number[] {
  const hex = parseGuid(g).replace(/-/g, '');
  const out: number[] = [];
  for (let i = 0; i < 32; i += 2) out.push(parseInt(hex.slice(i, i + 2), 16));
  return out;
}

function fromHexBytes(b: ArrayLike<number>): Guid {
  let h = '';
  for (let i = 0; i < 16; i++) h += b[i]!.toString(16).padStart(2, '0');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Writes `g` at `offset` in the Microsoft mixed-endian layout (VHDX). */
export function writeGuidLE(dest: Uint8Array, offset: number, g: Guid): void {
  const b = hexBytes(g);
  // Data1, Data2, Data3 are little-endian integers; Data4 is a byte array.
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  for (let i = 0; i < 16; i++) dest[offset + i] = b[order[i]!]!;
}

/** Reads a GUID stored in the Microsoft mixed-endian layout (VHDX). */
export function readGuidLE(src: Uint8Array, offset: number): Guid {
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  const b = new Array<number>(16);
  for (let i = 0; i < 16; i++) b[order[i]!] = src[offset + i]!;
  return fromHexBytes(b);
}

export function guidToBytesLE(g: Guid): Uint8Array {
  const out = new Uint8Array(16);
  writeGuidLE(out, 0, g);
  return out;
}

/** Writes `g` in RFC 4122 order (VHD). */
export function writeUuidBE(dest: Uint8Array, offset: number, g: Guid): void {
  const b = hexBytes(g);
  for (let i = 0; i < 16; i++) dest[offset + i] = b[i]!;
}

/** Reads a UUID stored in RFC 4122 order (VHD). */
export function readUuidBE(src: Uint8Array, offset: number): Guid {
  return fromHexBytes(src.subarray(offset, offset + 16));
}

export function randomGuid(): Guid {
  return randomUUID();
}

/**
 * A name-based (version 5, SHA-1) UUID: the same namespace and name always give the same GUID.
 * Views derive their disk identities from the store's descriptor id this way, so that they stay
 * stable across remounts and differ between views and purposes.
 */
export function deriveGuid(namespace: Guid, name: string): Guid {
  const h = createHash('sha1').update(Buffer.from(hexBytes(namespace))).update(name, 'utf8').digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  return fromHexBytes(h);
}
