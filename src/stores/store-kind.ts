/**
 * A store kind (flat, lbs, chain, spf, …) turns a descriptor into a BlockDevice. Each kind is one
 * module under src/stores/<kind>/ that exports a StoreKind; src/stores/registry.ts lists them.
 * Stores know nothing of FUSE or of views.
 */
import type { BlockDevice } from '../devices/block-device.js';
import type { LoadedDescriptor } from './descriptor.js';

export interface OpenOptions {
  /** Open without write access (the store's files are opened read-only). */
  readOnly?: boolean;
}

export interface StoreKind {
  readonly kind: string;
  /** One line for `--help` and `info`. */
  readonly summary: string;
  open(loaded: LoadedDescriptor, options: OpenOptions): Promise<BlockDevice>;
  /** What `info` shows: where the files are, sizes, settings; cheap (need not open the store). */
  describe(loaded: LoadedDescriptor): Promise<Record<string, unknown>>;
  /** Optional: verifies the store's integrity for `vdiskfs check` (opens it read-only). */
  check?(loaded: LoadedDescriptor, options: CheckOptions): Promise<CheckReport>;
  /**
   * Optional: the mount daemon calls this on SIGUSR1 for each of the kind's open stores, so that
   * CLI commands can ask a mounted store to act (e.g. `vdiskfs snapshot` on a mounted chain).
   * Returns a line for the log, or undefined if nothing was asked of this store.
   */
  serveRequests?(loaded: LoadedDescriptor, device: BlockDevice): Promise<string | undefined>;
}

export interface CheckOptions {
  /** Progress of a long check, in the kind's own units (clusters, chunks, …). */
  progress?: (done: number, total: number) => void;
}

export interface CheckReport {
  /** False if anything failed verification. */
  ok: boolean;
  /** Counts for the summary line and --json (e.g. blocks verified, failed). */
  summary: Record<string, unknown>;
  /** One record per failure, each with a human `message`. */
  problems: { message: string; [k: string]: unknown }[];
}
