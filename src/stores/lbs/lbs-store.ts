/**
 * The `lbs` store kind: a descriptor's paths and settings → an LbsDevice over the real files, with
 * the protected-mount checks on every open, plus `info` (describe) and `vdiskfs check`.
 *
 *   { "kind": "lbs", "store": { "data": "web.lbsdata", "meta": "/protected/vdiskfs", "log": "web.lbslog",
 *     "size": 8589934592, "blockSize": 4096, "clusterSize": 1048576, "overprovision": 25,
 *     "checksum": "fletcher32", "allowSameFilesystem": false } }
 *
 * The authoritative geometry is in the files' headers; the descriptor repeats it for `info`.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { acquirePidLock, lockHolder } from '../../util/pid-lock.js';
import { VdiskError } from '../../errors.js';
import { storeInteger, storePath, type LoadedDescriptor } from '../descriptor.js';
import type { CheckReport, StoreKind } from '../store-kind.js';
import { NodeFile } from './files.js';
import { LbsDevice } from './lbs-core.js';
import { checkMetaDir, checkSeparateFilesystems, filesystemOf, type FilesystemInfo } from './protected.js';

interface Paths {
  dataPath: string;
  metaDir: string;
  logPath: string;
}

function paths(loaded: LoadedDescriptor): Paths {
  const s = loaded.descriptor.store;
  const dataPath = storePath(loaded, s.data, 'data');
  const metaDir = storePath(loaded, s.meta, 'meta');
  const logName = s.log;
  if (typeof logName !== 'string' || logName === '' || basename(logName) !== logName) {
    throw new VdiskError('EINVAL', `descriptor ${loaded.path}: "store.log" must be a file name inside the metadata directory`);
  }
  return { dataPath, metaDir, logPath: join(metaDir, logName) };
}

async function checkLogFile(logPath: string): Promise<void> {
  let st;
  try {
    st = await stat(logPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new VdiskError('ENOENT', `metadata log ${logPath} does not exist (is the protected mount mounted?)`);
    }
    throw err;
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw new VdiskError('EPERM', `metadata log ${logPath} is owned by uid ${st.uid}, not by you (uid ${uid})`);
  if ((st.mode & 0o022) !== 0) {
    throw new VdiskError('EPERM', `metadata log ${logPath} is writable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 ${logPath}`);
  }
}

/**
 * One writer at a time: a writable open holds `<log>.lock` (its PID) beside the log, on the
 * protected side. Two writers appending to one log would destroy it.
 */
function acquireLock(logPath: string, name: string): Promise<() => Promise<void>> {
  return acquirePidLock(`${logPath}.lock`, (pid) => `store ${name} is open for writing by process ${pid} (mounted?); unmount it first, or open it read-only`);
}

const sessionStatsPath = (logPath: string) => `${logPath}.stats.json`;

/** One line about the last writing session, from the counters it left at close. */
async function lastSession(logPath: string): Promise<string | undefined> {
  try {
    const { closedAt, stats: s } = JSON.parse(await readFile(sessionStatsPath(logPath), 'utf8'));
    const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    return (
      `closed ${closedAt}: ${s.requests.writes} writes (${mb(s.requests.writeBytes)}), ${s.requests.reads} reads, ${s.requests.flushes} flushes; ` +
      `data file ${mb(s.dataFile.bytesWritten)} in ${s.dataFile.writeCalls} writes (${s.dataFile.averageWriteBlocks} blocks each); ` +
      `log ${mb(s.log.bytesWritten)}, ${s.log.barriers} barriers; ${s.blocks.verified} blocks verified, ${s.blocks.failed} failed; ` +
      `cleaner moved ${s.cleaner.blocksMoved} blocks from ${s.cleaner.clustersCleaned} clusters; write amplification ${s.writeAmplification}`
    );
  } catch {
    return undefined;
  }
}

