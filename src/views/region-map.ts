/**
 * A region map: a synthetic file described as a sorted list of contiguous regions, each of which
 * knows how to read (and perhaps write) its own bytes — generated structures, zero padding, or a
 * payload range mapped onto the store's device (nbdkit's common/regions, in spirit).
 *
 * The map is built once, when the view is created, and its size is exact. Requests are located by
 * binary search; a request inside one region (the common case on the data path) is passed on
 * without copying or allocating, and a request spanning regions is split into subarrays.
 *
 * Writes spanning several regions are checked first and applied afterwards, so a write that one
 * region refuses changes nothing anywhere.
 */
import { VdiskError } from '../errors.js';
import type { CheckedDevice } from '../devices/block-device.js';
import type { PayloadRange, View } from './view.js';
import type { ViewOverlay } from './view-overlay.js';

export interface Region {
  /** For messages and logs: "header section", "payload", "padding". */
  readonly name: string;
  readonly start: number;
  readonly length: number;
  /** Fills `dest` from `offset` bytes into the region; the range lies inside the region. */
  read(dest: Uint8Array, offset: number): Promise<void> | void;
  /**
   * Throws (VdiskError) if writing `src` at `offset` into the region would be refused, without
   * changing anything. Omitted: every write is accepted.
   */
  check?(src: Uint8Array, offset: number): Promise<void> | void;
  /** Writes `src` at `offset` into the region. Omitted: the region is read-only (EPERM). */
  write?(src: Uint8Array, offset: number): Promise<void>;
  /** Payload regions: the device offset of the region's first byte. */
  readonly deviceOffset?: number;
  /** Payload regions: makes [offset, offset + length) of the region read as zeros. */
  discard?(offset: number, length: number): Promise<void>;
}

export class RegionMap {
  readonly size: number;
  private readonly starts: Float64Array;

  constructor(readonly regions: readonly Region[]) {
    if (regions.length === 0) throw new RangeError('a region map needs at least one region');
    let at = 0;
    for (const r of regions) {
      if (r.start !== at) throw new RangeError(`region "${r.name}" starts at ${r.start}, expected ${at}: regions must be contiguous and sorted`);
      if (!Number.isSafeInteger(r.length) || r.length <= 0) throw new RangeError(`region "${r.name}" has length ${r.length}`);
      at += r.length;
    }
    this.size = at;
    this.starts = Float64Array.from(regions, (r) => r.start);
  }

