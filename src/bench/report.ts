/**
 * Results: rows (one per target × workload × buffered/direct), the ratios of every vdiskfs row to
 * its peers measured in the same run, the terminal table, and an SVG chart. Pure functions of the
 * rows, so the arithmetic is unit-tested.
 */
import type { FioResult, Workload } from './fio.js';

export type Side = 'physical' | 'peer' | 'vdiskfs';

export interface TargetInfo {
  readonly id: string;
  readonly label: string;
  readonly side: Side;
  /** For a vdiskfs target: the peer it is meant to replace (its "vs peer" ratio). */
  readonly peer?: string;
}

export interface Row {
  readonly target: string;
  readonly workload: string;
  readonly direct: boolean;
  readonly result?: FioResult;
  /** CPU seconds (user + system) the serving process used during the job, ramp included. */
  readonly cpuSeconds?: number;
  /** Server CPU µs per I/O: cpuSeconds over the I/Os of the ramp and the measured time (at the measured rate). */
  readonly cpuPerIoUs?: number;
  /** Why there is no result (the target does not support O_DIRECT, the job failed, …). */
  readonly note?: string;
}

export interface Ratios {
  /** vdiskfs ÷ its designated peer. */
  readonly vsPeer?: number;
  readonly peer?: string;
  /** vdiskfs ÷ the fastest peer (any FUSE peer) for the same workload and mode. */
  readonly vsBest?: number;
  readonly best?: string;
  /** vdiskfs ÷ the raw file itself (the physical limit). */
  readonly vsPhysical?: number;
}

export interface RatedRow extends Row {
  readonly ratios?: Ratios;
}

function key(workload: string, direct: boolean): string {
  return `${workload}/${direct ? 'direct' : 'buffered'}`;
}

/** Throughput is the figure compared: bytes per second (IOPS ratios are the same at a fixed block size). */
function throughput(row: Row | undefined): number | undefined {
  const bw = row?.result?.bandwidth;
  return bw !== undefined && bw > 0 && Number.isFinite(bw) ? bw : undefined;
}

/**
 * Adds ratios to every vdiskfs row: against its designated peer, against the fastest peer with a
 * result for the same workload and mode, and against the raw file. A ratio is absent when either
 * side has no result (never 0 or Infinity).
 */
export function rateRows(rows: readonly Row[], targets: readonly TargetInfo[]): RatedRow[] {
  const byId = new Map(targets.map((t) => [t.id, t]));
  const index = new Map<string, Row>();
  for (const r of rows) index.set(`${r.target}|${key(r.workload, r.direct)}`, r);
  const find = (target: string, r: Row) => index.get(`${target}|${key(r.workload, r.direct)}`);
  const peers = targets.filter((t) => t.side === 'peer');
  const physical = targets.find((t) => t.side === 'physical');

  return rows.map((r) => {
    const t = byId.get(r.target);
    const mine = throughput(r);
    if (!t || t.side !== 'vdiskfs' || mine === undefined) return { ...r };
    let best: { id: string; bw: number } | undefined;
    for (const p of peers) {
      const bw = throughput(find(p.id, r));
      if (bw !== undefined && (!best || bw > best.bw)) best = { id: p.id, bw };
    }
    const peerBw = t.peer ? throughput(find(t.peer, r)) : undefined;
    const physBw = physical ? throughput(find(physical.id, r)) : undefined;
    const ratios: Ratios = {
      peer: t.peer,
      vsPeer: peerBw !== undefined ? mine / peerBw : undefined,
      best: best?.id,
      vsBest: best ? mine / best.bw : undefined,
      vsPhysical: physBw !== undefined ? mine / physBw : undefined,
    };
    return { ...r, ratios };
  });
}

/** The `n` vdiskfs rows furthest behind their best peer (smallest vsBest), worst first. */
export function furthestBehind(rows: readonly RatedRow[], n: number): RatedRow[] {
  return rows
    .filter((r) => r.ratios?.vsBest !== undefined)
    .sort((a, b) => a.ratios!.vsBest! - b.ratios!.vsBest!)
    .slice(0, n);
}

