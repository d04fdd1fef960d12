/**
 * A View is one synthetic file of a store: `NAME.raw`, `NAME.vhdx`, … It has an exact size fixed
 * when it is built and reads/writes at file offsets. Views know nothing of FUSE; the FUSE layer
 * clamps requests to [0, size) before calling them. All views of one store share one device, so a
 * write through one is visible through every other at once.
 */
import type { CheckedDevice } from '../devices/block-device.js';
import { VdiskError } from '../errors.js';
import type { LoadedDescriptor } from '../stores/descriptor.js';

export interface View {
  /** The file extension, without the dot: "raw", "vhdx". */
  readonly name: string;
  readonly size: number;
  readonly writable: boolean;
  /** Fills `dest` from file offset `offset`; the range lies inside [0, size). */
  read(dest: Uint8Array, offset: number): Promise<void>;
  /** Writes `src` at file offset `offset`; the range lies inside [0, size). */
  write(src: Uint8Array, offset: number): Promise<void>;
  /**
   * Makes the range read as zeros, freeing the store's space where it can (fallocate's punch
   * hole and zero range, a loop device's discard). Bytes the store does not hold (generated
   * structures) are written as zeros instead.
   */
  discard(offset: number, length: number): Promise<void>;
  /** Makes every acknowledged write durable (the store's barrier, and any view state). */
  flush(): Promise<void>;
  /**
   * Where the store's bytes lie in this file: device bytes [deviceOffset, deviceOffset + length)
   * are file bytes [fileOffset, …). Front ends use it to find which bytes of every other view of
   * the store a write changed (cache coherence). Empty: the file holds no store bytes (VMDK).
   */
  readonly payload: readonly PayloadRange[];
  /** Releases view state (the device is closed by its owner). */
  close?(): Promise<void>;
}

export interface PayloadRange {
  readonly fileOffset: number;
  readonly deviceOffset: number;
  readonly length: number;
}

/**
 * The file ranges of `view` that hold device bytes [deviceOffset, deviceOffset + length), as
 * [fileOffset, length] pairs.
 */
export function fileRangesOf(view: View, deviceOffset: number, length: number): [number, number][] {
  return translate(view, deviceOffset, length, 'deviceOffset', 'fileOffset');
}

/** The device ranges that file bytes [offset, offset + length) of `view` hold, as [deviceOffset, length]. */
export function deviceRangesOf(view: View, offset: number, length: number): [number, number][] {
  return translate(view, offset, length, 'fileOffset', 'deviceOffset');
}

function translate(view: View, offset: number, length: number, from: 'fileOffset' | 'deviceOffset', to: 'fileOffset' | 'deviceOffset'): [number, number][] {
  const out: [number, number][] = [];
  for (const p of view.payload) {
    const lo = Math.max(offset, p[from]);
    const hi = Math.min(offset + length, p[from] + p.length);
    if (lo < hi) out.push([p[to] + (lo - p[from]), hi - lo]);
  }
  return out;
}

export interface ViewContext {
  readonly device: CheckedDevice;
  readonly descriptor: LoadedDescriptor;
  /** The names of the other views of this store in the mount (a VMDK descriptor references NAME.raw). */
  readonly siblings: readonly string[];
}

export interface ViewKind {
  readonly name: string;
  readonly summary: string;
  create(context: ViewContext): Promise<View>;
}

/**
 * Runs `build` (the encoding of a view's generated structures) and turns a format's refusal into
 * a message naming the store and the view to leave out ("store big: cannot show it as a VHD: …").
 */
export function buildOrExplain<T>(descriptor: LoadedDescriptor, view: string, build: () => T): T {
  try {
    return build();
  } catch (err) {
    if (err instanceof VdiskError) {
      throw new VdiskError(err.code, `store ${descriptor.name}: cannot show it as a ${view.toUpperCase()}: ${err.message} (leave ${view} out of its views)`, { cause: err });
    }
    throw err;
  }
}
