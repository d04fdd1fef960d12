/**
 * The one place where errors become FUSE replies: any thrown value → a positive errno for the
 * reply (the channel negates it). Unknown errors (bugs, not user conditions) become EIO and are
 * logged with their stack.
 */
import { errnoOf } from '../errors.js';
import type { Logger } from '../log.js';

export function errnoForReply(err: unknown, log: Logger, context: Record<string, unknown>): number {
  const { errno, known } = errnoOf(err);
  if (known) log.warn({ ...context, err: (err as Error).message, errno }, 'request failed');
  else log.error({ ...context, err }, 'unexpected error; answered EIO');
  return errno;
}
