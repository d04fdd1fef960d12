#!/usr/bin/env node
/**
 * `make bench`: vdiskfs side by side with its peers, on this machine, in one run, with the same fio
 * workloads — then the ratios. See docs/benchmarks.md for what is measured and how to read it.
 *
 *   node dist/bench/main.js [--quick] [--targets a,b] [--list] [--size BYTES] [--runtime S] [--ramp S]
 *
 * Scratch files, mounts and peer processes live under bench/.work/ (or $VDISKFS_BENCH_DIR) and are
 * removed at the end of the run, also when it fails or is interrupted; results go to bench/results/.
 */
import { parseArgs } from 'node:util';
import { mkdir, readdir, rm, writeFile, readFile, symlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { WORKLOADS, fioArgs, parseFioJson, prefillArgs, type Workload } from './fio.js';
import { formatMarkdown, formatReference, formatTable, furthestBehind, geomeanVsPeer, rateRows, renderSvg, type RatedRow, type ResultsDoc, type Row } from './report.js';
import { declareTargets, readStats, unavailableReason, type RunningTarget, type TargetSpec } from './targets.js';
import { Cleanup, cpuSeconds, mountsUnder, processAlive, processesUnder, run, stopAllChildren } from './procs.js';
import { extractCounters, writePattern, type ObservedRuns, type WritePattern } from './write-pattern.js';
import { fdsOf, perfAvailable, runStats, startPwriteTrace } from './pwrite-trace.js';
import { realpathSync } from 'node:fs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const WORK_ROOT = resolve(process.env.VDISKFS_BENCH_DIR ?? join(ROOT, 'bench', '.work'));
const RESULTS_ROOT = join(ROOT, 'bench', 'results');
const MiB = 1024 * 1024;
/** Set by SIGINT/SIGTERM/SIGHUP: the run stops, cleans up and exits 130. */
let interrupted = false;

interface Settings {
  quick: boolean;
  size: number;
  runtimeSeconds: number;
  rampSeconds: number;
  workloads: Workload[];
}

interface TargetRecord {
  id: string;
  label: string;
  side: string;
  peer?: string;
  details: string;
  status: 'ran' | 'failed' | 'unavailable' | 'not selected';
  reason?: string;
  direct?: boolean;
  directNote?: string;
  prefillMBps?: number;
  payloadOffset?: number;
  /** The write pattern over every measured write job (LBS targets). */
  writePattern?: WritePattern;
  patternNote?: string;
  cleanupErrors?: string[];
}

interface ResultRow extends RatedRow {
  pattern?: WritePattern;
  loadavg?: number;
  wallSeconds?: number;
}

function parseOptions() {
  return parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      targets: { type: 'string' },
      workloads: { type: 'string' },
      list: { type: 'boolean', default: false },
      size: { type: 'string' },
      runtime: { type: 'string' },
      ramp: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
      report: { type: 'string' },
    },
    allowPositionals: false,
  });
}

function say(line: string): void {
  process.stderr.write(line + '\n');
}

