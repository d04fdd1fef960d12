/**
 * The in-RAM state of an LBS store, all in typed arrays (no per-block objects):
 *
 *   per logical block   pbn u32 (0xffffffff = zero/unwritten), checksum u32, timestamp f64  = 16 B
 *   per physical block  owner u32 (the LBN stored there, or none)                          = 4 B
 *   per cluster         live-block count u32, state u8                                      ~ 0 B
 *
 * So a store costs 16 + 4 × (physical / logical blocks) bytes per logical block: 21 B at the default
 * 25 % over-provisioning. The owner array is what lets the cleaner find the live blocks of a
 * cluster without scanning the whole map; timestamps are kept as f64 (exact to 2^53) because the
 * logical clock counts every block ever written and will outgrow 32 bits on a busy disk.
 */
import { NO_BLOCK } from './format.js';

export const enum ClusterState {
  /** No live block, and no durable mapping points into it: may be written. */
  Free = 0,
  /** Holds live blocks. */
  Used = 1,
  /** The cluster being filled. */
  Active = 2,
  /** Emptied by mappings that are not durable yet: reusable only after the next barrier. */
  Pending = 3,
}

export class BlockMap {
  readonly pbn: Uint32Array;
  readonly checksum: Uint32Array;
  readonly timestamp: Float64Array;
  readonly owner: Uint32Array;
  readonly live: Uint32Array;
  readonly state: Uint8Array;
  readonly blocksPerCluster: number;
  readonly clusterShift: number;
  /** Logical blocks that map to a physical block. */
  mappedBlocks = 0;
  freeClusters = 0;
  pendingClusters: number[] = [];
  /** While replaying, emptied clusters are not tracked as pending (states are derived afterwards). */
  private tracking = false;

  constructor(
    readonly logicalBlocks: number,
    readonly clusterCount: number,
    blocksPerCluster: number,
  ) {
    this.blocksPerCluster = blocksPerCluster;
    this.clusterShift = Math.log2(blocksPerCluster);
    this.pbn = new Uint32Array(logicalBlocks).fill(NO_BLOCK);
    this.checksum = new Uint32Array(logicalBlocks);
    this.timestamp = new Float64Array(logicalBlocks);
    this.owner = new Uint32Array(clusterCount * blocksPerCluster).fill(NO_BLOCK);
    this.live = new Uint32Array(clusterCount);
    this.state = new Uint8Array(clusterCount);
  }

  get physicalBlocks(): number {
    return this.owner.length;
  }

  clusterOf(pbn: number): number {
    return pbn >>> this.clusterShift;
  }

  /** Points `lbn` at physical block `pbn` (or at nothing, for a zero block). */
  set(lbn: number, pbn: number, checksum: number, timestamp: number): void {
    const old = this.pbn[lbn]!;
    if (old !== NO_BLOCK) {
      if (this.owner[old] === lbn) this.owner[old] = NO_BLOCK;
      const c = old >>> this.clusterShift;
      const left = --this.live[c]!;
      if (left === 0 && this.tracking && this.state[c] === ClusterState.Used) {
        this.state[c] = ClusterState.Pending;
        this.pendingClusters.push(c);
      }
    } else if (pbn !== NO_BLOCK) {
      this.mappedBlocks++;
    }
    if (pbn === NO_BLOCK) {
      if (old !== NO_BLOCK) this.mappedBlocks--;
      this.pbn[lbn] = NO_BLOCK;
      this.checksum[lbn] = 0;
    } else {
      this.pbn[lbn] = pbn;
      this.checksum[lbn] = checksum;
      this.owner[pbn] = lbn;
      this.live[pbn >>> this.clusterShift]!++;
    }
    this.timestamp[lbn] = timestamp;
  }

  /** After replay: clusters with live blocks are used, the rest free; start tracking. */
  deriveStates(): void {
    let free = 0;
    for (let c = 0; c < this.clusterCount; c++) {
      if (this.live[c]! > 0) this.state[c] = ClusterState.Used;
      else {
        this.state[c] = ClusterState.Free;
        free++;
      }
    }
    this.freeClusters = free;
    this.pendingClusters = [];
    this.tracking = true;
  }

  /** Takes a free cluster, preferring the first one after `after` (the neighbour of the last). */
  takeFree(after: number): number {
    const n = this.clusterCount;
    for (let i = 1; i <= n; i++) {
      const c = (after + i) % n;
      if (this.state[c] === ClusterState.Free) {
        this.state[c] = ClusterState.Active;
        this.freeClusters--;
        return c;
      }
    }
    return -1;
  }

  /** The active cluster is full (or abandoned): it becomes used, or pending if nothing in it is live. */
  retire(c: number): void {
    if (this.live[c]! > 0) this.state[c] = ClusterState.Used;
    else {
      this.state[c] = ClusterState.Pending;
      this.pendingClusters.push(c);
    }
  }

  /** A barrier has made every mapping so far durable: pending clusters become free. */
  releasePending(): number {
    let n = 0;
    for (const c of this.pendingClusters) {
      // A pending cluster cannot gain blocks (nothing writes into it), so it is still empty.
      if (this.state[c] === ClusterState.Pending && this.live[c] === 0) {
        this.state[c] = ClusterState.Free;
        this.freeClusters++;
        n++;
      }
    }
    this.pendingClusters = [];
    return n;
  }

  counts(): { free: number; used: number; pending: number; active: number } {
    let used = 0;
    let active = 0;
    for (let c = 0; c < this.clusterCount; c++) {
      if (this.state[c] === ClusterState.Used) used++;
      else if (this.state[c] === ClusterState.Active) active++;
    }
    return { free: this.freeClusters, used, pending: this.pendingClusters.length, active };
  }

  /** RAM held by the arrays above, per logical block. */
  bytesPerLogicalBlock(): number {
    const bytes =
      this.pbn.byteLength + this.checksum.byteLength + this.timestamp.byteLength + this.owner.byteLength + this.live.byteLength + this.state.byteLength;
    return bytes / this.logicalBlocks;
  }
}
