/**
 * The benchmark targets, declared in one table. Each target is a file of the same disk size, backed
 * by files in the run's scratch directory (so on the same disk), that fio reads and writes:
 *
 *   raw file              the backing file itself: the physical limit (plus the page cache)
 *   QEMU FUSE export      qemu-storage-daemon --export type=fuse of a raw file, and of a VHDX made by qemu-img
 *   xmount                xmount --in raw … --out vhd --cache …: "present one format as another"
 *   vdiskfs               each store kind × each view, through the built CLI's mount daemon
 *
 * A target whose store kind, view or tool is missing from this build is reported as not available
 * (the run fails only when it was asked for by name).
 */
import { mkdir, open, readdir, readFile } from 'node:fs/promises';
import {
  BAT_ENTRY_SIZE,
  PayloadBlockState,
  REGION_GUID_BAT,
  REGION_GUID_METADATA,
  REGION_TABLE1_OFFSET,
  REGION_TABLE_SIZE,
  batGeometry,
  decodeBatEntry,
  decodeMetadataItems,
  decodeMetadataTable,
  decodeRegionTable,
  payloadBatIndex,
} from '../formats/vhdx.js';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { storeKinds } from '../stores/registry.js';
import { viewKind } from '../views/registry.js';
import type { TargetInfo } from './report.js';
import { Cleanup, processAlive, run, sh, spawnTracked, stopPid, unmountFuse, waitExit, waitForMount } from './procs.js';

export interface TargetContext {
  /** This target's own scratch directory (removed by the run's cleanup). */
  readonly dir: string;
  /** Disk size in bytes. */
  readonly size: number;
  readonly cleanup: Cleanup;
  /** The built CLI (dist/cli/main.js). */
  readonly cli: string;
}

export interface RunningTarget {
  /** The file fio works on. */
  readonly file: string;
  /** Where the disk's payload starts in that file. */
  readonly offset: number;
  /** The process serving the file (for CPU seconds), if any. */
  readonly pid?: number;
  /** A vdiskfs store's stats file (.vdiskfs/NAME.stats.json). */
  readonly statsFile?: string;
  /** The store's data file, whose writes are traced for the write pattern (LBS). */
  readonly dataFile?: string;
  /** Stops the server and unmounts (also registered with the cleanup, so it runs on failure). */
  stop(): Promise<void>;
}

export interface Requirements {
  readonly tools?: readonly string[];
  readonly storeKind?: string;
  readonly view?: string;
}

export interface TargetSpec extends TargetInfo {
  readonly requires: Requirements;
  /** Part of a QUICK run (the full run has every target). */
  readonly quick: boolean;
  /** Extra details for the results (store options, how the peer is configured). */
  readonly details: string;
  start(ctx: TargetContext): Promise<RunningTarget>;
}

