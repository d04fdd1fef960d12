/**
 * Wraps every FUSE operation once, against the traps of fuse-native (see docs/fuse-notes.md):
 * - a handler that throws would kill the process and leave a dead mount → try/catch, reply -errno;
 * - a callback called twice corrupts later replies on that thread → a once-guard;
 * - fuse-native's own timeout detaches the request buffer under a late handler → we disable it
 *   and run our own, and the handlers never touch the kernel's buffer after replying (reads go
 *   through a private buffer, writes copy their data first; see operations.ts).
 */
import type { Logger } from '../log.js';
import { constants } from 'node:os';
import { toFuseError } from './errno.js';

export type Reply = (result: number, value?: unknown) => void;

export interface SafeHandlerOptions {
  log: Logger;
  /** Milliseconds before a request is answered with EIO (0: never). */
  timeoutMs: number;
}

/**
 * Runs `handler` and replies exactly once: with its result, with -errno if it throws, or with -EIO
 * if it has not finished within the timeout. Returns whether the reply is still open (for reads
 * that must not copy into the kernel buffer after a timeout).
 */
export function runSafely(
  op: string,
  context: Record<string, unknown>,
  options: SafeHandlerOptions,
  callback: (...args: unknown[]) => void,
  handler: (isOpen: () => boolean) => Promise<[number, unknown?]>,
): void {
  let answered = false;
  let timer: NodeJS.Timeout | undefined;
  const reply = (result: number, value?: unknown) => {
    if (answered) return;
    answered = true;
    if (timer) clearTimeout(timer);
    if (value === undefined) callback(result);
    else callback(result, value);
  };
  if (options.timeoutMs > 0) {
    timer = setTimeout(() => {
      options.log.error({ op, ...context, timeoutMs: options.timeoutMs }, 'request timed out; answered EIO');
      reply(-constants.errno.EIO);
    }, options.timeoutMs);
  }
  let pending: Promise<[number, unknown?]>;
  try {
    pending = handler(() => !answered);
  } catch (err) {
    reply(toFuseError(err, options.log, { op, ...context }));
    return;
  }
  pending.then(
    ([result, value]) => reply(result, value),
    (err) => reply(toFuseError(err, options.log, { op, ...context })),
  );
}