const USAGE = [
  'usage: node dist/bench/main.js [--quick] [--targets id,id] [--workloads id,id] [--list] [--size BYTES] [--runtime S] [--ramp S]',
  '       node dist/bench/main.js --report bench/results/latest/results.json   (markdown summary of a run)',
].join('\n');

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseOptions();
  } catch (err) {
    say(`vdiskfs bench: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values } = parsed;
  if (values.help) {
    say(USAGE);
    return 0;
  }
  if (values.report) {
    // Markdown of an earlier run's results.json, for docs/benchmarks.md.
    const doc = JSON.parse(await readFile(values.report, 'utf8')) as ResultsDoc;
    process.stdout.write(formatReference(doc, WORKLOADS.filter((w) => doc.settings.workloads.includes(w.id))));
    return 0;
  }
  if (!existsSync(CLI)) {
    say(`vdiskfs bench: ${CLI} is missing; run make build first`);
    return 1;
  }
  const quick = values.quick || process.env.QUICK === '1';
  const settings: Settings = {
    quick,
    size: values.size ? Number(values.size) : quick ? 512 * MiB : 1024 * MiB,
    runtimeSeconds: values.runtime ? Number(values.runtime) : quick ? 1 : 3,
    rampSeconds: values.ramp ? Number(values.ramp) : quick ? 0.5 : 1,
    workloads: [...WORKLOADS],
  };
  if (!Number.isSafeInteger(settings.size) || settings.size <= 0 || settings.size % MiB !== 0) {
    say('vdiskfs bench: --size must be a positive number of bytes, a multiple of 1 MiB');
    return 2;
  }
  if (!(settings.runtimeSeconds > 0) || !(settings.rampSeconds >= 0)) {
    say('vdiskfs bench: --runtime must be a positive number of seconds and --ramp zero or more');
    return 2;
  }
  if (values.workloads) {
    const wanted = values.workloads.split(',').map((s) => s.trim()).filter(Boolean);
    const unknown = wanted.filter((w) => !WORKLOADS.some((x) => x.id === w));
    if (unknown.length) {
      say(`vdiskfs bench: unknown workload ${unknown.join(', ')} (known: ${WORKLOADS.map((w) => w.id).join(', ')})`);
      return 2;
    }
    settings.workloads = WORKLOADS.filter((w) => wanted.includes(w.id));
  }

  // Targets: all declared ones; a QUICK run keeps its subset; --targets names them explicitly.
  const all = declareTargets(CLI);
  const explicit = values.targets?.split(',').map((s) => s.trim()).filter(Boolean);
  if (explicit) {
    const unknown = explicit.filter((id) => !all.some((t) => t.id === id));
    if (unknown.length) {
      say(`vdiskfs bench: unknown target ${unknown.join(', ')} (known: ${all.map((t) => t.id).join(', ')})`);
      return 2;
    }
  }
  const records: TargetRecord[] = all.map((t) => ({ id: t.id, label: t.label, side: t.side, peer: t.peer, details: t.details, status: 'not selected' }));
  const selected: TargetSpec[] = [];
  for (const [i, t] of all.entries()) {
    const wanted = explicit ? explicit.includes(t.id) : !quick || t.quick;
    if (!wanted) continue;
    const reason = unavailableReason(t);
    if (reason) {
      records[i]!.status = 'unavailable';
      records[i]!.reason = reason;
    } else {
      selected.push(t);
    }
  }
  if (values.list) {
    for (const t of all) {
      const reason = unavailableReason(t);
      process.stdout.write(`${t.id.padEnd(22)} ${t.side.padEnd(9)} ${t.label.padEnd(34)} ${reason ?? `available${t.quick ? ', in QUICK runs' : ''}`}\n`);
    }
    return 0;
  }
  const missingExplicit = records.filter((r) => explicit?.includes(r.id) && r.status === 'unavailable');
  if (missingExplicit.length) {
    for (const r of missingExplicit) say(`vdiskfs bench: target ${r.id} was requested but is ${r.reason}`);
    return 1;
  }

  // Hygiene: refuse to start over the remains of an earlier run.
  const leftovers = refuseLeftovers();
  if (leftovers) {
    say(leftovers);
    return 1;
  }
  if ((await run('fio', ['--version'])).code !== 0) {
    say('vdiskfs bench: fio is not installed; run scripts/install-deps.sh (make bench does)');
    return 1;
  }
  // Scratch left by an earlier run that died (no mounts or processes remain, checked above): only
  // our own run-* directories are removed, never anything else under a user-chosen directory.
  await mkdir(WORK_ROOT, { recursive: true });
  for (const entry of await readdir(WORK_ROOT)) {
    if (entry.startsWith('run-')) await rm(join(WORK_ROOT, entry), { recursive: true, force: true });
  }

  const stamp = new Date().toISOString().replace(/[:]/g, '').replace(/\..*$/, 'Z');
  const runDir = join(WORK_ROOT, `run-${stamp}-${process.pid}`);
  const outDir = join(RESULTS_ROOT, stamp);
  await mkdir(runDir, { recursive: true });
  await mkdir(join(outDir, 'fio'), { recursive: true });
  const cleanup = new Cleanup();
  cleanup.add('remove scratch files', () => rm(runDir, { recursive: true, force: true }));

  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    say(`\nvdiskfs bench: ${signal}: stopping fio and every server, unmounting, removing scratch files…`);
    void (async () => {
      await stopAllChildren();
      const errors = await cleanup.runAll();
      for (const e of errors) say(`  cleanup: ${e}`);
      process.exit(130);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  const jobsPerTarget = settings.workloads.length * 2;
  // Per job: runtime, ramp and fio's start-up; per target: start, a prefill at ~250 MB/s, a probe.
  const estimate = selected.length * (jobsPerTarget * (settings.runtimeSeconds + settings.rampSeconds + 0.4) + settings.size / 250e6 + 3);
  say(
    `vdiskfs bench${quick ? ' (QUICK)' : ''}: ${selected.length} targets × ${jobsPerTarget} jobs, ${settings.size / MiB} MiB disks, ` +
      `${settings.runtimeSeconds} s per job after a ${settings.rampSeconds} s ramp; about ${Math.ceil(estimate / 60)} min`,
  );
  for (const r of records.filter((x) => x.status === 'unavailable')) say(`  ${r.id}: ${r.reason}`);

  const startedAt = new Date().toISOString();
  const machine = await machineInfo();
  const rows: ResultRow[] = [];
  let failures = 0;
  const active: Active[] = [];
  const fail = async (t: Active, err: unknown) => {
    failures++;
    t.record.status = 'failed';
    t.record.reason = (err as Error).message;
    say(`  ✗ ${t.spec.id} failed: ${t.record.reason}`);
    active.splice(active.indexOf(t), 1);
    // Stop it now (its cleanup is also registered and runs again harmlessly at the end).
    await t.running?.stop().catch(() => {});
  };
  try {
    // Phase 1: start every target and fill its disk. They all stay up, so that each workload then
    // runs on every target back to back: targets are compared under the same machine load (other
    // work on a shared machine drifts over minutes, not seconds).
    for (const spec of selected) {
      if (interrupted) break;
      const record = records.find((r) => r.id === spec.id)!;
      const dir = join(runDir, spec.id);
      await mkdir(dir);
      const t: Active = { spec, record, dir, total: { bytes: 0, runs: 0, sequentialBytes: 0 }, clientBytesByFio: 0 };
      active.push(t);
      say(`\n▶ ${spec.label} (${spec.id})`);
      try {
        t.running = await spec.start({ dir, size: settings.size, cleanup, cli: CLI });
        record.payloadOffset = t.running.offset;
        await prepareTarget(t, settings, outDir);
      } catch (err) {
        if (interrupted) break;
        await fail(t, err);
      }
    }
    // Phase 2: each workload and mode on every target in turn (the order rotates from job to job).
    let jobIndex = 0;
    for (const w of settings.workloads) {
      for (const direct of [false, true]) {
        if (interrupted || active.length === 0) break;
        say(`\n${w.label}, ${direct ? 'direct' : 'buffered'}`);
        const order = active.map((_, i) => active[(i + jobIndex) % active.length]!);
        jobIndex++;
        for (const t of order) {
          if (interrupted) break;
          try {
            rows.push(await measureJob(t, w, direct, settings, outDir));
          } catch (err) {
            if (interrupted) break;
            rows.push({ target: t.spec.id, workload: w.id, direct, note: `failed: ${(err as Error).message.slice(0, 200)}` });
            await fail(t, err);
          }
        }
      }
    }
    if (!interrupted) {
      for (const t of active) {
        t.record.status = 'ran';
        if (t.spec.requires.storeKind === 'lbs' && t.running?.statsFile) {
          t.record.writePattern = writePattern(t.statsAtStart ?? {}, extractCounters((await readStats(t.running.statsFile))?.stats), t.clientBytesByFio, t.dataFds ? t.total : undefined);
        }
      }
    }
  } finally {
    if (!interrupted) {
      const errors = await cleanup.runAll();
      for (const e of errors) say(`  ✗ cleanup: ${e}`);
      if (errors.length) failures++;
      const left = mountsUnder(WORK_ROOT);
      if (left.length) {
        failures++;
        say(`  ✗ mounts left behind: ${left.map((m) => m.mountpoint).join(', ')}`);
      }
    }
  }
  if (interrupted) return 130;

  const infos = all.map((t) => ({ id: t.id, label: t.label, side: t.side, peer: t.peer }));
  const rated = rateRows(rows, infos) as ResultRow[];
  const table = formatTable(rated, infos, settings.workloads);
  const worst = furthestBehind(rated, 3);
  const patternText = formatPatterns(rated, records, all);
  const summary = formatSummary(rated, records, all, worst);
  process.stdout.write(`\n${table}\n\n${patternText}${summary}\n`);

  const finishedAt = new Date().toISOString();
  const doc = {
    version: 1,
    startedAt,
    finishedAt,
    settings: { ...settings, workloads: settings.workloads.map((w) => w.id) },
    machine: { ...machine, loadavgAtEnd: os.loadavg() },
    targets: records,
    rows: rated,
    furthestBehind: worst.map((r) => ({ target: r.target, workload: r.workload, direct: r.direct, ...r.ratios })),
  };
  await writeFile(join(outDir, 'results.json'), JSON.stringify(doc, null, 2) + '\n');
  await writeFile(join(outDir, 'table.txt'), `${table}\n\n${patternText}${summary}\n`);
  await writeFile(join(outDir, 'table.md'), formatMarkdown(rated, infos, settings.workloads) + '\n');
  const title = `vdiskfs vs peers: throughput ÷ best FUSE peer (${quick ? 'QUICK, ' : ''}${settings.size / MiB} MiB, ${machine.cpus}× ${machine.cpuModel})`;
  await writeFile(join(outDir, 'chart.svg'), renderSvg(rated, infos, settings.workloads, title));
  await rm(join(RESULTS_ROOT, 'latest'), { force: true });
  await symlink(stamp, join(RESULTS_ROOT, 'latest')).catch(() => {});
  say(`\nresults: ${outDir}/{results.json,table.txt,table.md,chart.svg} (also bench/results/latest)`);
  return failures > 0 ? 1 : 0;
}

/** A message saying how to clean up, when an earlier run left mounts or processes behind. */
function refuseLeftovers(): string | undefined {
  const left = mountsUnder(WORK_ROOT);
  const procs = processesUnder(WORK_ROOT);
  if (left.length === 0 && procs.length === 0) return undefined;
  const lines = [`vdiskfs bench: an earlier run left these behind under ${WORK_ROOT}; refusing to start.`];
  for (const m of left) lines.push(`  mount ${m.mountpoint} (${m.fstype})`);
  for (const p of procs) lines.push(`  process ${p.pid}: ${p.cmdline.slice(0, 160)}`);
  lines.push('Clean up with:');
  for (const m of left) {
    // A vdiskfs daemon is stopped by its own unmount command (it flushes, unmounts and exits).
    if (m.fstype === 'fuse.vdiskfs') lines.push(`  node ${CLI} unmount ${m.mountpoint}`);
    else lines.push(`  fusermount -u ${m.mountpoint}   # if busy: fusermount -uz ${m.mountpoint}`);
  }
  // fusermount helpers (auto_unmount) exit by themselves once their mount is gone.
  for (const p of procs.filter((x) => !/^\S*fusermount3? /.test(x.cmdline))) lines.push(`  kill ${p.pid}   # if it is still running after the unmounts`);
  lines.push(`  rm -rf ${WORK_ROOT}/run-*`);
  return lines.join('\n');
}