function hasTool(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/** Why a target cannot run in this build or on this machine, or undefined when it can. */
export function unavailableReason(spec: TargetSpec): string | undefined {
  const r = spec.requires;
  const missing = (r.tools ?? []).filter((t) => !hasTool(t));
  if (missing.length) return `not available: ${missing.join(', ')} not installed (scripts/install-deps.sh installs it)`;
  if (r.storeKind && !storeKinds().some((k) => k.kind === r.storeKind)) return `not available in this build: no "${r.storeKind}" store kind`;
  if (r.view && !viewKind(r.view)) return `not available in this build: no "${r.view}" view`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Peers

function rawFile(): TargetSpec {
  return {
    id: 'raw-file',
    label: 'raw file (no FUSE)',
    side: 'physical',
    requires: {},
    quick: true,
    details: 'fio on the backing file itself; buffered rows are the page cache',
    async start(ctx) {
      const file = join(ctx.dir, 'disk.img');
      await sh('truncate', ['-s', String(ctx.size), file]);
      return { file, offset: 0, stop: async () => {} };
    },
  };
}

/** Waits for a regular-file FUSE export to appear; QEMU mounts on the file itself. */
async function startQsd(ctx: TargetContext, blockdevs: string[], what: string): Promise<RunningTarget> {
  const exportFile = join(ctx.dir, 'export.img');
  closeSync(openSync(exportFile, 'w'));
  const logFile = join(ctx.dir, 'qsd.log');
  const log = openSync(logFile, 'w');
  const child = spawnTracked(
    'qemu-storage-daemon',
    [...blockdevs, '--export', `type=fuse,id=exp,node-name=fmt,mountpoint=${exportFile},writable=on`],
    { stdio: ['ignore', log, log] },
  );
  closeSync(log);
  const pid = child.pid!;
  const stop = async () => {
    // QEMU unmounts its export when it exits on SIGTERM.
    await stopPid(pid, 'SIGTERM', 10_000);
    await unmountFuse(exportFile);
  };
  ctx.cleanup.add(`stop ${what} (pid ${pid})`, stop);
  await waitForMount(exportFile, { pid, timeoutMs: 15_000, what, log: () => readFileSync(logFile, 'utf8') });
  return { file: exportFile, offset: 0, pid, stop };
}

function qsdRaw(): TargetSpec {
  return {
    id: 'qsd-raw',
    label: 'QEMU FUSE export, raw',
    side: 'peer',
    requires: { tools: ['qemu-storage-daemon'] },
    quick: true,
    details: 'qemu-storage-daemon, file (page cache, aio=threads) → raw → FUSE export, writable',
    async start(ctx) {
      const img = join(ctx.dir, 'disk.img');
      await sh('truncate', ['-s', String(ctx.size), img]);
      return startQsd(
        ctx,
        ['--blockdev', `driver=file,node-name=file,filename=${img}`, '--blockdev', 'driver=raw,node-name=fmt,file=file'],
        'qemu-storage-daemon (raw)',
      );
    },
  };
}

function qsdVhdx(): TargetSpec {
  return {
    id: 'qsd-vhdx',
    label: 'QEMU FUSE export, VHDX',
    side: 'peer',
    requires: { tools: ['qemu-storage-daemon', 'qemu-img'] },
    quick: true,
    details: 'qemu-img create -f vhdx -o subformat=fixed,block_state_zero=off (every block present, like vdiskfs\'s VHDX view), exported by qemu-storage-daemon through driver=vhdx',
    async start(ctx) {
      const img = join(ctx.dir, 'disk.vhdx');
      await sh('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_state_zero=off', img, String(ctx.size)], { timeoutMs: 120_000 });
      return startQsd(
        ctx,
        ['--blockdev', `driver=file,node-name=file,filename=${img}`, '--blockdev', 'driver=vhdx,node-name=fmt,file=file'],
        'qemu-storage-daemon (vhdx)',
      );
    },
  };
}

/** The PID of the xmount daemon serving `mnt` (xmount forks into the background). */
function findXmountDaemon(mnt: string): number | undefined {
  for (const entry of readdirSyncSafe('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('xmount') && argv.includes(mnt) && processAlive(Number(entry))) return Number(entry);
    } catch {
      /* exited */
    }
  }
  return undefined;
}

function readdirSyncSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function xmountVhd(): TargetSpec {
  return {
    id: 'xmount-vhd',
    label: 'xmount raw→VHD',
    side: 'peer',
    requires: { tools: ['xmount'] },
    quick: true,
    details: 'xmount --in raw disk.img --out vhd --cache FILE (writes go to the cache file)',
    async start(ctx) {
      const img = join(ctx.dir, 'disk.img');
      const cache = join(ctx.dir, 'xmount.cache');
      const mnt = join(ctx.dir, 'mnt');
      await mkdir(mnt);
      await sh('truncate', ['-s', String(ctx.size), img]);
      // xmount daemonizes: the command returns once its daemon is serving; the daemon is found by its arguments.
      const r = await run('xmount', ['--in', 'raw', img, '--out', 'vhd', '--cache', cache, mnt], { timeoutMs: 30_000 });
      let pid: number | undefined;
      const stop = async () => {
        pid ??= findXmountDaemon(mnt);
        await unmountFuse(mnt);
        if (pid !== undefined) {
          // Unmounting ends the daemon; make sure.
          if (!(await waitExit(pid, 10_000))) await stopPid(pid, 'SIGTERM', 5_000);
        }
      };
      ctx.cleanup.add('stop xmount', stop);
      if (r.code !== 0) throw new Error(`xmount failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-600)}`);
      await waitForMount(mnt, { timeoutMs: 15_000, what: 'xmount' });
      pid = findXmountDaemon(mnt);
      const vhd = (await readdir(mnt)).find((f) => f.endsWith('.vhd'));
      if (!vhd) throw new Error(`xmount shows no .vhd file in ${mnt}`);
      return { file: join(mnt, vhd), offset: 0, pid, stop };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// vdiskfs

/** The `--checksum` choices `vdiskfs create lbs --help` lists (yargs prints them as [choices: …]). */
export function lbsChecksumChoices(cli: string): { choices: string[]; default?: string } {
  const r = spawnSync(process.execPath, [cli, 'create', 'lbs', '--help'], { encoding: 'utf8' });
  const text = `${r.stdout ?? ''}`;
  const line = text.split('\n').findIndex((l) => /--checksum/.test(l));
  if (line < 0) return { choices: [] };
  // An option's description may wrap; its choices and default follow within a few lines.
  const block = text.split('\n').slice(line, line + 6).join(' ');
  const choices = /\[choices: ([^\]]+)\]/.exec(block)?.[1]?.match(/"([^"]+)"/g)?.map((s) => s.slice(1, -1)) ?? [];
  const def = /\[default: "?([^"\]]+)"?\]/.exec(block)?.[1];
  return { choices, default: def };
}

