/**
 * CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value 0xFFFFFFFF, final XOR
 * 0xFFFFFFFF. It is the checksum of every VHDX structure (headers, region tables, log entries) and
 * is useful to stores too. Slice-by-8 tables: about 2 GB/s in plain JS on the project's machine.
 *
 * Test vector: crc32c("123456789") = 0xE3069283.
 */

const POLY = 0x82f63b78;

/** TABLES[k][b]: the CRC contribution of byte b followed by k zero bytes. */
const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = [];
  const t0 = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[n] = c >>> 0;
  }
  t.push(t0);
  for (let k = 1; k < 8; k++) {
    const prev = t[k - 1]!;
    const tk = new Uint32Array(256);
    for (let n = 0; n < 256; n++) tk[n] = (prev[n]! >>> 8) ^ t0[prev[n]! & 0xff]!;
    t.push(tk);
  }
  return t;
})();

/**
 * Continues a CRC over `data`. `crc` is the raw register (start with 0xFFFFFFFF via crc32cInit,
 * finish with crc32cFinish); use crc32c() for a one-shot checksum.
 */
export function crc32cUpdate(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = crc >>> 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const a = (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24)) ^ c;
    c =
      t7[a & 0xff]! ^
      t6[(a >>> 8) & 0xff]! ^
      t5[(a >>> 16) & 0xff]! ^
      t4[a >>> 24]! ^
      t3[data[i + 4]!]! ^
      t2[data[i + 5]!]! ^
      t1[data[i + 6]!]! ^
      t0[data[i + 7]!]!;
  }
  for (; i < end; i++) c = (c >>> 8) ^ t0[(c ^ data[i]!) & 0xff]!;
  return c >>> 0;
}

export const crc32cInit = (): number => 0xffffffff;
export const crc32cFinish = (crc: number): number => (crc ^ 0xffffffff) >>> 0;

/** The CRC-32C of `data` (or of data[start, end)). */
export function crc32c(data: Uint8Array, start = 0, end = data.length): number {
  return crc32cFinish(crc32cUpdate(0xffffffff, data, start, end));
}

/**
 * The VHDX rule: CRC-32C over the whole structure with its 4-byte checksum field read as zero.
 * Computed without modifying `structure`.
 */
export function crc32cWithZeroedField(structure: Uint8Array, fieldOffset: number): number {
  let c = crc32cUpdate(0xffffffff, structure, 0, fieldOffset);
  c = crc32cUpdate(c, ZERO4);
  c = crc32cUpdate(c, structure, fieldOffset + 4, structure.length);
  return crc32cFinish(c);
}

const ZERO4 = new Uint8Array(4);