/** Geometric mean of the vdiskfs ÷ peer ratios of one target (one figure per target for the summary). */
export function geomeanVsPeer(rows: readonly RatedRow[], target: string): number | undefined {
  const values = rows.filter((r) => r.target === target && r.ratios?.vsPeer !== undefined).map((r) => r.ratios!.vsPeer!);
  if (values.length === 0) return undefined;
  return Math.exp(values.reduce((s, v) => s + Math.log(v), 0) / values.length);
}

// ---------------------------------------------------------------------------------------------
// Formatting

/** The rows of one workload and mode, in the targets' declared order (jobs run in rotating order). */
function blockRows<R extends Row>(rows: readonly R[], targets: readonly TargetInfo[], workload: string, direct: boolean): R[] {
  const block = rows.filter((r) => r.workload === workload && r.direct === direct);
  const rank = (id: string) => {
    const i = targets.findIndex((t) => t.id === id);
    return i < 0 ? targets.length : i;
  };
  return block.sort((a, b) => rank(a.target) - rank(b.target));
}

function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function fmtRatio(value: number | undefined): string {
  return value === undefined ? '—' : value.toFixed(2);
}

function pad(cells: string[], widths: number[], alignLeft: number): string {
  return cells.map((c, i) => (i < alignLeft ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

/**
 * The terminal table: one block per workload and mode, one line per target with MB/s, IOPS, mean
 * and p99 latency (µs), CPU seconds of the serving process, and for vdiskfs rows the ratios.
 */
export function formatTable(rows: readonly RatedRow[], targets: readonly TargetInfo[], workloads: readonly Workload[]): string {
  const labels = new Map(targets.map((t) => [t.id, t.label]));
  const header = ['target', 'MB/s', 'IOPS', 'mean µs', 'p99 µs', 'CPU s', 'CPU µs/IO', 'vs peer', 'vs best', 'vs raw file'];
  const lines: string[][] = [];
  const blocks: { title: string; start: number; end: number }[] = [];
  for (const w of workloads) {
    for (const direct of [false, true]) {
      const block = blockRows(rows, targets, w.id, direct);
      if (block.length === 0) continue;
      const start = lines.length;
      for (const r of block) {
        const res = r.result;
        const ratios = r.ratios;
        lines.push([
          labels.get(r.target) ?? r.target,
          res ? fmt(res.bandwidth / 1e6, 1) : r.note ?? 'no result',
          res ? fmt(res.iops) : '',
          res ? fmt(res.meanLatencyUs, 1) : '',
          res ? fmt(res.p99LatencyUs, 0) : '',
          res ? fmt(r.cpuSeconds, 2) : '',
          res ? fmt(r.cpuPerIoUs, 1) : '',
          ratios ? `${fmtRatio(ratios.vsPeer)}` : '',
          ratios ? `${fmtRatio(ratios.vsBest)}` : '',
          ratios ? `${fmtRatio(ratios.vsPhysical)}` : '',
        ]);
      }
      blocks.push({ title: `${w.label}, ${direct ? 'direct' : 'buffered'}`, start, end: lines.length });
    }
  }
  // Labels are indented under their block title; a long note (why a row has no result) is not
  // counted in the MB/s column's width: it runs across the numeric columns instead.
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (i === 0 ? l[0]!.length + 2 : i === 1 && l[2] === '' ? 0 : l[i]!.length))));
  const out: string[] = [pad(header, widths, 1), widths.map((w) => '─'.repeat(w)).join('  ')];
  for (const b of blocks) {
    out.push(b.title);
    for (let i = b.start; i < b.end; i++) {
      const l = lines[i]!;
      if (l[2] === '') out.push(`${('  ' + l[0]!).padEnd(widths[0]!)}  ${l[1]}`);
      else out.push(pad(['  ' + l[0]!, ...l.slice(1)], widths, 1).trimEnd());
    }
  }
  return out.join('\n');
}

