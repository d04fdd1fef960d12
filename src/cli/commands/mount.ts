/**
 * `vdiskfs mount SOURCE MOUNTPOINT`: by default starts the daemon in the background and returns
 * once the mount is live (or prints why it failed); `--foreground` serves in this process.
 */
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configureLogging, logger } from '../../log.js';
import { serve } from '../../mount/serve.js';
import { defaultLogFile } from '../../mount/runtime-state.js';
import { parseViewList } from '../../views/registry.js';
import { messageOf, VdiskError } from '../../errors.js';
import { print, defineCommand } from '../output.js';

interface Args {
  source: string;
  mountpoint: string;
  foreground: boolean;
  views?: string;
  readOnly: boolean;
  logFile?: string;
  logLevel: string;
  requestTimeout: number;
  writebackCache: boolean;
  snapshotInterval?: string;
}

type ChildMessage = { type: 'ready'; files: string[] } | { type: 'error'; message: string };

export const mountCommand = defineCommand<Args>({
  command: 'mount <source> <mountpoint>',
  describe: 'Mount the stores described in SOURCE (a directory of NAME.vdisk files) at MOUNTPOINT',
  builder: (y) =>
    y
      .positional('source', { type: 'string', demandOption: true, describe: 'Directory holding NAME.vdisk descriptors' })
      .positional('mountpoint', { type: 'string', demandOption: true, describe: 'An empty directory' })
      .option('foreground', { alias: 'f', type: 'boolean', default: false, describe: 'Serve in this process (Ctrl-C unmounts); logs go to stderr unless --log-file' })
      .option('views', { type: 'string', describe: 'Views to show for every store, e.g. raw,vhdx,vhd,vmdk (default: each descriptor\'s, else raw,vhdx)' })
      .option('read-only', { type: 'boolean', default: false, describe: 'Open every store read-only' })
      .option('log-file', { type: 'string', describe: 'Where the daemon logs (default: /run/vdiskfs/<id>.log, printed at mount)' })
      .option('request-timeout', { type: 'number', default: 60, describe: 'Seconds before a request the store has not answered fails with EIO' })
      .option('snapshot-interval', { type: 'string', describe: 'Chain stores: take a snapshot this often (e.g. 30m, 2h, 90s; plain numbers are seconds)' })
      .option('writeback-cache', { type: 'boolean', default: false, describe: 'Let the kernel cache writes and send them in large batches (faster buffered writes; fsync and close still reach the store as barriers)' })
      .example('$0 mount ./disks /mnt/vdisks', 'then: qemu-img info /mnt/vdisks/NAME.vhdx, or losetup -f --show /mnt/vdisks/NAME.raw'),
  handler: async (args) => {
    const views = args.views ? parseViewList(args.views, '--views') : undefined;
    if (args.snapshotInterval !== undefined) parseInterval(args.snapshotInterval);
    if (args.foreground) return runForeground(args, views);
    return startBackground(args);
  },
});

async function runForeground(args: Args, views: string[] | undefined): Promise<void> {
  configureLogging({ level: args.logLevel, file: args.logFile });
  const notify = typeof process.send === 'function';
  const log = logger('cli');
  try {
    await serve({
      source: args.source,
      mountpoint: args.mountpoint,
      views,
      readOnly: args.readOnly,
      requestTimeoutMs: Math.round(args.requestTimeout * 1000),
      logFile: args.logFile,
      writebackCache: args.writebackCache,
      snapshotIntervalMs: args.snapshotInterval !== undefined ? parseInterval(args.snapshotInterval) : undefined,
      onReady: ({ files }) => {
        if (notify) {
          process.send!({ type: 'ready', files } satisfies ChildMessage);
          process.disconnect?.();
        } else {
          process.stderr.write(`vdiskfs: mounted ${resolve(args.mountpoint)}: ${files.join(', ') || '(no stores)'}; Ctrl-C unmounts\n`);
        }
      },
    });
  } catch (err) {
    // On a terminal the one-line message printed by main() says it all; the log file keeps detail.
    if (args.logFile) log.error({ err }, 'mount failed');
    if (notify) {
      process.send!({ type: 'error', message: messageOf(err) } satisfies ChildMessage);
      process.disconnect?.();
      process.exitCode = 1;
      return;
    }
    throw err;
  }
  // The daemon's work is done; nothing it started should keep it alive.
  setTimeout(() => process.exit(process.exitCode ?? 0), 50).unref();
}

async function startBackground(args: Args): Promise<void> {
  const mountpoint = resolve(args.mountpoint);
  const logFile = resolve(args.logFile ?? defaultLogFile(mountpoint));
  const script = fileURLToPath(new URL('../main.js', import.meta.url));
  const childArgs = [
    script, 'mount', resolve(args.source), mountpoint, '--foreground',
    '--log-file', logFile, '--log-level', args.logLevel, '--request-timeout', String(args.requestTimeout),
  ];
  if (args.views) childArgs.push('--views', args.views);
  if (args.readOnly) childArgs.push('--read-only');
  if (args.writebackCache) childArgs.push('--writeback-cache');
  if (args.snapshotInterval !== undefined) childArgs.push('--snapshot-interval', args.snapshotInterval);
  const child = spawn(process.execPath, childArgs, { detached: true, stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
  const outcome = await new Promise<ChildMessage | { type: 'exit'; code: number | null }>((done) => {
    child.once('message', (m) => done(m as ChildMessage));
    child.once('exit', (code) => done({ type: 'exit', code }));
    child.once('error', (err) => done({ type: 'error', message: err.message }));
  });
  if (outcome.type === 'ready') {
    child.unref();
    child.disconnect?.();
    print(`mounted ${mountpoint} (daemon pid ${child.pid}, log ${logFile})`);
    for (const f of outcome.files) print(`  ${mountpoint}/${f}`);
    return;
  }
  if (outcome.type === 'error') throw new VdiskError('EIO', outcome.message);
  throw new VdiskError('EIO', `the mount daemon exited (code ${outcome.code}) before the mount was ready; see ${logFile}`);
}

/** "90", "90s", "30m", "2h" → milliseconds (at least one second). */
export function parseInterval(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$/i.exec(text);
  const ms = m ? Number(m[1]) * ({ s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[(m[2] ?? 's').toLowerCase()]! : NaN;
  if (!Number.isFinite(ms) || ms < 1000) throw new VdiskError('EINVAL', `--snapshot-interval ${JSON.stringify(text)}: give a duration of at least 1 second, e.g. 90s, 30m, 2h`);
  return ms;
}
