/**
 * The FUSE kernel protocol spoken directly over /dev/fuse, from TypeScript (as Rust's fuser and
 * go-fuse do; why not fuse-native or a libfuse 3 addon: docs/fuse-notes.md).
 *
 * - Mounting: as root we open /dev/fuse ourselves and hand the descriptor to mount(8) as fd 3
 *   (`mount -i -t fuse.vdiskfs -o fd=3,…`), so mount(2) ties the new mount to our descriptor;
 *   other users get it from fusermount3 over a socket, as libfuse does.
 * - Requests: the JS thread is woken by epoll when /dev/fuse (opened non-blocking) has requests,
 *   and reads them one by one until EAGAIN (native/sys: Node cannot poll a character
 *   device). Without that addon, several blocking reads wait on the libuv pool instead (each read
 *   returns one whole request): it works, at two more thread switches per request. Either way many
 *   requests are served concurrently. Replies are written synchronously: a write to /dev/fuse only
 *   copies into the kernel and wakes the waiting caller.
 * - Cache notifications are written asynchronously (libuv pool): dropping a page may wait for a
 *   page lock or a writeback that only our answer to another request ends, so the JS thread must
 *   never block on one. The returned promise settles once the kernel has dropped the pages; the
 *   operations hold a write's acknowledgement until then (bounded: operations.ts).
 * - Timeouts: one sweep timer over the requests in flight, not a timer per request.
 * - A watchdog shell, told "clean" on a clean exit, lazily unmounts a mount whose daemon died
 *   (kill -9), so the mount point does not stay "Transport endpoint is not connected".
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, read, write, writeSync, constants as fsConstants } from 'node:fs';
import { nativeSys, warnIfNoNativeSys, type NativeSys } from '../util/native-sys.js';
import { constants } from 'node:os';
import { promisify } from 'node:util';
import type { Logger } from '../log.js';
import { VdiskError } from '../errors.js';
import {
  IN_HEADER_SIZE, InitFlag, KERNEL_MAJOR, KERNEL_MINOR, OLDEST_MINOR, OUT_HEADER_SIZE, Op, WRITE_IN_SIZE,
  decodeInHeader, decodeInitIn, encodeInitOut, encodeInvalInode, expectsReply, putOutHeader, type InHeader,
} from './protocol.js';

const execFileAsync = promisify(execFile);
const { errno } = constants;

/** 1 MiB requests (256 pages), as QEMU's libfuse 3 export negotiates. */
export const MAX_REQUEST = 1 << 20;
/** Outstanding reads of /dev/fuse: how many requests can be handed over at once. */
const POOL_READERS = 8;
/** Requests read per wake-up before completions get their turn (epoll wakes us again). */
const READS_PER_WAKE = 32;
/** A request buffer must hold the largest WRITE: headers + max_write (the kernel checks). */
const READ_BUFFER = MAX_REQUEST + 4096;
/** Writes at least this large keep the buffer they arrived in (a new one takes its place). */
const HANDOVER_AT = 128 * 1024;
const REPLY_BUFFER = OUT_HEADER_SIZE + MAX_REQUEST;
/** Replies of up to 64 KiB share one size of reusable buffer. */
const SMALL_REPLY_BUFFER = OUT_HEADER_SIZE + 64 * 1024;
const SPARE_SMALL_BUFFERS = 64;
/** Recycled request (and reply) buffers kept, each about 1 MiB. */
const SPARE_BUFFERS = 8;

export interface FuseRequest extends InHeader {
  /** The request's arguments; valid only during the synchronous dispatch call. */
  readonly body: Buffer;
}

export interface ChannelOptions {
  log: Logger;
  /** Milliseconds before an unanswered request gets EIO (0: never). */
  timeoutMs: number;
  /** Ask for the kernel's writeback cache (FUSE_WRITEBACK_CACHE). */
  writebackCache: boolean;
}

export interface NegotiatedInit {
  minor: number;
  flags: number;
  maxWrite: number;
  writebackCache: boolean;
}

type Dispatch = (req: FuseRequest) => void;

interface InFlight {
  readonly opcode: number;
  readonly nodeid: number;
  readonly tick: number;
}