/** Opens the store's files after the protected-mount checks. */
export async function openLbs(loaded: LoadedDescriptor, options: { readOnly?: boolean } = {}): Promise<LbsDevice> {
  const { dataPath, metaDir, logPath } = paths(loaded);
  const size = storeInteger(loaded, 'size', { min: 1 });
  await checkMetaDir(metaDir);
  await checkLogFile(logPath);
  if (loaded.descriptor.store.allowSameFilesystem !== true) await checkSeparateFilesystems(metaDir, dataPath);
  const release = options.readOnly ? undefined : await acquireLock(logPath, loaded.name);
  let data: NodeFile | undefined;
  let log: NodeFile | undefined;
  try {
    data = await NodeFile.open(dataPath, { readOnly: options.readOnly, what: 'LBS data file' });
    log = await NodeFile.open(logPath, { readOnly: options.readOnly, what: 'metadata log' });
    let device: LbsDevice | undefined;
    // A writer leaves its session's counters beside the log at close, for `info`.
    const onClose = async () => {
      try {
        if (device) await writeFile(sessionStatsPath(logPath), JSON.stringify({ closedAt: new Date().toISOString(), stats: device.stats() }) + '\n', { mode: 0o600 });
      } catch {
        /* the counters are informational */
      }
      await release?.();
    };
    device = await LbsDevice.open(data, log, {
      readOnly: options.readOnly,
      dataPath,
      logPath,
      expectedId: loaded.descriptor.id,
      expectedSize: size,
      name: loaded.name,
      onClose: options.readOnly ? undefined : onClose,
    });
    return device;
  } catch (err) {
    await data?.close().catch(() => {});
    await log?.close().catch(() => {});
    await release?.();
    throw err;
  }
}

const where = (fs: FilesystemInfo) => `${fs.mountpoint ?? '?'} (${fs.fstype ?? 'unknown'} on ${fs.source ?? fs.device})`;

export const lbsStore: StoreKind = {
  kind: 'lbs',
  summary: 'logging block store: sequential appends on untrusted storage, verified reads, log on a protected mount',

  open(loaded, options) {
    return openLbs(loaded, { readOnly: options.readOnly });
  },

  async describe(loaded) {
    const { dataPath, metaDir, logPath } = paths(loaded);
    const s = loaded.descriptor.store;
    const out: Record<string, unknown> = {
      size: storeInteger(loaded, 'size', { min: 1 }),
      dataFile: dataPath,
      dataFilesystem: await filesystemOf(dataPath).then(where, () => 'missing'),
      metaDir,
      log: logPath,
      logFilesystem: await filesystemOf(metaDir).then(where, () => 'missing'),
      blockSize: s.blockSize,
      clusterSize: s.clusterSize,
      overprovision: `${s.overprovision}%`,
      checksum: s.checksum,
      sameFilesystemAllowed: s.allowSameFilesystem === true,
    };
    // The state comes from a read-only replay of the log (the data file is not read).
    try {
      const dev = await openLbs(loaded, { readOnly: true });
      try {
        const st = dev.stats() as Record<string, any>;
        Object.assign(out, {
          dataFileBytes: (await stat(dataPath)).size,
          logBytes: (await stat(logPath)).size,
          mappedBlocks: st.mappedBlocks,
          allocatedBytes: st.allocatedBytes,
          clusters: st.clusters,
          barriers: st.log.lastBarrier,
          logEntries: st.recovery.entriesReplayed,
          uncommittedTail: st.recovery.rolledBackBytes ? `${st.recovery.rolledBackEntries} entries (${st.recovery.rolledBackBytes} bytes) after the last barrier; rolled back at the next mount` : 'none',
          ramPerLogicalBlock: `${st.ramBytesPerLogicalBlock} B`,
          lastSession: (await lastSession(logPath)) ?? 'none recorded',
        });
      } finally {
        await dev.close();
      }
    } catch (err) {
      out.state = `cannot open: ${(err as Error).message}`;
    }
    return out;
  },

  async check(loaded, options): Promise<CheckReport> {
    // A writer moves blocks while the check reads them, which would show up as false failures.
    const { logPath } = paths(loaded);
    const pid = await lockHolder(`${logPath}.lock`);
    if (pid !== undefined) {
      throw new VdiskError('EBUSY', `store ${loaded.name} is open for writing by process ${pid} (mounted?); unmount it, then check`);
    }
    const dev = await openLbs(loaded, { readOnly: true });
    try {
      const started = Date.now();
      const r = await dev.verifyAll(options.progress);
      return {
        ok: r.failed.length === 0,
        summary: {
          mappedBlocks: dev.map.mappedBlocks,
          blocksVerified: r.verified,
          blocksFailed: r.failed.length,
          clustersRead: r.clusters,
          barriers: dev.replay.sequence,
          rolledBackEntries: dev.replay.rolledBackEntries,
          seconds: +((Date.now() - started) / 1000).toFixed(2),
        },
        problems: r.failed.map((f) => ({ ...f, message: `block ${f.lbn} (physical block ${f.pbn}) failed its checksum` })),
      };
    } finally {
      await dev.close();
    }
  },
};
