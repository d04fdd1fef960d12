/**
 * The write pattern on a store's data file, observed from outside the store: `perf record` on the
 * pwrite64 syscall tracepoint of the serving process, then the offsets and lengths of the writes to
 * the data file's descriptor. Independent of what the store counts about itself, and cheap: the
 * tracepoint fires once per data-file write (the LBS writes whole cluster buffers), not per request.
 *
 * Definitions: a write is sequential when it starts where the previous write to the data file
 * ended; a run is a maximal chain of sequential writes (the first write of a run is a seek).
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { run, spawnTracked, stopPid, waitExit } from './procs.js';

export interface PwriteEvent {
  readonly fd: number;
  readonly count: number;
  readonly pos: number;
}

const EVENT_RE = /sys_enter_pwrite64: fd: 0x([0-9a-f]+), buf: 0x[0-9a-f]+, count: 0x([0-9a-f]+), pos: 0x([0-9a-f]+)/;

/** Parses `perf script` output of syscalls:sys_enter_pwrite64 events, in order. */
export function parsePerfScript(text: string): PwriteEvent[] {
  const out: PwriteEvent[] = [];
  for (const line of text.split('\n')) {
    const m = EVENT_RE.exec(line);
    if (m) out.push({ fd: parseInt(m[1]!, 16), count: parseInt(m[2]!, 16), pos: parseInt(m[3]!, 16) });
  }
  return out;
}

export interface RunStats {
  /** Bytes written to the file. */
  readonly bytes: number;
  readonly writes: number;
  /** Maximal chains of writes each starting where the previous ended. */
  readonly runs: number;
  /** Bytes of writes that continued the previous write (every write of a run but its first). */
  readonly sequentialBytes: number;
}

/** The run structure of the writes to one file (through any of the descriptors given). */
export function runStats(events: readonly PwriteEvent[], fds: number | readonly number[]): RunStats {
  const set = new Set(typeof fds === 'number' ? [fds] : fds);
  let bytes = 0;
  let writes = 0;
  let runs = 0;
  let sequentialBytes = 0;
  let end: number | undefined;
  for (const e of events) {
    if (!set.has(e.fd) || e.count === 0) continue;
    writes++;
    bytes += e.count;
    if (e.pos === end) sequentialBytes += e.count;
    else runs++;
    end = e.pos + e.count;
  }
  return { bytes, writes, runs, sequentialBytes };
}

/** The descriptors a process holds on `path`, from /proc/PID/fd. */
export function fdsOf(pid: number, path: string): number[] {
  const out: number[] = [];
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === path) out.push(Number(fd));
      } catch {
        /* closed meanwhile */
      }
    }
  } catch {
    /* process gone */
  }
  return out;
}

let perfUsable: boolean | undefined;

/** Whether perf can trace syscalls here (installed, tracefs present, permitted: root, no seccomp block). */
export function perfAvailable(): boolean {
  if (perfUsable === undefined) {
    const r = spawnSync('perf', ['record', '-q', '-e', 'syscalls:sys_enter_pwrite64', '-o', '/dev/null', 'true'], { stdio: 'ignore', timeout: 20_000 });
    perfUsable = r.status === 0;
  }
  return perfUsable;
}

/** Starts tracing pwrite64 in `pid` (all its threads); `stop()` returns the events in order. */
export async function startPwriteTrace(pid: number, dataFile: string): Promise<{ stop(): Promise<PwriteEvent[]> }> {
  const child = spawnTracked('perf', ['record', '-q', '-e', 'syscalls:sys_enter_pwrite64', '-p', String(pid), '-o', dataFile], { stdio: 'ignore' });
  // perf needs a moment to attach to every thread; the job's ramp covers the rest.
  await new Promise((r) => setTimeout(r, 300));
  return {
    async stop() {
      const perfPid = child.pid!;
      // SIGINT makes perf flush and close its file.
      await stopPid(perfPid, 'SIGINT', 15_000);
      await waitExit(perfPid, 1000);
      const r = await run('perf', ['script', '-i', dataFile], { timeoutMs: 60_000 });
      if (r.code !== 0) throw new Error(`perf script failed: ${r.stderr.trim().slice(-300)}`);
      return parsePerfScript(r.stdout);
    },
  };
}