export class KernelChannel {
  private readonly buffers: Buffer[] = [];
  /** Request buffers whose WRITE data the store has finished with, ready for the next handover. */
  private readonly spare: Buffer[] = [];
  /** Reply buffers for large reads, reused for the same reason. */
  private readonly spareReplies: Buffer[] = [];
  private readonly spareSmallReplies: Buffer[] = [];
  private readonly inFlight = new Map<number, InFlight>();
  private running = 0;
  private closed = false;
  private tick = 0;
  private sweeper?: NodeJS.Timeout;
  private dispatch?: Dispatch;
  private initDone!: (init: NegotiatedInit) => void;
  private initFailed!: (err: Error) => void;
  private ended!: () => void;
  /** Resolves when the kernel has been answered FUSE_INIT. */
  readonly ready: Promise<NegotiatedInit>;
  /** Resolves when the connection is gone (unmounted or aborted) and every reader has stopped. */
  readonly done: Promise<void>;
  /** Counters, for the stats file and benchmarks. */
  readonly counters = { requests: 0, maxInFlight: 0, timedOut: 0, notifications: 0 };

  private watch?: unknown;

  /** `addon`: poll-driven reading (fd opened O_NONBLOCK); undefined: blocking pool reads. */
  constructor(private readonly fd: number, private readonly options: ChannelOptions, private readonly addon?: NativeSys) {
    this.ready = new Promise((res, rej) => { this.initDone = res; this.initFailed = rej; });
    this.ready.catch(() => {});
    this.done = new Promise((res) => { this.ended = res; });
  }

  get requestsInFlight(): number {
    return this.inFlight.size;
  }

  /** How requests reach us: "epoll" (the addon) or "thread-pool". */
  get mode(): string {
    return this.addon ? 'epoll' : 'thread-pool';
  }

  start(dispatch: Dispatch): void {
    this.dispatch = dispatch;
    if (this.addon) {
      this.buffers.push(Buffer.allocUnsafe(READ_BUFFER));
      this.running = 1;
      this.watch = this.addon.watch(this.fd, () => this.drain());
    } else {
      for (let i = 0; i < POOL_READERS; i++) {
        this.buffers.push(Buffer.allocUnsafe(READ_BUFFER));
        this.running++;
        this.readNext(i);
      }
    }
    const { timeoutMs } = this.options;
    if (timeoutMs > 0) {
      // Ticks of a quarter of the timeout: a request times out between 1 and 1.25 timeouts.
      const every = Math.max(50, Math.floor(timeoutMs / 4));
      this.sweeper = setInterval(() => this.sweep(4), every);
      this.sweeper.unref();
    }
  }

  /** Poll mode: read what is there, up to READS_PER_WAKE requests. */
  private drain(): void {
    const addon = this.addon!;
    for (let i = 0; i < READS_PER_WAKE && !this.closed; i++) {
      const buf = this.buffers[0]!;
      const n = addon.read(this.fd, buf);
      if (n >= IN_HEADER_SIZE) {
        this.handle(0, buf, n);
        continue;
      }
      if (n === -errno.EAGAIN) return;
      if (n === -errno.EINTR || n === -errno.ENOENT) continue;
      if (n !== -errno.ENODEV && n !== 0) this.options.log.error({ errno: -n }, 'reading /dev/fuse failed; the mount stops serving');
      addon.unwatch(this.watch);
      this.readerStopped();
      return;
    }
  }

