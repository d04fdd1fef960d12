/**
 * The mount daemon's life: check, open every store, mount, serve until told to stop, then flush,
 * unmount and close. SIGINT/SIGTERM stop it cleanly; if the mount point is busy (a loop device or a
 * process still has a view open) it keeps serving and says so, and a second signal forces a lazy
 * unmount.
 */
import { resolve } from 'node:path';
import { DiskTable } from '../disks/disk-table.js';
import { checkMountPreconditions } from './preflight.js';
import { createOperations } from '../fuse/operations.js';
import { mountKernel, unmountKernel, type KernelMount } from '../fuse/kernel-channel.js';
import { removeMountState, writeMountState } from './runtime-state.js';
import { mountAt } from './mountinfo.js';
import { logger } from '../log.js';
import { storeKind } from '../stores/registry.js';
import { VdiskError } from '../errors.js';

export interface ServeOptions {
  source: string;
  mountpoint: string;
  views?: string[];
  readOnly?: boolean;
  /** Milliseconds after which a request still unanswered gets EIO. */
  requestTimeoutMs: number;
  logFile?: string;
  /** Ask for the kernel's writeback cache. */
  writebackCache?: boolean;
  /** Chain stores: take a snapshot this often (ms); stores without a snapshot hook are left alone. */
  snapshotIntervalMs?: number;
  /** Called once the mount is live. */
  onReady?: (info: { stores: number; files: string[] }) => void;
}

export async function serve(options: ServeOptions): Promise<void> {
  const log = logger('daemon');
  const source = resolve(options.source);
  const mountpoint = resolve(options.mountpoint);
  const { allowOther } = await checkMountPreconditions(source, mountpoint);
  const table = await DiskTable.open(source, { views: options.views, readOnly: options.readOnly });

  let session: KernelMount;
  try {
    const fuseLog = logger('fuse');
    session = await mountKernel(mountpoint, { log: fuseLog, timeoutMs: options.requestTimeoutMs, writebackCache: options.writebackCache ?? false, allowOther });
    const channel = session.channel;
    let writebackNegotiated = false;
    void channel.ready.then((init) => { writebackNegotiated = init.writebackCache; }, () => {});
    channel.start(createOperations(table, channel, {
      log: fuseLog,
      counters: () => ({ fuse: { ...channel.counters, inFlight: channel.requestsInFlight } }),
      writebackCache: () => writebackNegotiated,
    }));
    try {
      await withTimeout(channel.ready, 10_000, 'the kernel did not initialize the FUSE session within 10 s');
    } catch (err) {
      await unmountKernel(mountpoint, true).catch(() => {});
      await session.close().catch(() => {});
      throw err;
    }
  } catch (err) {
    await table.close().catch(() => {});
    throw err;
  }
  await writeMountState({ pid: process.pid, mountpoint, source, logFile: options.logFile, startedAt: new Date().toISOString() });
  log.info({ source, mountpoint, files: [...table.files.keys()] }, 'mounted');
  options.onReady?.({ stores: table.stores.length, files: [...table.files.keys()] });
  const snapshots = options.snapshotIntervalMs ? startSnapshotTimer(table, options.snapshotIntervalMs, log) : undefined;

  await new Promise<void>((done) => {
    let stopping = false;
    let signals = 0;
    const stop = async (signal: string) => {
      signals++;
      if (stopping && signals < 2) return;
      stopping = true;
      const force = signals >= 2;
      log.info({ signal, force }, 'stopping');
      snapshots?.stop();
      try {
        await table.flushAll();
      } catch (err) {
        log.error({ err }, 'flush before unmount failed');
      }
      if (await mountAt(mountpoint)) {
        try {
          await unmountKernel(mountpoint, force);
        } catch (err) {
          if ((err as { busy?: boolean }).busy && !force) {
            log.warn({ mountpoint }, 'mount point is busy (a loop device or a process still uses a view); still serving. Detach it, then stop again; a second signal forces a lazy unmount');
            process.stderr.write(`vdiskfs: ${mountpoint} is busy (a loop device or a process still uses a view); still serving. Detach it and stop again, or send a second signal to force.\n`);
            stopping = false;
            return;
          }
          log.error({ err }, 'unmount failed; detaching lazily');
          await unmountKernel(mountpoint, true).catch(() => {});
        }
      }
      await session.close().catch(() => {}); // the readers stop once the kernel mount is gone
      try {
        await table.close();
      } catch (err) {
        log.error({ err }, 'closing stores failed');
      }
      await removeMountState(mountpoint);
      log.info({ mountpoint }, 'unmounted');
      done();
    };
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.on('SIGHUP', () => void stop('SIGHUP'));
    // A CLI command asking a mounted store to act (`vdiskfs snapshot` on a chain) signals us.
    process.on('SIGUSR1', () => void serveStoreRequests(table, log));
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new VdiskError('ETIMEDOUT', message)), ms); }),
  ]);
}

/**
 * Periodic snapshots: every `intervalMs` each store whose device offers snapshot() (chain stores)
 * takes one. The device swaps its top layer internally, so views and open files keep working.
 */
function startSnapshotTimer(table: DiskTable, intervalMs: number, log: ReturnType<typeof logger>): { stop(): void } {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    void (async () => {
      for (const s of table.stores) {
        const dev = s.device.inner;
        if (!dev.snapshot || !s.device.capabilities.writable) continue;
        try {
          // Only when something was written since the last one: an idle disk gains no empty layers.
          const top = await dev.snapshot({ ifChanged: true });
          log.info({ store: s.name, top }, 'periodic snapshot');
        } catch (err) {
          log.error({ err, store: s.name }, 'periodic snapshot failed');
        }
      }
    })().finally(() => {
      running = false;
    });
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

async function serveStoreRequests(table: DiskTable, log: ReturnType<typeof logger>): Promise<void> {
  for (const s of table.stores) {
    const kind = storeKind(s.descriptor.descriptor.kind);
    if (!kind.serveRequests) continue;
    try {
      const done = await kind.serveRequests(s.descriptor, s.device.inner);
      if (done) log.info({ store: s.name }, done);
    } catch (err) {
      log.error({ err, store: s.name }, 'request to a mounted store failed');
    }
  }
}
