/**
 * BlockDevice: what every backing store is (in the spirit of nbdkit's plugin API).
 *
 * A device has a fixed size and reads into a caller-supplied buffer. Everything else is optional;
 * `checked()` supplies the defaults (no discard → write zeros, no flush → nothing to do, no write →
 * EROFS) and does the range checks once, at the edge, so implementations may assume every request
 * they receive lies inside [0, size).
 */
import { VdiskError } from '../errors.js';

export interface Capabilities {
  /** Accepts writes. */
  readonly writable: boolean;
  /** flush() makes acknowledged writes durable (false: nothing to do, e.g. memory). */
  readonly flush: boolean;
  /** discard() frees space rather than writing zeros. */
  readonly discard: boolean;
  /** The granularity below which writes cost a read-modify-write. */
  readonly preferredBlockSize: number;
}

export interface BlockDevice {
  /** Size in bytes; fixed for the life of the device. */
  readonly size: number;
  readonly capabilities: Capabilities;
  /** Fills `dest` with the bytes at [offset, offset + dest.length). */
  read(dest: Uint8Array, offset: number): Promise<void>;
  /** Writes all of `src` at `offset`. The caller keeps ownership of `src` once the promise settles. */
  write?(src: Uint8Array, offset: number): Promise<void>;
  /** Makes every write acknowledged so far durable (a barrier). */
  flush?(): Promise<void>;
  /** The range reads as zeros afterwards; space may be freed. */
  discard?(offset: number, length: number): Promise<void>;
  /** Flushes and releases resources; the device is unusable afterwards. */
  close?(): Promise<void>;
  /** Counters for `info`, the mount's .vdiskfs/ directory and benchmarks. */
  stats?(): Record<string, unknown>;
  /**
   * Stores made of layers (chains): freezes the current contents and continues writing on top,
   * without changing size or contents. Returns a name for the new top. `ifChanged`: do nothing
   * (and return the current top) if nothing was written since the last snapshot.
   */
  snapshot?(options?: { ifChanged?: boolean }): Promise<string>;
}

/** A BlockDevice with every method present and every request range-checked. */
export interface CheckedDevice extends BlockDevice {
  write(src: Uint8Array, offset: number): Promise<void>;
  flush(): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  close(): Promise<void>;
  /** The device this one wraps. */
  readonly inner: BlockDevice;
}

const ZERO_CHUNK = 1 << 20;

/** Writes `length` zero bytes at `offset` through `write`, at most 1 MiB per call. */
export async function writeZeroRange(write: (src: Uint8Array, offset: number) => Promise<void>, offset: number, length: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(length, ZERO_CHUNK));
  for (let done = 0; done < length; done += zeros.length) {
    const n = Math.min(zeros.length, length - done);
    await write(n === zeros.length ? zeros : zeros.subarray(0, n), offset + done);
  }
}

export function checkRange(size: number, offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new VdiskError('EINVAL', `${what}: invalid range offset=${offset} length=${length}`);
  }
  if (offset + length > size) {
    throw new VdiskError(
      'ENOSPC',
      `${what} of ${length} bytes at offset ${offset} would pass the end of the disk (${size} bytes)`,
    );
  }
}

/** Wraps a device: range checks at the edge, and defaults for the optional methods. */
export function checked(device: BlockDevice): CheckedDevice {
  if (isChecked(device)) return device;
  const size = device.size;
  let closed = false;
  // What reached the store from every front end: request counts and sizes, and how many were in
  // flight at once (so tests and benchmarks can see 1 MiB requests and queue depth arrive).
  const requests = { reads: 0, writes: 0, discards: 0, flushes: 0, readBytes: 0, writtenBytes: 0, discardedBytes: 0, largestRead: 0, largestWrite: 0, inFlight: 0, maxInFlight: 0 };
  /** Counts a read or write of `length` bytes while `run` is in flight. */
  const tracked = async (length: number, reading: boolean, run: () => Promise<void>) => {
    if (reading) {
      requests.reads++;
      requests.readBytes += length;
      if (length > requests.largestRead) requests.largestRead = length;
    } else {
      requests.writes++;
      requests.writtenBytes += length;
      if (length > requests.largestWrite) requests.largestWrite = length;
    }
    if (++requests.inFlight > requests.maxInFlight) requests.maxInFlight = requests.inFlight;
    try {
      await run();
    } finally {
      requests.inFlight--;
    }
  };
  const ensureOpen = () => {
    if (closed) throw new VdiskError('EBADF', 'the device is closed');
  };
  const wrapper: CheckedDevice = {
    inner: device,
    size,
    capabilities: device.capabilities,
    async read(dest, offset) {
      ensureOpen();
      checkRange(size, offset, dest.length, 'read');
      if (dest.length > 0) await tracked(dest.length, true, () => device.read(dest, offset));
    },
    async write(src, offset) {
      ensureOpen();
      if (!device.write || !device.capabilities.writable) {
        throw new VdiskError('EROFS', 'this disk is read-only');
      }
      checkRange(size, offset, src.length, 'write');
      if (src.length > 0) await tracked(src.length, false, () => device.write!(src, offset));
    },
    async flush() {
      ensureOpen();
      requests.flushes++;
      if (device.flush) await device.flush();
    },
    async discard(offset, length) {
      ensureOpen();
      if (!device.write || !device.capabilities.writable) {
        throw new VdiskError('EROFS', 'this disk is read-only');
      }
      checkRange(size, offset, length, 'discard');
      if (length === 0) return;
      requests.discards++;
      requests.discardedBytes += length;
      if (device.discard) return device.discard(offset, length);
      return writeZeroRange((src, at) => device.write!(src, at), offset, length); // write checked above
    },
    async close() {
      if (closed) return;
      closed = true;
      if (device.close) await device.close();
      else if (device.flush) await device.flush();
    },
    stats: () => ({ ...(device.stats?.() ?? {}), io: { ...requests } }),
  };
  return wrapper;
}

function isChecked(device: BlockDevice): device is CheckedDevice {
  return (device as CheckedDevice).inner !== undefined && typeof (device as CheckedDevice).discard === 'function';
}

/** A read-only face over a device: writes and discards are refused with EROFS. */
export function readOnly(device: BlockDevice): BlockDevice {
  return {
    size: device.size,
    capabilities: { ...device.capabilities, writable: false, discard: false },
    read: (dest, offset) => device.read(dest, offset),
    close: device.close ? () => device.close!() : undefined,
    stats: device.stats ? () => device.stats!() : undefined,
  };
}