  private readNext(slot: number): void {
    const buf = this.buffers[slot]!;
    read(this.fd, buf, 0, buf.length, null, (err, n) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (!this.closed && (code === 'EINTR' || code === 'EAGAIN' || code === 'ENOENT')) return this.readNext(slot);
        if (!this.closed && code !== 'ENODEV') this.options.log.error({ err }, 'reading /dev/fuse failed; the mount stops serving');
        return this.readerStopped();
      }
      // /dev/fuse never returns 0; anything that does (a socket in tests) has hung up.
      if (n === 0) return this.readerStopped();
      if (n >= IN_HEADER_SIZE) this.handle(slot, buf, n);
      if (this.closed) return this.readerStopped();
      this.readNext(slot);
    });
  }

  private readerStopped(): void {
    this.closed = true;
    if (--this.running === 0) {
      if (this.sweeper) clearInterval(this.sweeper);
      this.initFailed(new VdiskError('ENODEV', 'the FUSE connection closed before it was initialized'));
      this.ended();
    }
  }

  private handle(slot: number, buf: Buffer, n: number): void {
    const length = Math.min(buf.readUInt32LE(0), n);
    const h: FuseRequest = decodeInHeader(buf, buf.subarray(IN_HEADER_SIZE, length));
    const req = h;
    this.counters.requests++;
    if (expectsReply(h.opcode)) {
      this.inFlight.set(h.unique, { opcode: h.opcode, nodeid: h.nodeid, tick: this.tick });
      if (this.inFlight.size > this.counters.maxInFlight) this.counters.maxInFlight = this.inFlight.size;
    }
    if (h.opcode === Op.INIT) return this.init(req);
    // A large WRITE keeps its buffer (its data goes to the store without a copy); the reader
    // continues with a new one.
    if (h.opcode === Op.WRITE && length - IN_HEADER_SIZE - WRITE_IN_SIZE >= HANDOVER_AT) {
      this.buffers[slot] = this.spare.pop() ?? Buffer.allocUnsafe(READ_BUFFER);
    }
    try {
      this.dispatch!(req);
    } catch (err) {
      this.options.log.error({ err, opcode: h.opcode }, 'unexpected error dispatching a request; answered EIO');
      this.replyError(h.unique, errno.EIO);
    }
  }

  /**
   * The body of a WRITE as a buffer the caller owns: the request buffer itself for large writes
   * (handed over in handle()), a copy for small ones (the reader reuses its buffer at once).
   */
  writeData(req: FuseRequest, size: number): Buffer {
    const data = req.body.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + size);
    if (size >= HANDOVER_AT) return data;
    const copy = Buffer.allocUnsafe(data.length);
    data.copy(copy);
    return copy;
  }

  /**
   * The store is done with a WRITE's data (its write settled): a handed-over request buffer goes
   * back to the spares, so the next large write lands in memory that is already mapped (a fresh
   * 1 MiB buffer costs 256 page faults when the kernel first fills it).
   */
  recycle(data: Buffer): void {
    if (data.buffer.byteLength === READ_BUFFER && this.spare.length < SPARE_BUFFERS) {
      this.spare.push(Buffer.from(data.buffer, 0, READ_BUFFER));
    }
  }

  private init(req: FuseRequest): void {
    const k = decodeInitIn(req.body);
    if (k.major !== KERNEL_MAJOR || (k.major === KERNEL_MAJOR && k.minor < OLDEST_MINOR)) {
      this.replyError(req.unique, errno.EPROTO);
      this.initFailed(new VdiskError('EPROTO', `the kernel speaks FUSE ${k.major}.${k.minor}; vdiskfs needs ${KERNEL_MAJOR}.${OLDEST_MINOR} or newer (Linux 5.2+)`));
      return;
    }
    const wanted = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.MAX_PAGES | InitFlag.ASYNC_DIO | InitFlag.PARALLEL_DIROPS
      | (this.options.writebackCache ? InitFlag.WRITEBACK_CACHE : 0);
    const flags = wanted & k.flags;
    const minor = Math.min(k.minor, KERNEL_MINOR);
    this.reply(req.unique, encodeInitOut({
      minor,
      maxReadahead: Math.min(k.maxReadahead, MAX_REQUEST),
      flags,
      // Asynchronous direct I/O and readahead are background requests: the default of 12 would
      // cap QD16 direct I/O.
      maxBackground: 64,
      congestionThreshold: 48,
      maxWrite: MAX_REQUEST,
      maxPages: MAX_REQUEST / 4096,
    }));
    const init = { minor, flags, maxWrite: MAX_REQUEST, writebackCache: (flags & InitFlag.WRITEBACK_CACHE) !== 0 };
    this.options.log.info({ kernel: `${k.major}.${k.minor}`, negotiated: `${KERNEL_MAJOR}.${minor}`, flags: flags.toString(16), writebackCache: init.writebackCache }, 'FUSE session initialized');
    this.initDone(init);
  }

  /** Answers a request with `payload` (or nothing). False if it was already answered (timed out). */
  reply(unique: number, payload?: Buffer): boolean {
    if (!this.inFlight.delete(unique)) return false;
    const length = OUT_HEADER_SIZE + (payload?.length ?? 0);
    const out = Buffer.allocUnsafe(length);
    putOutHeader(out, length, 0, unique);
    payload?.copy(out, OUT_HEADER_SIZE);
    this.send(out);
    return true;
  }

  /**
   * Answers with data already placed after OUT_HEADER_SIZE bytes of `out` (reads fill the space
   * behind a header, so the reply needs no copy). `length` counts the data only.
   */
  replyPrepared(unique: number, out: Buffer, length: number): boolean {
    if (!this.inFlight.delete(unique)) return false;
    putOutHeader(out, OUT_HEADER_SIZE + length, 0, unique);
    this.send(out.subarray(0, OUT_HEADER_SIZE + length));
    if (out.length === REPLY_BUFFER) {
      if (this.spareReplies.length < SPARE_BUFFERS) this.spareReplies.push(out);
    } else if (out.length === SMALL_REPLY_BUFFER && this.spareSmallReplies.length < SPARE_SMALL_BUFFERS) {
      this.spareSmallReplies.push(out);
    }
    return true;
  }

  /**
   * A buffer for a reply of `length` data bytes behind the header (see replyPrepared). Reply
   * buffers are reused once sent: allocating one per request costs malloc, an ArrayBuffer and
   * garbage collection on every read.
   */
  replyBuffer(length: number): Buffer {
    if (length <= SMALL_REPLY_BUFFER - OUT_HEADER_SIZE) return this.spareSmallReplies.pop() ?? Buffer.allocUnsafe(SMALL_REPLY_BUFFER);
    return this.spareReplies.pop() ?? Buffer.allocUnsafe(REPLY_BUFFER);
  }

  /** Answers with -errno (`errnoValue` positive). */
  replyError(unique: number, errnoValue: number): boolean {
    if (!this.inFlight.delete(unique)) return false;
    const out = Buffer.allocUnsafe(OUT_HEADER_SIZE);
    putOutHeader(out, OUT_HEADER_SIZE, -errnoValue, unique);
    this.send(out);
    return true;
  }

  /** Whether a request still waits for its answer (false once it timed out). */
  isOpen(unique: number): boolean {
    return this.inFlight.has(unique);
  }

  private send(out: Buffer): void {
    if (this.addon) {
      const n = this.addon.write(this.fd, out);
      if (n < 0 && n !== -errno.ENOENT && n !== -errno.ENODEV) this.options.log.error({ errno: -n }, 'writing a reply to /dev/fuse failed');
      return;
    }
    try {
      writeSync(this.fd, out, 0, out.length);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the caller was interrupted and the kernel dropped the request; ENODEV: unmounted.
      if (code !== 'ENOENT' && code !== 'ENODEV') this.options.log.error({ err }, 'writing a reply to /dev/fuse failed');
    }
  }

  /**
   * Drops the kernel's cached pages of inode `ino` in [offset, offset + length) (length 0: to the
   * end). Asynchronous on purpose (see the header comment); failures only mean nothing was cached.
   */
  invalidate(ino: number, offset: number, length: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    const msg = encodeInvalInode(ino, offset, length);
    this.counters.notifications++;
    return new Promise((done) => write(this.fd, msg, 0, msg.length, null, (err) => {
      const code = (err as NodeJS.ErrnoException | null)?.code;
      if (err && code !== 'ENOENT' && code !== 'ENODEV') this.options.log.warn({ err, ino }, 'cache invalidation failed');
      done();
    }));
  }

  private sweep(ticksToTimeout: number): void {
    this.tick++;
    for (const [unique, r] of this.inFlight) {
      if (this.tick - r.tick <= ticksToTimeout) continue;
      this.counters.timedOut++;
      this.options.log.error({ opcode: r.opcode, nodeid: r.nodeid, timeoutMs: this.options.timeoutMs }, 'request timed out; answered EIO');
      this.replyError(unique, errno.EIO);
    }
  }

  /** Closes our end of /dev/fuse once the readers have stopped (after the unmount). */
  async close(): Promise<void> {
    await this.done;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

export interface KernelMount {
  readonly mountpoint: string;
  readonly channel: KernelChannel;
  /** Waits for the connection to end (after an unmount), closes it and retires the watchdog. */
  close(): Promise<void>;
}

/**
 * Mounts a FUSE file system at `mountpoint` served by the returned channel; the caller starts the
 * channel with its dispatcher, then awaits `ready`. As root: mount(2) (through mount -i) with our
 * own /dev/fuse descriptor. Otherwise: fusermount3 mounts and passes the descriptor back over a
 * socket (_FUSE_COMMFD), as libfuse does; that needs native/sys.
 */
export async function mountKernel(mountpoint: string, options: ChannelOptions & { allowOther: boolean }): Promise<KernelMount> {
  const addon = nativeSys();
  warnIfNoNativeSys(options.log, 'reading /dev/fuse on the thread pool instead (two more thread switches per request)');
  const root = process.getuid?.() === 0;
  const common = ['default_permissions', ...(options.allowOther ? ['allow_other'] : [])];
  let fd: number;
  if (root) {
    fd = openSync('/dev/fuse', fsConstants.O_RDWR | (addon ? fsConstants.O_NONBLOCK : 0));
    const opts = [`fd=3`, `rootmode=40000`, `user_id=0`, `group_id=${process.getgid?.() ?? 0}`, ...common];
    try {
      await runWithFd('mount', ['-i', '-t', 'fuse.vdiskfs', '-o', opts.join(','), 'vdiskfs', mountpoint], fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  } else {
    if (!addon) {
      throw new VdiskError('EPERM', 'mounting as a user other than root needs native/sys (run make build), or run as root');
    }
    const [ours, theirs] = addon.socketpair(false);
    try {
      try {
        await runWithFd('fusermount3', ['-o', ['fsname=vdiskfs', 'subtype=vdiskfs', ...common].join(','), '--', mountpoint], theirs, { _FUSE_COMMFD: '3' });
      } finally {
        closeSync(theirs);
      }
      fd = addon.receiveFd(ours);
      if (fd < 0) throw new VdiskError('EIO', `fusermount3 mounted ${mountpoint} but passed no descriptor back (errno ${-fd})`);
      addon.setNonblocking(fd);
    } catch (err) {
      await execFileAsync('fusermount3', ['-uz', mountpoint]).catch(() => {});
      throw err;
    } finally {
      closeSync(ours);
    }
  }
  const channel = new KernelChannel(fd, options, addon);
  const watchdog = startWatchdog(mountpoint, root);
  return {
    mountpoint,
    channel,
    async close() {
      await channel.close();
      watchdog.stdin?.end('clean\n');
    },
  };
}

function runWithFd(command: string, args: string[], fd: number, env: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe', fd], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
    let stderr = '';
    child.stderr!.on('data', (d) => { stderr += d; });
    child.on('error', (err) => reject(new VdiskError('ENOENT', `cannot run ${command}: ${err.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new VdiskError('EIO', `${command} failed: ${stderr.trim() || `exit code ${code}`}`));
    });
  });
}

/**
 * A shell that waits on a pipe only we hold. A clean exit writes "clean"; if we die instead, the
 * pipe closes and, if the mount is dead (stat fails with ENOTCONN), it detaches it.
 */
function startWatchdog(mountpoint: string, root: boolean): ChildProcess {
  const detach = root ? 'umount -l -- "$1"' : 'fusermount3 -uz -- "$1"';
  const script = `read -r state; [ "$state" = clean ] && exit 0; stat -- "$1" >/dev/null 2>&1 || exec ${detach}`;
  const child = spawn('/bin/sh', ['-c', script, 'vdiskfs-watchdog', mountpoint], { detached: true, stdio: ['pipe', 'ignore', 'ignore'], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' } });
  child.unref();
  (child.stdin as unknown as { _handle?: { unref(): void } })._handle?.unref();
  child.on('error', () => {});
  return child;
}

/** Unmounts a FUSE mount point; `lazy` detaches it even while files in it are open. */
export async function unmountKernel(mountpoint: string, lazy: boolean): Promise<void> {
  const root = process.getuid?.() === 0;
  try {
    if (root) await execFileAsync('umount', lazy ? ['-l', mountpoint] : [mountpoint]);
    else await execFileAsync('fusermount3', [lazy ? '-uz' : '-u', mountpoint]);
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? '').trim();
    const e = new Error(stderr || (err as Error).message) as Error & { busy?: boolean };
    e.busy = /busy/i.test(stderr);
    throw e;
  }
}
