/**
 * The LBS write pattern, from two snapshots of a store's stats (.vdiskfs/NAME.stats.json) taken
 * around a job: how much of what reached the data file was written in sequential runs, how long
 * those runs were, and the write amplification (data file + metadata log bytes ÷ client bytes).
 *
 * The counters are looked up by name in the store's stats, so a store that reports them under one
 * of the names below is measured without further wiring.
 */

export interface WriteCounters {
  /** Bytes clients wrote to the store. */
  clientBytes?: number;
  /** Bytes the store wrote to its data file (payload, including garbage-collection moves). */
  dataBytes?: number;
  /** Bytes the store appended to its metadata log (including compaction). */
  logBytes?: number;
  /** Data-file bytes written in runs that continued where the previous data-file write ended. */
  sequentialBytes?: number;
  /** Number of data-file write runs (a run is one or more writes, each starting where the last ended). */
  runs?: number;
}

/**
 * Accepted names for each counter, as dotted paths into the store's `stats` object, first match
 * wins. The LBS store reports `requests.writeBytes`, `dataFile.bytesWritten`,
 * `dataFile.sequentialBytes` and `log.bytesWritten` (no run count: the mean run comes from the trace).
 */
export const COUNTER_NAMES: Record<keyof WriteCounters, readonly string[]> = {
  clientBytes: ['requests.writeBytes', 'clientBytesWritten', 'bytesWritten'],
  dataBytes: ['dataFile.bytesWritten', 'dataBytesWritten'],
  logBytes: ['log.bytesWritten', 'logBytesWritten'],
  sequentialBytes: ['dataFile.sequentialBytes', 'dataFile.sequentialBytesWritten', 'dataSequentialBytes'],
  runs: ['dataFile.runs', 'dataFile.writeRuns', 'dataWriteRuns'],
};

/** Flattens nested stats into `a.b.c` keys with numeric values. */
function numericLeaves(value: unknown, prefix = '', out = new Map<string, number>()): Map<string, number> {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) numericLeaves(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (typeof value === 'number' && Number.isFinite(value)) {
    out.set(prefix, value);
  }
  return out;
}

/** Picks the counters out of a stats document (exact dotted paths only: no guessing at depth). */
export function extractCounters(stats: unknown): WriteCounters {
  const leaves = numericLeaves(stats);
  const out: WriteCounters = {};
  for (const field of Object.keys(COUNTER_NAMES) as (keyof WriteCounters)[]) {
    const name = COUNTER_NAMES[field].find((n) => leaves.has(n));
    if (name !== undefined) out[field] = leaves.get(name)!;
  }
  return out;
}

export interface WritePattern {
  clientBytes?: number;
  dataBytes?: number;
  logBytes?: number;
  /** Fraction (0–1) of data-file bytes written in sequential runs. */
  sequentialFraction?: number;
  /** Mean length of a data-file write run, in bytes. */
  meanRunBytes?: number;
  /** (data-file bytes + log bytes) ÷ client bytes. */
  writeAmplification?: number;
  /** Data-file bytes seen by the pwrite trace, when the sequential fraction and mean run come from it. */
  observedBytes?: number;
  /** The sequential fraction by the store's own counter (a cross-check of the trace). */
  storeSequentialFraction?: number;
}

/** Data-file writes observed from outside the store (see pwrite-trace.ts). */
export interface ObservedRuns {
  readonly bytes: number;
  readonly runs: number;
  readonly sequentialBytes: number;
}

/**
 * The write pattern between two snapshots; a figure is absent when its counters are. Observed
 * data-file writes, when given, supply the sequential fraction and the mean run length (and the
 * data-file bytes if the store does not count them).
 */
export function writePattern(before: WriteCounters, after: WriteCounters, fallbackClientBytes?: number, observed?: ObservedRuns): WritePattern {
  const d = (k: keyof WriteCounters) => (after[k] !== undefined && before[k] !== undefined ? after[k]! - before[k]! : after[k]);
  const clientBytes = d('clientBytes') ?? fallbackClientBytes;
  const dataBytes = d('dataBytes') ?? observed?.bytes;
  const logBytes = d('logBytes');
  const p: WritePattern = { clientBytes, dataBytes, logBytes };
  const seq = d('sequentialBytes');
  const runs = d('runs');
  if (dataBytes !== undefined && seq !== undefined && dataBytes > 0) p.storeSequentialFraction = seq / dataBytes;
  if (observed) {
    p.observedBytes = observed.bytes;
    if (observed.bytes > 0) p.sequentialFraction = observed.sequentialBytes / observed.bytes;
    if (observed.runs > 0) p.meanRunBytes = observed.bytes / observed.runs;
  } else {
    p.sequentialFraction = p.storeSequentialFraction;
    if (dataBytes !== undefined && runs !== undefined && runs > 0) p.meanRunBytes = dataBytes / runs;
  }
  if (dataBytes !== undefined && clientBytes !== undefined && clientBytes > 0) p.writeAmplification = (dataBytes + (logBytes ?? 0)) / clientBytes;
  return p;
}