  /** The index of the region holding byte `offset` (0 ≤ offset < size). */
  indexAt(offset: number): number {
    const s = this.starts;
    let lo = 0;
    let hi = s.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (s[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  regionAt(offset: number): Region {
    return this.regions[this.indexAt(offset)]!;
  }

  /**
   * Not an async function on purpose: a request inside one region returns that region's own
   * promise, so the data path adds no promise or microtask hop (only the binary search).
   */
  read(dest: Uint8Array, offset: number): Promise<void> {
    const length = dest.length;
    if (length === 0) return Promise.resolve();
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.size) {
      return Promise.reject(outside('read', offset, length, this.size));
    }
    const i = this.indexAt(offset);
    const r = this.regions[i]!;
    const inRegion = offset - r.start;
    if (inRegion + length <= r.length) {
      try {
        return Promise.resolve(r.read(dest, inRegion));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.readSpanning(dest, i, inRegion);
  }

  private async readSpanning(dest: Uint8Array, i: number, inRegion: number): Promise<void> {
    const pending: (Promise<void> | void)[] = [];
    let r = this.regions[i]!;
    let done = 0;
    while (done < dest.length) {
      const n = Math.min(r.length - inRegion, dest.length - done);
      pending.push(r.read(dest.subarray(done, done + n), inRegion));
      done += n;
      r = this.regions[++i]!;
      inRegion = 0;
    }
    await Promise.all(pending);
  }

  /** Like read(): a write inside one region returns that region's promise directly. */
  write(src: Uint8Array, offset: number): Promise<void> {
    const length = src.length;
    if (length === 0) return Promise.resolve();
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.size) {
      return Promise.reject(outside('write', offset, length, this.size));
    }
    const i = this.indexAt(offset);
    const r = this.regions[i]!;
    const inRegion = offset - r.start;
    if (inRegion + length <= r.length) {
      if (!r.write) return Promise.reject(refused(r));
      try {
        return r.write(src, inRegion);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.writeSpanning(src, i, inRegion);
  }

  private async writeSpanning(src: Uint8Array, i: number, inRegion: number): Promise<void> {
    const length = src.length;
    const pieces: { region: Region; data: Uint8Array; at: number }[] = [];
    let done = 0;
    let at = inRegion;
    while (done < length) {
      const region = this.regions[i++]!;
      const n = Math.min(region.length - at, length - done);
      pieces.push({ region, data: src.subarray(done, done + n), at });
      done += n;
      at = 0;
    }
    for (const p of pieces) {
      if (!p.region.write) throw refused(p.region);
      await p.region.check?.(p.data, p.at);
    }
    await Promise.all(pieces.map((p) => p.region.write!(p.data, p.at)));
  }

  /** Where the device's bytes lie in the file (the payload regions). */
  payload(): PayloadRange[] {
    return this.regions.filter((r) => r.deviceOffset !== undefined).map((r) => ({ fileOffset: r.start, deviceOffset: r.deviceOffset!, length: r.length }));
  }

  /**
   * Payload pieces are discarded on the device; the other pieces are written with zeros through
   * the normal write path (so their checks apply: a header cannot be zeroed).
   */
  async discard(offset: number, length: number): Promise<void> {
    if (length === 0) return;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.size) throw outside('discard', offset, length, this.size);
    let i = this.indexAt(offset);
    let at = offset;
    const end = offset + length;
    while (at < end) {
      const r = this.regions[i++]!;
      const n = Math.min(r.start + r.length, end) - at;
      if (r.discard) await r.discard(at - r.start, n);
      else await this.write(new Uint8Array(n), at);
      at += n;
    }
  }
}

function outside(what: string, offset: number, length: number, size: number): VdiskError {
  return new VdiskError('EINVAL', `${what} of ${length} bytes at ${offset} lies outside the ${size}-byte file`);
}

function refused(r: Region): VdiskError {
  return new VdiskError('EPERM', `the ${r.name} of this file cannot be written`);
}

/** A payload range: region bytes [0, length) are device bytes [deviceOffset, deviceOffset + length). */
export function payloadRegion(name: string, start: number, device: CheckedDevice, deviceOffset: number, length: number): Region {
  const writable = device.capabilities.writable;
  return {
    name,
    start,
    length,
    deviceOffset,
    read: (dest, offset) => device.read(dest, deviceOffset + offset),
    write: writable ? (src, offset) => device.write(src, deviceOffset + offset) : undefined,
    discard: writable ? (offset, n) => device.discard(deviceOffset + offset, n) : undefined,
  };
}

/**
 * Zeros. Writes of zeros are accepted and dropped (tools that copy a whole file write them);
 * anything else is refused with EPERM, since there is nowhere to keep it.
 */
export function zeroRegion(name: string, start: number, length: number, options: { acceptZeroWrites?: boolean } = {}): Region {
  const check = (src: Uint8Array) => {
    for (let i = 0; i < src.length; i++) {
      if (src[i] !== 0) throw new VdiskError('EPERM', `the ${name} of this file always reads as zeros and cannot hold data`);
    }
  };
  return {
    name,
    start,
    length,
    read: (dest) => void dest.fill(0),
    check: options.acceptZeroWrites ? check : undefined,
    write: options.acceptZeroWrites ? async (src) => check(src) : undefined,
  };
}

/** Fixed generated bytes (read-only). */
export function bytesRegion(name: string, start: number, bytes: Uint8Array): Region {
  return {
    name,
    start,
    length: bytes.length,
    read: (dest, offset) => void dest.set(bytes.subarray(offset, offset + dest.length)),
  };
}

/**
 * A view whose file is `map`: reads and writes go through the region map; a flush is the store's
 * barrier (when the file carries payload of `device`), then the overlay of client-written
 * generated bytes; close releases the overlay.
 */
export function regionMapView(name: string, map: RegionMap, options: { writable: boolean; overlay: ViewOverlay; device?: CheckedDevice }): View {
  const { overlay, device } = options;
  return {
    name,
    size: map.size,
    writable: options.writable,
    read: (dest, offset) => map.read(dest, offset),
    write: (src, offset) => map.write(src, offset),
    discard: (offset, length) => map.discard(offset, length),
    payload: map.payload(),
    async flush() {
      await device?.flush();
      await overlay.flush();
    },
    close: () => overlay.close(),
  };
}
