/**
 * The benchmark workloads, the fio command line for each, and the parser for fio's JSON output.
 * Pure: no processes are started here, so the parsing is unit-tested on recorded fio output.
 */

export interface Workload {
  readonly id: string;
  readonly label: string;
  /** fio's rw= value. */
  readonly rw: 'read' | 'write' | 'randread' | 'randwrite' | 'randrw';
  readonly blockSize: number;
  readonly iodepth: number;
  /** Percentage of reads for a mixed workload. */
  readonly readPercent?: number;
  /** Whether the workload writes (it then runs after every read-only workload, on a filled disk). */
  readonly writes: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** Read-only workloads first: they run on the prefilled disk before any write disturbs its layout. */
export const WORKLOADS: readonly Workload[] = [
  { id: 'seqread-1m', label: 'seq read 1 MiB QD1', rw: 'read', blockSize: MiB, iodepth: 1, writes: false },
  { id: 'randread-4k-qd1', label: 'rand read 4 KiB QD1', rw: 'randread', blockSize: 4 * KiB, iodepth: 1, writes: false },
  { id: 'randread-4k-qd16', label: 'rand read 4 KiB QD16', rw: 'randread', blockSize: 4 * KiB, iodepth: 16, writes: false },
  { id: 'seqwrite-1m', label: 'seq write 1 MiB QD1', rw: 'write', blockSize: MiB, iodepth: 1, writes: true },
  { id: 'randwrite-4k-qd1', label: 'rand write 4 KiB QD1', rw: 'randwrite', blockSize: 4 * KiB, iodepth: 1, writes: true },
  { id: 'randwrite-4k-qd16', label: 'rand write 4 KiB QD16', rw: 'randwrite', blockSize: 4 * KiB, iodepth: 16, writes: true },
  { id: 'randrw70-4k-qd16', label: 'rand 70/30 4 KiB QD16', rw: 'randrw', blockSize: 4 * KiB, iodepth: 16, readPercent: 70, writes: true },
];

export interface FioJob {
  readonly name: string;
  readonly workload: Workload;
  readonly direct: boolean;
  /** The file fio works on (an existing file: fio must never create or extend it). */
  readonly file: string;
  /** Where the disk's payload starts inside the file (non-zero for a VHDX view). */
  readonly offset: number;
  /** Bytes of payload to work on. */
  readonly size: number;
  readonly runtimeSeconds: number;
  readonly rampSeconds: number;
  /** Where fio writes its JSON report. */
  readonly output: string;
}

/**
 * fio arguments for one measured job. Every job is time-based with a ramp (excluded from fio's
 * statistics), uses libaio (synchronous for buffered I/O, as fio documents; the queue depth only
 * means something with direct=1), and reports reads and writes together (unified_rw_reporting)
 * so that a mixed workload has one latency distribution.
 */
export function fioArgs(job: FioJob): string[] {
  const w = job.workload;
  const args = [
    `--name=${job.name}`,
    `--filename=${job.file}`,
    `--offset=${job.offset}`,
    `--size=${job.size}`,
    `--rw=${w.rw}`,
    `--bs=${w.blockSize}`,
    `--iodepth=${w.iodepth}`,
    '--ioengine=libaio',
    `--direct=${job.direct ? 1 : 0}`,
    '--time_based',
    `--runtime=${job.runtimeSeconds}`,
    `--ramp_time=${job.rampSeconds}`,
    // Never create, extend or preallocate the target: it is a view of a disk of fixed size.
    '--allow_file_create=0',
    '--fallocate=none',
    // Random offsets without a coverage map: the same distribution on every target, no warm-up cost.
    '--norandommap',
    '--randrepeat=0',
    '--lat_percentiles=1',
    '--unified_rw_reporting=mixed',
    '--output-format=json',
    `--output=${job.output}`,
  ];
  if (w.readPercent !== undefined) args.push(`--rwmixread=${w.readPercent}`);
  return args;
}

/** fio arguments that fill the whole disk once, sequentially (so reads never hit unwritten blocks). */
export function prefillArgs(file: string, offset: number, size: number, output: string): string[] {
  return [
    '--name=prefill',
    `--filename=${file}`,
    `--offset=${offset}`,
    `--size=${size}`,
    '--rw=write',
    `--bs=${MiB}`,
    '--iodepth=4',
    '--ioengine=libaio',
    '--direct=1',
    '--allow_file_create=0',
    '--fallocate=none',
    '--end_fsync=1',
    '--output-format=json',
    `--output=${output}`,
  ];
}

/** What one fio job measured. Latencies are total (submission to completion) latencies. */
export interface FioResult {
  /** Bytes per second, reads and writes together. */
  readonly bandwidth: number;
  readonly iops: number;
  /** Bytes moved during the measured time (after the ramp). */
  readonly ioBytes: number;
  readonly meanLatencyUs: number;
  readonly p99LatencyUs: number;
  /** Milliseconds fio measured for (excluding the ramp). */
  readonly runtimeMs: number;
}

interface FioDirStats {
  io_bytes?: number;
  bw_bytes?: number;
  iops?: number;
  runtime?: number;
  total_ios?: number;
  lat_ns?: { mean?: number; N?: number; percentile?: Record<string, number> };
  clat_ns?: { mean?: number; N?: number; percentile?: Record<string, number> };
}

interface FioJobJson {
  jobname?: string;
  error?: number;
  mixed?: FioDirStats;
  read?: FioDirStats;
  write?: FioDirStats;
  trim?: FioDirStats;
}

/**
 * Parses fio's JSON report (--output-format=json) of a single job. Reads the `mixed` section when
 * fio unified reads and writes, otherwise combines `read`, `write` and `trim`: bandwidths and IOPS
 * add up, the mean latency is weighted by I/O count, and the p99 is the larger of the directions'
 * p99s (fio gives no combined distribution; the larger one bounds it from above). Throws with the
 * reason when the report is not valid or the job failed.
 */
export function parseFioJson(text: string): FioResult {
  // fio may print notes before the JSON document when it shares stdout; start at the first brace.
  const start = text.indexOf('{');
  if (start < 0) throw new Error('fio produced no JSON report');
  let doc: { jobs?: FioJobJson[] };
  try {
    doc = JSON.parse(text.slice(start)) as { jobs?: FioJobJson[] };
  } catch (err) {
    throw new Error(`fio's JSON report does not parse: ${(err as Error).message}`);
  }
  const jobs = doc.jobs;
  if (!Array.isArray(jobs) || jobs.length !== 1) {
    throw new Error(`fio's JSON report holds ${Array.isArray(jobs) ? jobs.length : 'no'} jobs; expected exactly one`);
  }
  const job = jobs[0]!;
  if (job.error) throw new Error(`fio job ${job.jobname ?? '?'} failed with error ${job.error}`);
  const parts = job.mixed ? [job.mixed] : [job.read, job.write, job.trim].filter((p): p is FioDirStats => p !== undefined);
  const active = parts.filter((p) => (p.total_ios ?? 0) > 0 || (p.io_bytes ?? 0) > 0);
  if (active.length === 0) throw new Error(`fio job ${job.jobname ?? '?'} completed no I/O`);

  let bandwidth = 0;
  let iops = 0;
  let ioBytes = 0;
  let latWeighted = 0;
  let latCount = 0;
  let p99 = 0;
  let runtimeMs = 0;
  for (const p of active) {
    bandwidth += p.bw_bytes ?? 0;
    iops += p.iops ?? 0;
    ioBytes += p.io_bytes ?? 0;
    runtimeMs = Math.max(runtimeMs, p.runtime ?? 0);
    const lat = p.lat_ns?.N ? p.lat_ns : p.clat_ns;
    const n = lat?.N ?? p.total_ios ?? 0;
    if (lat?.mean !== undefined && n > 0) {
      latWeighted += lat.mean * n;
      latCount += n;
    }
    const pct = percentile(p.lat_ns?.percentile, 99) ?? percentile(p.clat_ns?.percentile, 99);
    if (pct !== undefined) p99 = Math.max(p99, pct);
  }
  return {
    bandwidth,
    iops,
    ioBytes,
    meanLatencyUs: latCount > 0 ? latWeighted / latCount / 1000 : NaN,
    p99LatencyUs: p99 > 0 ? p99 / 1000 : NaN,
    runtimeMs,
  };
}

/** fio keys percentiles as strings like "99.000000". */
function percentile(map: Record<string, number> | undefined, p: number): number | undefined {
  if (!map) return undefined;
  for (const [k, v] of Object.entries(map)) {
    if (Math.abs(Number(k) - p) < 1e-9) return v;
  }
  return undefined;
}
