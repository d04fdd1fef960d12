/**
 * The BlockDevice of a differencing chain: layers stacked top first. A read asks the top layer,
 * which fills what it holds and hands the rest to the layer below, down to the ultimate parent
 * (whose missing sectors are zeros). Writes go to the top layer only, widened to whole sectors
 * (the partial sectors at either end are read through the chain first).
 *
 * Writes, flushes and snapshots are serialized (one mutation at a time, in arrival order); reads
 * run concurrently. A layer changes its in-memory maps only after the data is written, so a read
 * sees either the old or the new bytes of a write in progress. A snapshot swaps in a new top
 * without changing the size, so views built on this device keep working.
 */
import type { BlockDevice, Capabilities } from '../../devices/block-device.js';
import { VdiskError } from '../../errors.js';
import { readZeros, type Layer, type ReadBelow } from './layer.js';

export interface ChainHooks {
  /** Makes a new empty child of `top` (sealed by the caller), records it, and returns it opened for writing. */
  addChild?(layers: readonly Layer[]): Promise<Layer>;
  /** Called after close (releases the store's lock). */
  onClose?(): Promise<void>;
}

export class ChainDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: Capabilities;
  private layersNow: Layer[];
  private tail: Promise<unknown> = Promise.resolve();
  private writes = 0;
  private snapshots = 0;
  /** Writes to the current top since it became the top. */
  private topWrites = 0;
  private autoFlush: NodeJS.Timeout | undefined;
  private closed = false;

  /**
   * `autoFlushMs`: metadata (BAT, bitmaps) reaches the file at the next flush; when writes are
   * left unflushed this long, the device flushes by itself, bounding what a killed process loses.
   */
  constructor(layers: Layer[], readonly readOnly: boolean, private readonly hooks: ChainHooks = {}, private readonly autoFlushMs = 5000) {
    if (!layers.length) throw new VdiskError('EINVAL', 'a chain needs at least one layer');
    this.layersNow = layers;
    this.size = layers[0]!.size;
    for (const l of layers) {
      if (l.size !== this.size) throw new VdiskError('EINVAL', `layer ${l.path} is ${l.size} bytes but the chain's top is ${this.size}`);
    }
    this.capabilities = { writable: !readOnly && layers[0]!.writable, flush: true, discard: false, preferredBlockSize: 4096 };
  }

  /** The layers, top first (a fresh array after each snapshot). */
  get layers(): readonly Layer[] {
    return this.layersNow;
  }

  private readerFor(layers: readonly Layer[], i: number): ReadBelow {
    if (i >= layers.length) return readZeros;
    const below = this.readerFor(layers, i + 1);
    const layer = layers[i]!;
    return (dest, offset) => layer.read(dest, offset, below);
  }

  async read(dest: Uint8Array, offset: number): Promise<void> {
    const layers = this.layersNow;
    const top = layers[0]!;
    await top.read(dest, offset, this.readerFor(layers, 1));
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => {});
    return run;
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    return this.exclusive(async () => {
      const layers = this.layersNow;
      const top = layers[0]!;
      this.topWrites++;
      this.scheduleAutoFlush();
      const S = top.writeGranularity;
      const a = Math.floor(offset / S) * S;
      // The disk's end is a whole sector but not always a whole granule.
      const b = Math.min(Math.ceil((offset + src.length) / S) * S, this.size);
      this.writes++;
      if (a === offset && b === offset + src.length) return top.write(src, offset);
      // Widen to whole sectors: the bytes around the write come from the chain as it reads now.
      const buf = new Uint8Array(b - a);
      const read = this.readerFor(layers, 0);
      const end = offset + src.length;
      const last = Math.floor((end - 1) / S) * S; // start of the last granule
      if (a < offset) await read(buf.subarray(0, Math.min(S, b - a)), a);
      if (b > end && (last > a || a === offset)) await read(buf.subarray(last - a, b - a), last);
      buf.set(src, offset - a);
      await top.write(buf, a);
    });
  }

  flush(): Promise<void> {
    if (this.autoFlush) clearTimeout(this.autoFlush);
    this.autoFlush = undefined;
    return this.exclusive(() => this.layersNow[0]!.flush());
  }

  private scheduleAutoFlush(): void {
    if (this.autoFlush || this.autoFlushMs <= 0) return;
    this.autoFlush = setTimeout(() => {
      this.autoFlush = undefined;
      if (!this.closed) this.flush().catch(() => {});
    }, this.autoFlushMs);
    this.autoFlush.unref();
  }

  /**
   * Freezes the current top and adds a new empty child on top of it (the device keeps its size;
   * open views keep working). Returns the new top's path.
   */
  snapshot(options: { ifChanged?: boolean } = {}): Promise<string> {
    return this.exclusive(async () => {
      if (!this.capabilities.writable || !this.hooks.addChild) throw new VdiskError('EROFS', 'this chain is open read-only; cannot snapshot');
      const top = this.layersNow[0]!;
      // A periodic snapshot of an idle disk would only stack empty layers.
      if (options.ifChanged && this.topWrites === 0) return top.path;
      await top.seal();
      const child = await this.hooks.addChild(this.layersNow);
      this.layersNow = [child, ...this.layersNow];
      this.snapshots++;
      this.topWrites = 0;
      return child.path;
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.autoFlush) clearTimeout(this.autoFlush);
    await this.exclusive(async () => {
      let first: unknown;
      for (const l of this.layersNow) {
        try {
          await l.close();
        } catch (err) {
          first ??= err;
        }
      }
      await this.hooks.onClose?.();
      if (first) throw first;
    });
  }

  stats(): Record<string, unknown> {
    return {
      writes: this.writes,
      snapshots: this.snapshots,
      layers: this.layersNow.map((l) => ({ ...l.info(), ...l.stats() })),
    };
  }
}