interface VdiskfsStore {
  kind: string;
  /** The data file whose write pattern is traced, if any. */
  dataFile?(dir: string): string;
  /** Makes what the create command expects to exist. */
  prepare?(dir: string): Promise<void>;
  /** Extra `vdiskfs create KIND` arguments; `dir` is the target's scratch directory. */
  createArgs(dir: string): string[];
}

/**
 * Where the payload starts in a VHDX file, read from the file itself with the pure VHDX decoders:
 * region table → metadata (block size, virtual size) → BAT. The harness addresses the payload
 * directly (as a hypervisor's VHDX driver would after translation), so it insists that every block
 * is FULLY_PRESENT and laid out contiguously in block order, as vdiskfs's VHDX view lays it out.
 */
export async function vhdxPayloadOffset(file: string, size: number): Promise<number> {
  const fh = await open(file, 'r');
  try {
    const readAt = async (offset: number, length: number) => {
      const buf = new Uint8Array(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (bytesRead !== length) throw new Error(`${file}: short read of ${length} bytes at ${offset}`);
      return buf;
    };
    const regions = decodeRegionTable(await readAt(REGION_TABLE1_OFFSET, REGION_TABLE_SIZE), `${file} region table`);
    const batRegion = regions.find((r) => r.guid === REGION_GUID_BAT);
    const metaRegion = regions.find((r) => r.guid === REGION_GUID_METADATA);
    if (!batRegion || !metaRegion) throw new Error(`${file}: the region table lacks the BAT or the metadata region`);
    const metaBytes = await readAt(metaRegion.fileOffset, metaRegion.length);
    const meta = decodeMetadataItems(decodeMetadataTable(metaBytes, metaRegion.length), (o, l) => metaBytes.subarray(o, o + l));
    if (meta.virtualDiskSize !== size) throw new Error(`${file}: virtual size ${meta.virtualDiskSize}, expected ${size}`);
    const g = batGeometry({ virtualSize: meta.virtualDiskSize, blockSize: meta.fileParameters.blockSize, logicalSectorSize: meta.logicalSectorSize });
    const bat = await readAt(batRegion.fileOffset, g.entries * BAT_ENTRY_SIZE);
    const first = decodeBatEntry(bat, 0).fileOffset;
    for (let block = 0; block < g.payloadBlocks; block++) {
      const e = decodeBatEntry(bat, payloadBatIndex(block, g.chunkRatio) * BAT_ENTRY_SIZE);
      if (e.state !== PayloadBlockState.FULLY_PRESENT || e.fileOffset !== first + block * g.blockSize) {
        throw new Error(`${file}: payload block ${block} is not fully present at ${first + block * g.blockSize} (state ${e.state}, offset ${e.fileOffset}); the harness needs a contiguous payload`);
      }
    }
    return first;
  } finally {
    await fh.close();
  }
}

async function startVdiskfs(ctx: TargetContext, store: VdiskfsStore, view: string, mountArgs: readonly string[]): Promise<RunningTarget> {
  const src = join(ctx.dir, 'src');
  const mnt = join(ctx.dir, 'mnt');
  await mkdir(src);
  await mkdir(mnt);
  const name = 'bench';
  await store.prepare?.(ctx.dir);
  await sh(process.execPath, [ctx.cli, 'create', store.kind, join(src, `${name}.vdisk`), '--size', String(ctx.size), ...store.createArgs(ctx.dir)], {
    timeoutMs: 120_000,
  });
  const logFile = join(ctx.dir, 'daemon.log');
  // The daemon runs in the foreground as our child (so we hold its PID) and reports readiness over IPC.
  const child = spawnTracked(
    process.execPath,
    [ctx.cli, 'mount', src, mnt, '--foreground', '--log-level', 'warn', '--log-file', logFile, '--views', view, ...mountArgs],
    { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const pid = child.pid!;
  const stop = async () => {
    // SIGTERM: the daemon flushes every store, unmounts and exits (an LBS flush may take a while).
    await stopPid(pid, 'SIGTERM', 120_000);
    await unmountFuse(mnt);
  };
  ctx.cleanup.add(`stop vdiskfs (pid ${pid})`, stop);
  const outcome = await new Promise<{ type: string; message?: string; code?: number | null }>((done) => {
    const timer = setTimeout(() => done({ type: 'timeout' }), 60_000);
    child.once('message', (m) => {
      clearTimeout(timer);
      done(m as { type: string; message?: string });
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      done({ type: 'exit', code });
    });
  });
  if (child.connected) child.disconnect();
  if (outcome.type !== 'ready') {
    const why = outcome.type === 'error' ? outcome.message : outcome.type === 'timeout' ? 'no answer within 60 s' : `exited with code ${outcome.code}`;
    throw new Error(`vdiskfs mount failed: ${why} ${stderr.trim().slice(-400)} (log ${logFile})`);
  }
  const file = join(mnt, `${name}.${view}`);
  const offset = view === 'vhdx' ? await vhdxPayloadOffset(file, ctx.size) : 0;
  return { file, offset, pid, statsFile: join(mnt, '.vdiskfs', `${name}.stats.json`), dataFile: store.dataFile?.(ctx.dir), stop };
}

const flat: VdiskfsStore = { kind: 'flat', createArgs: (dir) => ['--image', join(dir, 'disk.img')] };
/** Zeros in, writes dropped: what the FUSE layer alone costs. */
const nullDevice: VdiskfsStore = { kind: 'null', createArgs: () => [] };

function lbs(checksum: string | undefined): VdiskfsStore {
  return {
    kind: 'lbs',
    dataFile: (dir) => join(dir, 'data.lbs'),
    // The metadata directory must exist and be private (the store refuses a group/world-writable one).
    prepare: (dir) => mkdir(join(dir, 'meta'), { mode: 0o700 }).then(() => {}),
    // The benchmark keeps the metadata log beside the data file (one disk for every target).
    createArgs: (dir) => ['--data', join(dir, 'data.lbs'), '--meta', join(dir, 'meta'), '--allow-same-filesystem', ...(checksum ? ['--checksum', checksum] : [])],
  };
}

function vdiskfsTarget(options: {
  id: string;
  label: string;
  peer: string;
  store: VdiskfsStore;
  view: string;
  quick: boolean;
  details: string;
  mountArgs?: readonly string[];
}): TargetSpec {
  return {
    id: options.id,
    label: options.label,
    side: 'vdiskfs',
    peer: options.peer,
    requires: { storeKind: options.store.kind, view: options.view },
    quick: options.quick,
    details: options.details,
    start: (ctx) => startVdiskfs(ctx, options.store, options.view, options.mountArgs ?? []),
  };
}

/**
 * Every target, in the order they run and are listed. The LBS targets are one per checksum choice
 * the built CLI offers (raw view), plus the VHDX view with the default checksum.
 */
export function declareTargets(cli: string): TargetSpec[] {
  const targets: TargetSpec[] = [rawFile(), qsdRaw(), qsdVhdx(), xmountVhd()];
  targets.push(
    vdiskfsTarget({ id: 'null-raw', label: 'vdiskfs null store (FUSE ceiling)', peer: 'qsd-raw', store: nullDevice, view: 'raw', quick: true, details: 'null store: reads zeros, drops writes; the FUSE layer alone' }),
    vdiskfsTarget({ id: 'flat-raw', label: 'vdiskfs flat, raw view', peer: 'qsd-raw', store: flat, view: 'raw', quick: true, details: 'flat store (one raw image file), NAME.raw' }),
    vdiskfsTarget({ id: 'flat-raw-wb', label: 'vdiskfs flat, raw view, writeback cache', peer: 'qsd-raw', store: flat, view: 'raw', quick: true, details: 'flat store, NAME.raw, mount --writeback-cache', mountArgs: ['--writeback-cache'] }),
    vdiskfsTarget({ id: 'flat-vhdx', label: 'vdiskfs flat, VHDX view', peer: 'qsd-vhdx', store: flat, view: 'vhdx', quick: true, details: 'flat store, NAME.vhdx (fio addresses the payload region)' }),
    vdiskfsTarget({ id: 'flat-vhd', label: 'vdiskfs flat, VHD view', peer: 'xmount-vhd', store: flat, view: 'vhd', quick: true, details: 'flat store, NAME.vhd (fixed VHD: payload then footer)' }),
  );
  const lbsAvailable = storeKinds().some((k) => k.kind === 'lbs');
  const { choices, default: def } = lbsAvailable ? lbsChecksumChoices(cli) : { choices: [] as string[], default: undefined };
  const defaultChecksum = def ?? choices[0];
  if (choices.length === 0) {
    targets.push(vdiskfsTarget({ id: 'lbs-raw', label: 'vdiskfs LBS, raw view', peer: 'qsd-raw', store: lbs(undefined), view: 'raw', quick: true, details: 'LBS store, default options' }));
  }
  for (const c of choices) {
    targets.push(
      vdiskfsTarget({
        id: `lbs-${c}-raw`,
        label: `vdiskfs LBS ${c}, raw view`,
        peer: 'qsd-raw',
        store: lbs(c),
        view: 'raw',
        quick: c === defaultChecksum,
        details: `LBS store, --checksum ${c}, NAME.raw`,
      }),
    );
  }
  targets.push(
    vdiskfsTarget({
      id: 'lbs-vhdx',
      label: `vdiskfs LBS${defaultChecksum ? ` ${defaultChecksum}` : ''}, VHDX view`,
      peer: 'qsd-vhdx',
      store: lbs(defaultChecksum),
      view: 'vhdx',
      quick: true,
      details: `LBS store${defaultChecksum ? `, --checksum ${defaultChecksum}` : ''}, NAME.vhdx`,
    }),
  );
  return targets;
}

/** Reads a stats file (JSON); undefined when there is none or it cannot be read. */
export async function readStats(file: string | undefined): Promise<Record<string, unknown> | undefined> {
  if (!file) return undefined;
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}
