/**
 * Logging: one pino root logger, one child per layer ({ layer: 'fuse' | 'store' | 'view' | … }).
 * Per-request lines are at trace level only, behind an `isLevelEnabled` check at the call site,
 * so the data path costs nothing when tracing is off.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger = pino({ level: process.env.VDISKFS_LOG_LEVEL ?? 'silent' });

/** Configures the root logger: to a file (the daemon), to stderr (foreground), or silent (tests). */
export function configureLogging(options: { level: string; file?: string }): Logger {
  const destination = options.file
    ? pino.destination({ dest: options.file, mkdir: true, sync: false })
    : pino.destination(2);
  root = pino({ level: options.level, base: { pid: process.pid } }, destination);
  return root;
}

export function logger(layer: string, bindings: Record<string, unknown> = {}): Logger {
  return root.child({ layer, ...bindings });
}

export function rootLogger(): Logger {
  return root;
}
