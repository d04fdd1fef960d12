/**
 * Fletcher-32 of runs of blocks with WebAssembly SIMD: the read path's checksum, about three times
 * the speed of the plain JS loop (which stays the reference and the fallback where WebAssembly SIMD
 * is missing). Same result, bit for bit (test/lbs/format.test.ts compares them).
 *
 * The math: over a chunk of n 16-bit words starting from zero sums, s1 = Σ w_i and
 * s2 = Σ (n − i)·w_i. Taking the words in pairs p_k = w_2k + w_2k+1 (odd word o_k = w_2k+1),
 * s2 = Σ (n − 2k)·p_k − Σ o_k. The module sums, per 32-bit lane l of each 16-byte vector j (pairs
 * k = 4j + l): acc = Σ_j P_j, acc2 = Σ_j (m − j)·P_j (a running sum of acc) and odd = Σ_j O_j,
 * so that s1 = Σ_l acc_l and s2 = 8·Σ_l acc2_l − 2·Σ_l l·acc_l − Σ_l odd_l. Chunks of 2 KiB
 * (m = 128 vectors) keep acc2 below 2^32; chunks combine as s2 ← s2 + n·s1 + c2, s1 ← s1 + c1.
 *
 * The module is assembled here byte by byte (it is 150 bytes; no toolchain needed):
 *   sums(ptr, nvec, nchunks, out): for each of nchunks chunks of nvec vectors at ptr, stores
 *   acc, acc2, odd (3 × i32x4) at out, out + 48, …
 */

const SLICE = 64 * 1024; // data area at [0, SLICE)
const RESULTS = SLICE; // 48 bytes per chunk after it
const MAX_CHUNKS = SLICE / 512;

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

function section(id: number, body: number[]): number[] {
  return [id, ...leb(body.length), ...body];
}

function str(s: string): number[] {
  return [...leb(s.length), ...Buffer.from(s, 'latin1')];
}

function assemble(): Uint8Array {
  const SIMD = 0xfd;
  const zero = [SIMD, 0x0c, ...new Array(16).fill(0)]; // v128.const 0
  const add = [SIMD, 0xae, 0x01]; // i32x4.add
  // Params 0 ptr, 1 nvec, 2 nchunks, 3 out; locals 4 end (i32), 5 v, 6 acc, 7 acc2, 8 odd (v128).
  const code = [
    0x02, 0x40, // block $done
    0x03, 0x40, //   loop $chunks
    0x20, 2, 0x45, 0x0d, 1, //     br_if $done (nchunks == 0)
    ...zero, 0x21, 6, ...zero, 0x21, 7, ...zero, 0x21, 8,
    0x20, 0, 0x20, 1, 0x41, 4, 0x74, 0x6a, 0x21, 4, //     end = ptr + nvec * 16
    0x02, 0x40, //     block
    0x03, 0x40, //       loop $vectors
    0x20, 0, 0x20, 4, 0x4f, 0x0d, 1, //         br_if (ptr >= end)
    0x20, 0, SIMD, 0x00, 0x00, 0x00, 0x22, 5, //   v = v128.load(ptr)
    SIMD, 0x7f, //                                  i32x4.extadd_pairwise_i16x8_u
    0x20, 6, ...add, 0x22, 6, //                    acc += pairs
    0x20, 7, ...add, 0x21, 7, //                    acc2 += acc
    0x20, 5, 0x41, 16, SIMD, 0xad, 0x01, //         v >> 16 (the odd words)
    0x20, 8, ...add, 0x21, 8, //                    odd += …
    0x20, 0, 0x41, 16, 0x6a, 0x21, 0, //            ptr += 16
    0x0c, 0, //                                     continue
    0x0b, //       end loop
    0x0b, //     end block
    0x20, 3, 0x20, 6, SIMD, 0x0b, 0x00, 0x00, //    store acc at out
    0x20, 3, 0x20, 7, SIMD, 0x0b, 0x00, 0x10, //    acc2 at out + 16
    0x20, 3, 0x20, 8, SIMD, 0x0b, 0x00, 0x20, //    odd at out + 32
    0x20, 3, 0x41, 48, 0x6a, 0x21, 3, //            out += 48
    0x20, 2, 0x41, 1, 0x6b, 0x21, 2, //             nchunks -= 1
    0x0c, 0, //                                     next chunk
    0x0b, //   end loop
    0x0b, // end block
    0x0b, // end function
  ];
  const locals = [2, 1, 0x7f, 4, 0x7b]; // 1 × i32, 4 × v128
  const body = [...locals, ...code];
  const pages = Math.ceil((RESULTS + MAX_CHUNKS * 48) / 65536);
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 0]),
    ...section(3, [1, 0]),
    ...section(5, [1, 0x00, ...leb(pages)]),
    ...section(7, [2, ...str('mem'), 0x02, 0, ...str('sums'), 0x00, 0]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

type Run = (buf: Uint8Array, blockSize: number, count: number, out: Uint32Array) => void;

/** The little of the WebAssembly API used here (the project's TypeScript libs do not declare it). */
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}

/** The SIMD run checksum, or undefined where WebAssembly SIMD is not available. */
export function makeSimdFletcherRun(): Run | undefined {
  let sums: (ptr: number, nvec: number, nchunks: number, out: number) => void;
  let mem: Uint8Array;
  let res: Uint32Array;
  try {
    const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
    const bytes = assemble();
    if (!wasm || !wasm.validate(bytes)) return undefined;
    const instance = new wasm.Instance(new wasm.Module(bytes));
    sums = instance.exports.sums as typeof sums;
    const buffer = (instance.exports.mem as { buffer: ArrayBuffer }).buffer;
    mem = new Uint8Array(buffer);
    res = new Uint32Array(buffer, RESULTS, MAX_CHUNKS * 12);
  } catch {
    return undefined;
  }
  return (buf, blockSize, count, out) => {
    const chunk = Math.min(blockSize, 2048);
    const wordsPerChunk = chunk >>> 1;
    const chunksPerBlock = blockSize / chunk;
    const total = blockSize * count;
    let block = 0;
    let inBlock = 0;
    let s1 = 0;
    let s2 = 0;
    for (let at = 0; at < total; at += SLICE) {
      const len = Math.min(SLICE, total - at);
      mem.set(buf.subarray(at, at + len), 0);
      const chunks = len / chunk;
      sums(0, chunk >>> 4, chunks, RESULTS);
      for (let c = 0, q = 0; c < chunks; c++, q += 12) {
        const a0 = res[q]!, a1 = res[q + 1]!, a2 = res[q + 2]!, a3 = res[q + 3]!;
        const c1 = a0 + a1 + a2 + a3;
        const c2 = 8 * (res[q + 4]! + res[q + 5]! + res[q + 6]! + res[q + 7]!) - 2 * (a1 + 2 * a2 + 3 * a3) - (res[q + 8]! + res[q + 9]! + res[q + 10]! + res[q + 11]!);
        s2 = (s2 + wordsPerChunk * s1 + c2) % 65535;
        s1 = (s1 + c1) % 65535;
        if (++inBlock === chunksPerBlock) {
          out[block++] = ((s2 << 16) | s1) >>> 0;
          inBlock = 0;
          s1 = 0;
          s2 = 0;
        }
      }
    }
  };
}
