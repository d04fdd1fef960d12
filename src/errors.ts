/**
 * The one error type of vdiskfs. Every layer below the FUSE layer throws VdiskError with an errno
 * name and a message a user can act on; the FUSE layer maps it to -errno in exactly one place
 * (src/fuse/errno.ts), and the CLI prints its message.
 */
import { constants } from 'node:os';

export type ErrnoName = keyof typeof constants.errno;

export class VdiskError extends Error {
  readonly code: ErrnoName;

  constructor(code: ErrnoName, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VdiskError';
    this.code = code;
  }

  /** The positive errno number for this error's code. */
  get errno(): number {
    return constants.errno[this.code];
  }
}

/** Shorthand constructors for the errors that recur across layers. */
export const invalid = (message: string, cause?: unknown) => new VdiskError('EINVAL', message, { cause });
export const ioError = (message: string, cause?: unknown) => new VdiskError('EIO', message, { cause });

/**
 * Maps anything thrown to a positive errno: a VdiskError by its code, a Node system error by its
 * code (ENOENT, ENOSPC, …), and everything else to EIO (the caller logs those, since they are bugs).
 */
export function errnoOf(err: unknown): { errno: number; known: boolean } {
  if (err instanceof VdiskError) return { errno: err.errno, known: true };
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code in constants.errno) {
    return { errno: constants.errno[code as ErrnoName], known: true };
  }
  return { errno: constants.errno.EIO, known: false };
}

/** A one-line message for the user, for any thrown value. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
