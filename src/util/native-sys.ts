/**
 * Loads native/sys (built by `make build`): the few system calls Node lacks (see native/sys/sys.c):
 * polling /dev/fuse from the JS thread, reads that succeed only from the page cache, descriptor
 * passing. Everything that uses it has a plain-Node fallback, slower but otherwise the same.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../log.js';

export interface NativeSys {
  /** One read(2): bytes, or -errno (never throws). */
  read(fd: number, buf: Uint8Array): number;
  /** One write(2): bytes, or -errno. */
  write(fd: number, buf: Uint8Array): number;
  /** preadv2(RWF_NOWAIT): bytes if the page cache holds them, else -EAGAIN (or another -errno). */
  preadNowait(fd: number, buf: Uint8Array, position: number): number;
  /** fallocate(2): 0, or -errno. */
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  /** Calls `onReadable` on the JS thread whenever `fd` is readable (level-triggered). */
  watch(fd: number, onReadable: (status: number) => void): unknown;
  unwatch(handle: unknown): void;
  /** An AF_UNIX socket pair (close-on-exec): stream, or seqpacket (keeps message boundaries). */
  socketpair(seqpacket?: boolean): [number, number];
  /** The descriptor sent over a Unix socket with SCM_RIGHTS, or -errno. */
  receiveFd(socket: number): number;
  /** Sets O_NONBLOCK: 0, or -errno. */
  setNonblocking(fd: number): number;
}

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;

export const NATIVE_SYS_PATH = fileURLToPath(new URL('../../native/sys/build/Release/vdiskfs_sys.node', import.meta.url));

let loaded: NativeSys | null | undefined;
let whyNot: string | undefined;

/** The addon, or undefined if it is not built or is disabled (VDISKFS_NATIVE=0). */
export function nativeSys(): NativeSys | undefined {
  if (loaded === undefined) {
    if (process.env.VDISKFS_NATIVE === '0') {
      loaded = null;
      whyNot = 'disabled by VDISKFS_NATIVE=0';
    } else {
      try {
        loaded = createRequire(import.meta.url)(NATIVE_SYS_PATH) as NativeSys;
      } catch (err) {
        loaded = null;
        whyNot = (err as Error).message;
      }
    }
  }
  return loaded ?? undefined;
}

/** Logs once why the addon is missing, for a layer that falls back. */
export function warnIfNoNativeSys(log: Logger, fallback: string): void {
  if (nativeSys() || warned) return;
  warned = true;
  log.warn({ path: NATIVE_SYS_PATH, reason: whyNot }, `native/sys not loaded (run make build); ${fallback}`);
}
let warned = false;
