/**
 * The simple cleaner's policy: when to clean and which clusters. (The mechanics — moving live
 * blocks and freeing the cluster only after a barrier — are in lbs-core.ts.) The full garbage
 * collector replaces this policy (scoring by neighbours, outliers, nearness, background work);
 * it only needs to keep the two functions' contracts.
 */
import { ClusterState, type BlockMap } from './block-map.js';

/** Clusters beyond the disk's logical capacity that a store must have, whatever the over-provisioning. */
export const MIN_SPARE_CLUSTERS = 4;

export interface CleanerPlan {
  /** Below this many free clusters, each write also takes one cleaning step. */
  lowWater: number;
  /** At or below this many, a write waits until the cleaner has made room. */
  critical: number;
}

export function spareClusters(map: BlockMap): number {
  return map.clusterCount - Math.ceil(map.logicalBlocks / map.blocksPerCluster);
}

export function cleanerPlan(map: BlockMap): CleanerPlan {
  const spare = spareClusters(map);
  const lowWater = Math.min(64, Math.max(2, Math.floor(spare / 8)));
  return { lowWater, critical: 2 };
}

/**
 * Up to `k` used clusters with the fewest live blocks, emptiest first; clusters with no dead block
 * are never chosen (moving them gains nothing). One pass over the per-cluster counters.
 */
export function pickVictims(map: BlockMap, k: number): number[] {
  const full = map.blocksPerCluster;
  const best: number[] = [];
  const { live, state } = map;
  for (let c = 0; c < map.clusterCount; c++) {
    if (state[c] !== ClusterState.Used) continue;
    const l = live[c]!;
    if (l >= full) continue;
    if (best.length === k && l >= live[best[k - 1]!]!) continue;
    // Insert in order (k is small).
    let i = best.length < k ? best.length : k - 1;
    while (i > 0 && live[best[i - 1]!]! > l) {
      best[i] = best[i - 1]!;
      i--;
    }
    best[i] = c;
  }
  return best;
}