/** Markdown version of the ratio summary: per workload and mode, vdiskfs targets against their peers. */
export function formatMarkdown(rows: readonly RatedRow[], targets: readonly TargetInfo[], workloads: readonly Workload[]): string {
  const labels = new Map(targets.map((t) => [t.id, t.label]));
  const out = ['| workload | mode | target | MB/s | IOPS | mean µs | p99 µs | CPU s | CPU µs/IO | vs peer | vs best | vs raw file |', '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'];
  for (const w of workloads) {
    for (const direct of [false, true]) {
      for (const r of blockRows(rows, targets, w.id, direct)) {
        const res = r.result;
        const ra = r.ratios;
        out.push(
          `| ${w.label} | ${direct ? 'direct' : 'buffered'} | ${labels.get(r.target) ?? r.target} | ${res ? fmt(res.bandwidth / 1e6, 1) : r.note ?? '—'} | ${res ? fmt(res.iops) : ''} | ${res ? fmt(res.meanLatencyUs, 1) : ''} | ${res ? fmt(res.p99LatencyUs) : ''} | ${res ? fmt(r.cpuSeconds, 2) : ''} | ${res ? fmt(r.cpuPerIoUs, 1) : ''} | ${ra ? fmtRatio(ra.vsPeer) : ''} | ${ra ? fmtRatio(ra.vsBest) : ''} | ${ra ? fmtRatio(ra.vsPhysical) : ''} |`,
        );
      }
    }
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Chart

const COLORS = ['#444444', '#1f77b4', '#17becf', '#9467bd', '#d62728', '#ff7f0e', '#2ca02c', '#bcbd22', '#e377c2', '#8c564b', '#7f7f7f', '#aec7e8', '#98df8a', '#ffbb78'];

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * A grouped bar chart (SVG): one group per workload and mode, one bar per target, each bar the
 * target's throughput divided by the fastest FUSE peer's in that group (so groups with very
 * different absolute speeds share one axis; 1.0 is the best peer). The raw file often goes far
 * above 1 (page cache); bars are clipped at the top of the axis and labelled with their value.
 */
export function renderSvg(rows: readonly Row[], targets: readonly TargetInfo[], workloads: readonly Workload[], title: string): string {
  const groups: { label: string; workload: string; direct: boolean }[] = [];
  for (const w of workloads) {
    for (const direct of [false, true]) {
      if (rows.some((r) => r.workload === w.id && r.direct === direct && r.result)) {
        groups.push({ label: `${w.label}${direct ? ' direct' : ''}`, workload: w.id, direct });
      }
    }
  }
  const shown = targets.filter((t) => rows.some((r) => r.target === t.id && r.result));
  const peers = targets.filter((t) => t.side === 'peer').map((t) => t.id);
  const yMax = 2;
  const barW = 9;
  const groupW = shown.length * barW + 14;
  const left = 50;
  const top = 40;
  const plotH = 260;
  const width = left + groups.length * groupW + 20;
  const legendRows = Math.ceil(shown.length / 3);
  const height = top + plotH + 150 + legendRows * 16;
  const y = (v: number) => top + plotH - (Math.min(v, yMax) / yMax) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="10">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="13">${escapeXml(title)}</text>`,
  ];
  for (let v = 0; v <= yMax; v += 0.5) {
    parts.push(`<line x1="${left}" x2="${width - 10}" y1="${y(v)}" y2="${y(v)}" stroke="${v === 1 ? '#888' : '#ddd'}"/>`);
    parts.push(`<text x="${left - 5}" y="${y(v) + 3}" text-anchor="end">${v.toFixed(1)}</text>`);
  }
  parts.push(`<text x="12" y="${top + plotH / 2}" transform="rotate(-90 12 ${top + plotH / 2})" text-anchor="middle">throughput ÷ best peer</text>`);
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + 7;
    const groupRows = rows.filter((r) => r.workload === g.workload && r.direct === g.direct);
    const best = Math.max(0, ...groupRows.filter((r) => peers.includes(r.target)).map((r) => r.result?.bandwidth ?? 0));
    shown.forEach((t, ti) => {
      const r = groupRows.find((x) => x.target === t.id);
      if (!r?.result || best <= 0) return;
      const v = r.result.bandwidth / best;
      const x = x0 + ti * barW;
      parts.push(`<rect x="${x}" y="${y(v)}" width="${barW - 1}" height="${top + plotH - y(v)}" fill="${COLORS[ti % COLORS.length]}"><title>${escapeXml(`${t.label}: ${(r.result.bandwidth / 1e6).toFixed(1)} MB/s, ${v.toFixed(2)} × best peer`)}</title></rect>`);
      if (v > yMax) parts.push(`<text x="${x + barW / 2}" y="${top - 3}" text-anchor="middle" font-size="7">${v.toFixed(0)}</text>`);
    });
    const cx = x0 + (shown.length * barW) / 2;
    parts.push(`<text x="${cx}" y="${top + plotH + 10}" text-anchor="end" transform="rotate(-40 ${cx} ${top + plotH + 10})">${escapeXml(g.label)}</text>`);
  });
  const ly = top + plotH + 135;
  shown.forEach((t, ti) => {
    const lx = left + (ti % 3) * 260;
    const yy = ly + Math.floor(ti / 3) * 16;
    parts.push(`<rect x="${lx}" y="${yy - 8}" width="10" height="10" fill="${COLORS[ti % COLORS.length]}"/>`);
    parts.push(`<text x="${lx + 14}" y="${yy + 1}">${escapeXml(t.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// The reference-run summary for docs/benchmarks.md

export interface ResultsDoc {
  startedAt: string;
  finishedAt: string;
  settings: { quick: boolean; size: number; runtimeSeconds: number; rampSeconds: number; workloads: string[] };
  machine: Record<string, unknown>;
  targets: (TargetInfo & { status: string; reason?: string; writePattern?: Record<string, number | undefined> })[];
  rows: (RatedRow & { pattern?: Record<string, number | undefined>; loadavg?: number })[];
}

/**
 * Markdown for a reference run, generated from its results.json (so the numbers in the docs are
 * the harness's, not retyped): one matrix of MB/s with each vdiskfs figure's ratio to its peer,
 * the per-target geometric means, the rows furthest behind, and the LBS write pattern.
 */
export function formatReference(doc: ResultsDoc, workloads: readonly Workload[]): string {
  const ran = doc.targets.filter((t) => t.status === 'ran');
  const infos: TargetInfo[] = doc.targets.map((t) => ({ id: t.id, label: t.label, side: t.side, peer: t.peer }));
  const label = new Map(infos.map((t) => [t.id, t.label]));
  const wl = (id: string) => workloads.find((w) => w.id === id)?.label ?? id;
  const out: string[] = [];
  const m = doc.machine;
  const disk = m.disk as { device?: string; fstype?: string } | undefined;
  out.push(
    `Run ${doc.startedAt} → ${doc.finishedAt}, commit ${m.commit}${m.uncommittedSourceChanges ? ` (plus uncommitted changes to ${m.uncommittedSourceChanges} files under src/)` : ''}, ${doc.settings.quick ? 'QUICK' : 'full'} settings ` +
      `(${doc.settings.size / 2 ** 20} MiB disks, ${doc.settings.runtimeSeconds} s per job after a ${doc.settings.rampSeconds} s ramp).`,
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, kernel ${m.kernel}, ${disk?.fstype ?? '?'} on ${disk?.device ?? '?'}; ` +
      `Node ${m.node}, ${m.fio}, ${String(m.qemuStorageDaemon ?? '').replace(/ Copyright.*/, '')}, ${String(m.xmount ?? '').replace(/ Copyright.*/, '')}. ` +
      `Load average (1 min) ${(m.loadavgAtStart as number[] | undefined)?.[0]?.toFixed(1)} at the start, ${(m.loadavgAtEnd as number[] | undefined)?.[0]?.toFixed(1)} at the end.`,
    '',
  );
  const peers = ran.filter((t) => t.side !== 'vdiskfs');
  const ours = ran.filter((t) => t.side === 'vdiskfs');
  const peerLabel = (id: string | undefined) => (id ? label.get(id) ?? id : '—');
  out.push(`MB/s; for vdiskfs, in parentheses, the ratio to its peer (${ours.map((t) => `${t.label} → ${peerLabel(t.peer)}`).join('; ')}).`, '');
  out.push(`| workload | mode | ${[...peers, ...ours].map((t) => t.label).join(' | ')} |`);
  out.push(`|---|---|${[...peers, ...ours].map(() => '---:').join('|')}|`);
  for (const w of workloads) {
    for (const direct of [false, true]) {
      const get = (id: string) => doc.rows.find((r) => r.target === id && r.workload === w.id && r.direct === direct);
      if (![...peers, ...ours].some((t) => get(t.id)?.result)) continue;
      const cells = [...peers, ...ours].map((t) => {
        const r = get(t.id);
        if (!r?.result) return r?.note ? 'n/a' : '—';
        const mbs = fmt(r.result.bandwidth / 1e6, 0);
        return t.side === 'vdiskfs' ? `${mbs} (${fmtRatio(r.ratios?.vsPeer)})` : mbs;
      });
      out.push(`| ${w.label} | ${direct ? 'direct' : 'buffered'} | ${cells.join(' | ')} |`);
    }
  }
  out.push('', 'Server CPU per I/O (µs of user + system time of the serving process; the raw file has no server):', '');
  const served = [...peers, ...ours].filter((t) => t.side !== 'physical');
  out.push(`| workload | mode | ${served.map((t) => t.label).join(' | ')} |`, `|---|---|${served.map(() => '---:').join('|')}|`);
  for (const w of workloads) {
    for (const direct of [false, true]) {
      const cells = served.map((t) => doc.rows.find((r) => r.target === t.id && r.workload === w.id && r.direct === direct)?.cpuPerIoUs);
      if (cells.every((c) => c === undefined)) continue;
      out.push(`| ${w.label} | ${direct ? 'direct' : 'buffered'} | ${cells.map((c) => fmt(c, 0)).join(' | ')} |`);
    }
  }
  out.push('', '| vdiskfs target | its peer | geometric mean of vdiskfs ÷ peer | worst row vs the best peer |', '|---|---|---:|---|');
  for (const t of ours) {
    const g = geomeanVsPeer(doc.rows, t.id);
    const w = furthestBehind(doc.rows.filter((r) => r.target === t.id), 1)[0];
    out.push(`| ${t.label} | ${peerLabel(t.peer)} | ${g === undefined ? '—' : g.toFixed(2)} | ${w ? `${wl(w.workload)}, ${w.direct ? 'direct' : 'buffered'}: ${fmtRatio(w.ratios?.vsBest)} × ${peerLabel(w.ratios?.best)}` : '—'} |`);
  }
  for (const t of doc.targets.filter((x) => x.status === 'unavailable' || x.status === 'failed')) out.push(`| ${t.label} | ${peerLabel(t.peer)} | ${t.status}: ${t.reason ?? ''} | |`);
  const worst = furthestBehind(doc.rows, 3);
  if (worst.length) {
    out.push('', 'Rows furthest behind the best peer:', '');
    for (const r of worst) out.push(`- ${label.get(r.target)}, ${wl(r.workload)}, ${r.direct ? 'direct' : 'buffered'}: ${fmt(r.result!.bandwidth / 1e6, 1)} MB/s, ${fmtRatio(r.ratios?.vsBest)} × ${peerLabel(r.ratios?.best)}`);
  }
  const patterned = doc.targets.flatMap((t) => doc.rows.filter((r) => r.target === t.id && r.pattern));
  if (patterned.length) {
    out.push('', '| LBS target | write job | client MB | data-file MB | log MB | sequential (trace) | sequential (store) | mean run KiB | WA |', '|---|---|---:|---:|---:|---:|---:|---:|---:|');
    const line = (t: string, job: string, p: Record<string, number | undefined>) =>
      `| ${label.get(t) ?? t} | ${job} | ${p.clientBytes === undefined ? '—' : fmt(p.clientBytes / 1e6, 0)} | ${p.dataBytes === undefined ? '—' : fmt(p.dataBytes / 1e6, 0)} | ${p.logBytes === undefined ? '—' : fmt(p.logBytes / 1e6, 1)} | ${p.sequentialFraction === undefined ? '—' : `${(p.sequentialFraction * 100).toFixed(0)}%`} | ${p.storeSequentialFraction === undefined ? '—' : `${(p.storeSequentialFraction * 100).toFixed(0)}%`} | ${p.meanRunBytes === undefined ? '—' : fmt(p.meanRunBytes / 1024, 0)} | ${p.writeAmplification === undefined ? '—' : p.writeAmplification.toFixed(2)} |`;
    for (const r of patterned) out.push(line(r.target, `${wl(r.workload)}, ${r.direct ? 'direct' : 'buffered'}`, r.pattern!));
    for (const t of doc.targets.filter((x) => x.writePattern)) out.push(line(t.id, '**all write jobs**', t.writePattern!));
  }
  return out.join('\n') + '\n';
}