async function runFio(args: string[], output: string, timeoutMs: number): Promise<ReturnType<typeof parseFioJson>> {
  const r = await run('fio', args, { timeoutMs });
  let text = '';
  try {
    text = await readFile(output, 'utf8');
  } catch {
    /* no report */
  }
  if (r.code !== 0) throw new Error(`fio exited ${r.code}: ${(r.stderr.trim() || text.trim()).split('\n').slice(-3).join(' ').slice(0, 400)}`);
  return parseFioJson(text);
}

/** A target that is up, with what its jobs accumulate. */
interface Active {
  spec: TargetSpec;
  record: TargetRecord;
  dir: string;
  running?: RunningTarget;
  statsAtStart?: ReturnType<typeof extractCounters>;
  /** The data file's descriptors in the serving process, when its writes are traced. */
  dataFds?: number[];
  total: { bytes: number; runs: number; sequentialBytes: number };
  clientBytesByFio: number;
}

/** Fills the target's disk, probes O_DIRECT, and sets up the write-pattern tracing. */
async function prepareTarget(t: Active, settings: Settings, outDir: string): Promise<void> {
  const { spec, running, record } = t;
  if (!running) return;
  // Fill the disk once so reads never meet unwritten (sparse, zero, unmapped) blocks.
  const t0 = Date.now();
  const prefillOut = join(outDir, 'fio', `${spec.id}-prefill.json`);
  const fill = await runFio(prefillArgs(running.file, running.offset, settings.size, prefillOut), prefillOut, 600_000);
  record.prefillMBps = fill.bandwidth / 1e6;
  say(`  prefilled ${settings.size / MiB} MiB at ${(fill.bandwidth / 1e6).toFixed(0)} MB/s (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

  // O_DIRECT: a short probe job; a target that refuses it gets no direct rows.
  const probeOut = join(outDir, 'fio', `${spec.id}-probe.json`);
  try {
    await runFio(
      ['--name=probe', `--filename=${running.file}`, `--offset=${running.offset}`, `--size=${MiB}`, '--rw=read', '--bs=4k', '--direct=1', '--ioengine=psync', '--allow_file_create=0', '--output-format=json', `--output=${probeOut}`],
      probeOut,
      30_000,
    );
    record.direct = true;
  } catch (err) {
    record.direct = false;
    record.directNote = (err as Error).message;
    say(`  O_DIRECT not supported: ${record.directNote}`);
  }

  t.statsAtStart = extractCounters((await readStats(running.statsFile))?.stats);
  // The data file's write pattern is traced with perf when it can be (root, tracefs, linux-perf).
  if (running.dataFile !== undefined && running.pid !== undefined) {
    const tracing = perfAvailable();
    const fds = tracing ? fdsOf(running.pid, realpathSync(running.dataFile)) : [];
    if (fds.length) t.dataFds = fds;
    else {
      record.patternNote = !tracing ? 'perf cannot trace syscalls here; the sequential fraction comes from the store\'s counters, if any' : `the serving process holds no descriptor on ${running.dataFile}`;
      say(`  write pattern: ${record.patternNote}`);
    }
  }
}

/** Runs one fio job on one target, with the server's CPU time and (LBS) the write pattern around it. */
async function measureJob(t: Active, w: Workload, direct: boolean, settings: Settings, outDir: string): Promise<ResultRow> {
  const { spec, record } = t;
  const running = t.running!;
  const name = `${spec.id}-${w.id}-${direct ? 'direct' : 'buffered'}`;
  if (direct && !record.direct) return { target: spec.id, workload: w.id, direct, note: 'O_DIRECT not supported' };
  if (running.pid !== undefined && !processAlive(running.pid)) throw new Error(`the serving process ${running.pid} died`);
  const output = join(outDir, 'fio', `${name}.json`);
  const before = running.pid !== undefined ? await cpuSeconds(running.pid) : undefined;
  const statsBefore = running.statsFile ? extractCounters((await readStats(running.statsFile))?.stats) : undefined;
  const loadavg = os.loadavg()[0];
  const trace = w.writes && t.dataFds ? await startPwriteTrace(running.pid!, join(t.dir, `${name}.perf`)) : undefined;
  const started = Date.now();
  let result;
  try {
    result = await runFio(
      fioArgs({ name, workload: w, direct, file: running.file, offset: running.offset, size: settings.size, runtimeSeconds: settings.runtimeSeconds, rampSeconds: settings.rampSeconds, output }),
      output,
      (settings.runtimeSeconds + settings.rampSeconds) * 1000 + 120_000,
    );
  } catch (err) {
    await trace?.stop().catch(() => {});
    throw err;
  }
  const wallSeconds = (Date.now() - started) / 1000;
  const after = running.pid !== undefined ? await cpuSeconds(running.pid) : undefined;
  let observed: ObservedRuns | undefined;
  if (trace) {
    observed = runStats(await trace.stop(), t.dataFds!);
    t.total.bytes += observed.bytes;
    t.total.runs += observed.runs;
    t.total.sequentialBytes += observed.sequentialBytes;
  }
  const cpu = before !== undefined && after !== undefined ? after - before : undefined;
  const ios = result.iops * (settings.runtimeSeconds + settings.rampSeconds);
  const row: ResultRow = { target: spec.id, workload: w.id, direct, result, cpuSeconds: cpu, cpuPerIoUs: cpu !== undefined && ios > 0 ? (cpu / ios) * 1e6 : undefined, loadavg, wallSeconds };
  const writeFraction = w.readPercent !== undefined ? 1 - w.readPercent / 100 : 1;
  if (statsBefore && w.writes && spec.requires.storeKind === 'lbs') {
    row.pattern = writePattern(statsBefore, extractCounters((await readStats(running.statsFile))?.stats), result.ioBytes * writeFraction, observed);
  }
  if (w.writes) t.clientBytesByFio += result.ioBytes * writeFraction;
  say(`  ${spec.label.padEnd(34)} ${(result.bandwidth / 1e6).toFixed(1).padStart(8)} MB/s ${result.iops.toFixed(0).padStart(7)} IOPS  p99 ${result.p99LatencyUs.toFixed(0).padStart(6)} µs  load ${loadavg!.toFixed(1)}`);
  return row;
}

function pct(v: number | undefined): string {
  return v === undefined ? '—' : `${(v * 100).toFixed(1)}%`;
}

function mb(v: number | undefined): string {
  return v === undefined ? '—' : (v / 1e6).toFixed(1);
}

/** The LBS write-pattern table: per write job, and for each LBS target overall. */
function formatPatterns(rows: readonly ResultRow[], records: readonly TargetRecord[], specs: readonly TargetSpec[]): string {
  const lbs = specs.filter((s) => s.requires.storeKind === 'lbs').map((s) => s.id);
  // Grouped by target, each target's jobs in the order they ran.
  const withPattern = lbs.flatMap((id) => rows.filter((r) => r.target === id && r.pattern));
  if (withPattern.length === 0) return '';
  const lines = [
    'LBS write pattern: client, data-file and log bytes from the store\'s stats (WA = (data + log) ÷ client);',
    'seq (bytes continuing the previous data-file write) and mean run from the traced data-file pwrites (perf);',
    '"store seq": the same fraction by the store\'s own counter, as a cross-check:',
    `${'target'.padEnd(26)} ${'job'.padEnd(30)} ${'client MB'.padStart(9)} ${'data MB'.padStart(9)} ${'log MB'.padStart(8)} ${'seq'.padStart(7)} ${'store seq'.padStart(9)} ${'mean run KiB'.padStart(12)} ${'WA'.padStart(6)}`,
  ];
  const line = (target: string, job: string, p: WritePattern) =>
    `${target.padEnd(26)} ${job.padEnd(30)} ${mb(p.clientBytes).padStart(9)} ${mb(p.dataBytes).padStart(9)} ${mb(p.logBytes).padStart(8)} ${pct(p.sequentialFraction).padStart(7)} ${pct(p.storeSequentialFraction).padStart(9)} ${(p.meanRunBytes === undefined ? '—' : (p.meanRunBytes / 1024).toFixed(0)).padStart(12)} ${(p.writeAmplification === undefined ? '—' : p.writeAmplification.toFixed(2)).padStart(6)}`;
  for (const r of withPattern) lines.push(line(r.target, `${r.workload} ${r.direct ? 'direct' : 'buffered'}`, r.pattern!));
  for (const rec of records.filter((x) => lbs.includes(x.id) && x.writePattern)) lines.push(line(rec.id, 'all write jobs', rec.writePattern!));
  return lines.join('\n') + '\n\n';
}

function formatSummary(rows: readonly RatedRow[], records: readonly TargetRecord[], specs: readonly TargetSpec[], worst: readonly RatedRow[]): string {
  const labels = new Map(specs.map((s) => [s.id, s.label]));
  const lines: string[] = ['Summary (geometric mean of vdiskfs ÷ its peer over every row):'];
  for (const rec of records.filter((r) => r.side === 'vdiskfs')) {
    if (rec.status === 'ran') {
      const g = geomeanVsPeer(rows, rec.id);
      lines.push(`  ${rec.label.padEnd(34)} vs ${labels.get(rec.peer ?? '') ?? rec.peer}: ${g === undefined ? '—' : g.toFixed(2)}`);
    } else if (rec.status !== 'not selected') {
      lines.push(`  ${rec.label.padEnd(34)} ${rec.status}: ${rec.reason ?? ''}`);
    }
  }
  for (const rec of records.filter((r) => r.side === 'vdiskfs' && r.status === 'ran')) {
    const w = furthestBehind(rows.filter((r) => r.target === rec.id), 1)[0];
    if (w) lines.push(`  ${rec.label.padEnd(34)} worst row: ${WORKLOADS.find((x) => x.id === w.workload)?.label}, ${w.direct ? 'direct' : 'buffered'}: ${w.ratios!.vsBest!.toFixed(2)} × ${labels.get(w.ratios!.best!)}`);
  }
  if (worst.length) {
    lines.push('Furthest behind the best peer:');
    for (const r of worst) {
      lines.push(`  ${labels.get(r.target)} — ${WORKLOADS.find((w) => w.id === r.workload)?.label}, ${r.direct ? 'direct' : 'buffered'}: ${r.ratios!.vsBest!.toFixed(2)} × ${labels.get(r.ratios!.best!)}`);
    }
  }
  const failed = records.filter((r) => r.status === 'failed');
  for (const f of failed) lines.push(`FAILED: ${f.id}: ${f.reason}`);
  return lines.join('\n');
}

async function firstLine(cmd: string, args: string[]): Promise<string | undefined> {
  const r = await run(cmd, args, { timeoutMs: 10_000 });
  return r.code === 0 ? (r.stdout || r.stderr).trim().split('\n').find((l) => l.trim()) : undefined;
}

async function machineInfo() {
  const cpus = os.cpus();
  const df = await run('df', ['-P', '-T', dirname(WORK_ROOT)]);
  const dfLine = df.stdout.trim().split('\n')[1]?.split(/\s+/);
  return {
    hostname: os.hostname(),
    cpuModel: cpus[0]?.model.trim() ?? '?',
    cpus: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    disk: dfLine ? { device: dfLine[0], fstype: dfLine[1], mountedOn: dfLine[6] } : undefined,
    fio: await firstLine('fio', ['--version']),
    qemuStorageDaemon: await firstLine('qemu-storage-daemon', ['--version']),
    xmount: await firstLine('xmount', ['--version']),
    commit: (await firstLine('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])) ?? '?',
    // The build under test is the working tree's: say whether it had changes beyond the commit.
    uncommittedSourceChanges: (await run('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no', '--', 'src'])).stdout.trim().split('\n').filter(Boolean).length,
    loadavgAtStart: os.loadavg(),
  };
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    say(`vdiskfs bench: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  },
);
