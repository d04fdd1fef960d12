/**
 * The benchmark harness's arithmetic: fio JSON parsing (on reports fio 3.33 wrote, both with reads
 * and writes unified and separate), fio arguments, the ratios and the LBS write-pattern figures.
 * No timing is asserted: these are pure functions of recorded data.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WORKLOADS, fioArgs, parseFioJson } from '../../src/bench/fio.js';
import { formatReference, formatTable, furthestBehind, geomeanVsPeer, rateRows, renderSvg, type ResultsDoc, type Row, type TargetInfo } from '../../src/bench/report.js';
import { extractCounters, writePattern } from '../../src/bench/write-pattern.js';
import { parsePerfScript, runStats } from '../../src/bench/pwrite-trace.js';

const fixture = (name: string) => readFileSync(join(import.meta.dirname, 'fixtures', name), 'utf8');

describe('parseFioJson', () => {
  it('reads the unified (mixed) section of a 70/30 job', () => {
    const r = parseFioJson(fixture('fio-unified-randrw.json'));
    expect(r.bandwidth).toBe(65433702);
    expect(r.iops).toBeCloseTo(15975.024975, 6);
    expect(r.ioBytes).toBe(65499136);
    expect(r.meanLatencyUs).toBeCloseTo(994.650491464, 6);
    expect(r.p99LatencyUs).toBeCloseTo(1679.36, 6);
    expect(r.runtimeMs).toBe(1001);
  });

  it('combines separate read and write sections: sums, I/O-weighted mean, the larger p99', () => {
    const r = parseFioJson(fixture('fio-split-randrw.json'));
    expect(r.bandwidth).toBe(239118832);
    expect(r.iops).toBeCloseTo(58378.621379, 5);
    expect(r.ioBytes).toBe(239357952);
    expect(r.meanLatencyUs).toBeCloseTo(67.7819180314858, 6);
    expect(r.p99LatencyUs).toBeCloseTo(366.592, 6); // the write p99; the read p99 is 146.432
  });

  it('skips notes fio printed before the JSON document', () => {
    const r = parseFioJson('note: both iodepth >= 1 and synchronous I/O engine are selected\n' + fixture('fio-unified-randrw.json'));
    expect(r.bandwidth).toBe(65433702);
  });

  it('falls back to completion latency when total latency percentiles are absent', () => {
    const doc = {
      jobs: [{ jobname: 'x', error: 0, read: { io_bytes: 4096, bw_bytes: 4096, iops: 1, runtime: 1000, total_ios: 1, clat_ns: { mean: 2000, N: 1, percentile: { '99.000000': 5000 } } } }],
    };
    const r = parseFioJson(JSON.stringify(doc));
    expect(r.meanLatencyUs).toBe(2);
    expect(r.p99LatencyUs).toBe(5);
  });

  it('refuses a failed job, an empty job, several jobs and garbage, saying why', () => {
    const job = JSON.parse(fixture('fio-unified-randrw.json')) as { jobs: Record<string, unknown>[] };
    expect(() => parseFioJson(JSON.stringify({ jobs: [{ ...job.jobs[0], error: 5 }] }))).toThrow(/failed with error 5/);
    expect(() => parseFioJson(JSON.stringify({ jobs: [{ jobname: 'x', error: 0, read: { total_ios: 0, io_bytes: 0 } }] }))).toThrow(/no I\/O/);
    expect(() => parseFioJson(JSON.stringify({ jobs: [job.jobs[0], job.jobs[0]] }))).toThrow(/2 jobs/);
    expect(() => parseFioJson('fio: file not found')).toThrow(/no JSON/);
    expect(() => parseFioJson('{ "jobs": [')).toThrow(/does not parse/);
  });
});

describe('fioArgs', () => {
  it('addresses the payload at its offset, time-based, never creating or extending the file', () => {
    const w = WORKLOADS.find((x) => x.id === 'randrw70-4k-qd16')!;
    const args = fioArgs({ name: 'j', workload: w, direct: true, file: '/m/d.vhdx', offset: 4 << 20, size: 1 << 30, runtimeSeconds: 3, rampSeconds: 1, output: '/o.json' });
    expect(args).toEqual(
      expect.arrayContaining(['--filename=/m/d.vhdx', '--offset=4194304', '--size=1073741824', '--rw=randrw', '--rwmixread=70', '--bs=4096', '--iodepth=16', '--direct=1', '--time_based', '--runtime=3', '--ramp_time=1', '--allow_file_create=0', '--output=/o.json']),
    );
  });

  it('runs every read-only workload before any writing one', () => {
    const firstWrite = WORKLOADS.findIndex((w) => w.writes);
    expect(WORKLOADS.slice(firstWrite).every((w) => w.writes)).toBe(true);
  });
});

const targets: TargetInfo[] = [
  { id: 'raw', label: 'raw file', side: 'physical' },
  { id: 'qa', label: 'peer A', side: 'peer' },
  { id: 'qb', label: 'peer B', side: 'peer' },
  { id: 'v1', label: 'vdiskfs 1', side: 'vdiskfs', peer: 'qa' },
  { id: 'v2', label: 'vdiskfs 2', side: 'vdiskfs', peer: 'qb' },
];

function row(target: string, workload: string, direct: boolean, bandwidth?: number, note?: string): Row {
  return {
    target,
    workload,
    direct,
    note,
    result: bandwidth === undefined ? undefined : { bandwidth, iops: bandwidth / 4096, ioBytes: bandwidth, meanLatencyUs: 10, p99LatencyUs: 20, runtimeMs: 1000 },
  };
}

describe('ratios', () => {
  const rows: Row[] = [
    row('raw', 'randread-4k-qd1', false, 1000),
    row('qa', 'randread-4k-qd1', false, 400),
    row('qb', 'randread-4k-qd1', false, 500),
    row('v1', 'randread-4k-qd1', false, 200),
    row('v2', 'randread-4k-qd1', false, 600),
    // Direct mode: peer B has no result, so it is neither v2's peer figure nor the best.
    row('raw', 'randread-4k-qd1', true, 800),
    row('qa', 'randread-4k-qd1', true, 100),
    row('qb', 'randread-4k-qd1', true, undefined, 'O_DIRECT not supported'),
    row('v1', 'randread-4k-qd1', true, 50),
    row('v2', 'randread-4k-qd1', true, 300),
  ];
  const rated = rateRows(rows, targets);
  const get = (t: string, direct: boolean) => rated.find((r) => r.target === t && r.direct === direct)!;

  it('divides each vdiskfs row by its peer, the best peer and the raw file of the same workload and mode', () => {
    expect(get('v1', false).ratios).toMatchObject({ peer: 'qa', vsPeer: 0.5, best: 'qb', vsBest: 0.4, vsPhysical: 0.2 });
    expect(get('v2', false).ratios).toMatchObject({ peer: 'qb', vsPeer: 1.2, best: 'qb', vsBest: 1.2, vsPhysical: 0.6 });
    expect(get('v1', true).ratios).toMatchObject({ vsPeer: 0.5, best: 'qa', vsBest: 0.5, vsPhysical: 0.0625 });
  });

  it('leaves a ratio out when the peer has no result, and rates only vdiskfs rows', () => {
    expect(get('v2', true).ratios!.vsPeer).toBeUndefined();
    expect(get('v2', true).ratios!.vsBest).toBe(3);
    expect(get('qa', false).ratios).toBeUndefined();
    expect(get('raw', true).ratios).toBeUndefined();
  });

  it('finds the rows furthest behind their best peer, worst first', () => {
    const worst = furthestBehind(rated, 2);
    expect(worst.map((r) => [r.target, r.direct])).toEqual([
      ['v1', false],
      ['v1', true],
    ]);
  });

  it('summarizes a target by the geometric mean of its peer ratios', () => {
    expect(geomeanVsPeer(rated, 'v1')).toBeCloseTo(0.5, 12);
    expect(geomeanVsPeer(rated, 'v2')).toBeCloseTo(1.2, 12); // the direct row has no peer figure
    expect(geomeanVsPeer(rated, 'qa')).toBeUndefined();
  });

  it('prints every row, with the note for a row without a result, and draws one bar per result', () => {
    const text = formatTable(rated, targets, WORKLOADS);
    expect(text).toMatch(/rand read 4 KiB QD1, direct/);
    expect(text).toMatch(/peer B\s+O_DIRECT not supported/);
    expect(text).toMatch(/vdiskfs 1\s+0\.0\s+0\s+10\.0\s+20\s+—\s+—\s+0\.50\s+0\.40\s+0\.20/);
    // Jobs run in rotating target order; the table lists targets in their declared order.
    const shuffled = formatTable([...rated].reverse(), targets, WORKLOADS);
    expect(shuffled).toBe(text);
    expect(text.indexOf('raw file')).toBeLessThan(text.indexOf('peer A'));
    const svg = renderSvg(rated, targets, WORKLOADS, 'title <&>');
    expect(svg.match(/<rect x=/g)).toHaveLength(9 + 5); // 9 bars, 5 legend swatches
    expect(svg).toContain('title &lt;&amp;&gt;');
  });
});

describe('reference summary', () => {
  it('puts each vdiskfs figure beside its ratio to its peer, and n/a where a target has no result', () => {
    const rows: Row[] = [row('raw', 'randread-4k-qd1', true, 8e6), row('qa', 'randread-4k-qd1', true, 4e6), row('qb', 'randread-4k-qd1', true, undefined, 'O_DIRECT not supported'), row('v1', 'randread-4k-qd1', true, 2e6), row('v2', 'randread-4k-qd1', true, 6e6)];
    const doc: ResultsDoc = {
      startedAt: 'a',
      finishedAt: 'b',
      settings: { quick: true, size: 512 << 20, runtimeSeconds: 1, rampSeconds: 0.5, workloads: ['randread-4k-qd1'] },
      machine: { cpus: 2, cpuModel: 'X', commit: 'abc', loadavgAtStart: [1], loadavgAtEnd: [2] },
      targets: targets.map((t) => ({ ...t, status: 'ran' })),
      rows: rateRows(rows, targets),
    };
    const md = formatReference(doc, WORKLOADS);
    expect(md).toContain('| rand read 4 KiB QD1 | direct | 8 | 4 | n/a | 2 (0.50) | 6 (—) |');
    expect(md).toMatch(/\| vdiskfs 1 \| peer A \| 0\.50 \|/);
  });
});

describe('LBS write pattern', () => {
  it('reads the LBS store\'s nested counters by their exact paths', () => {
    const c = extractCounters({ bytesWritten: 1, requests: { writeBytes: 10 }, dataFile: { bytesWritten: 20, writeCalls: 3, sequentialBytes: 12 }, log: { bytesWritten: 5 } });
    expect(c).toEqual({ clientBytes: 10, dataBytes: 20, logBytes: 5, sequentialBytes: 12 });
    // Without a trace, the store's counter gives the fraction; a write count is not a run count.
    const p = writePattern({}, c);
    expect(p.sequentialFraction).toBe(0.6);
    expect(p.meanRunBytes).toBeUndefined();
  });

  it('finds counters by name, never a same-named counter deeper down, and computes the figures from deltas', () => {
    const before = extractCounters({ bytesWritten: 1000, dataBytesWritten: 4096, logBytesWritten: 100, dataSequentialBytes: 4096, dataWriteRuns: 1, gc: { dataBytesWritten: 7 } });
    const after = extractCounters({ bytesWritten: 1_049_576, dataBytesWritten: 1_380_352, logBytesWritten: 65_636, dataSequentialBytes: 1_118_208, dataWriteRuns: 6, gc: { dataBytesWritten: 9 } });
    expect(before.dataBytes).toBe(4096);
    const p = writePattern(before, after);
    expect(p.clientBytes).toBe(1_048_576);
    expect(p.dataBytes).toBe(1_376_256);
    expect(p.sequentialFraction).toBeCloseTo(1_114_112 / 1_376_256, 12);
    expect(p.meanRunBytes).toBeCloseTo(1_376_256 / 5, 9);
    expect(p.writeAmplification).toBeCloseTo((1_376_256 + 65_536) / 1_048_576, 12);
  });

  it('uses the fallback client byte count when the store has none, and leaves out what it cannot compute', () => {
    const p = writePattern({ dataBytes: 0 }, { dataBytes: 8192 }, 4096);
    expect(p.writeAmplification).toBe(2);
    expect(p.sequentialFraction).toBeUndefined();
    expect(p.meanRunBytes).toBeUndefined();
    expect(writePattern({}, {}).writeAmplification).toBeUndefined();
  });
});

describe('data-file write runs from a perf trace', () => {
  // Lines as `perf script` prints syscalls:sys_enter_pwrite64 events (perf 6.1).
  const perf = [
    '            node 21911 [000]  1206.451198: syscalls:sys_enter_pwrite64: fd: 0x00000013, buf: 0x2f965f20, count: 0x00100000, pos: 0x00400000',
    '            node 21910 [001]  1206.451309: syscalls:sys_enter_pwrite64: fd: 0x00000013, buf: 0x2f9ca420, count: 0x00100000, pos: 0x00500000',
    '            node 21910 [001]  1206.451310: syscalls:sys_enter_pwrite64: fd: 0x00000014, buf: 0x2f9ca420, count: 0x00000200, pos: 0x00000000',
    '            node 21908 [000]  1206.451380: syscalls:sys_enter_pwrite64: fd: 0x00000013, buf: 0x2f83a680, count: 0x00080000, pos: 0x00600000',
    '            node 21909 [000]  1206.451447: syscalls:sys_enter_pwrite64: fd: 0x00000013, buf: 0x2fb599a0, count: 0x00100000, pos: 0x00200000',
    'some unrelated line',
    '            node 21911 [000]  1206.451509: syscalls:sys_enter_pwrite64: fd: 0x00000013, buf: 0x2f95a470, count: 0x00000000, pos: 0x00300000',
  ].join('\n');

  it('parses fd, length and offset of every pwrite64 event, in order', () => {
    const events = parsePerfScript(perf);
    expect(events).toHaveLength(6);
    expect(events[0]).toEqual({ fd: 19, count: 1 << 20, pos: 4 << 20 });
    expect(events[2]).toEqual({ fd: 20, count: 512, pos: 0 });
  });

  it('counts runs and the bytes that continued the previous write, on one descriptor only', () => {
    const s = runStats(parsePerfScript(perf), 19);
    // 4 MiB+1 MiB+512 KiB form one run (the last two continue it); the write at 2 MiB seeks back.
    expect(s).toEqual({ bytes: (3 << 20) + (512 << 10), writes: 4, runs: 2, sequentialBytes: (1 << 20) + (512 << 10) });
    const p = writePattern({ clientBytes: 0, dataBytes: 0 }, { clientBytes: 1 << 20, dataBytes: 4 << 20 }, undefined, s);
    expect(p.sequentialFraction).toBeCloseTo(1.5 / 3.5, 12);
    expect(p.meanRunBytes).toBe(1.75 * (1 << 20));
    expect(p.observedBytes).toBe(3.5 * (1 << 20));
    expect(p.writeAmplification).toBe(4); // from the store's counters, not the trace
    expect(p.storeSequentialFraction).toBeUndefined();
  });
});
