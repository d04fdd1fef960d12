/**
 * The kernel channel over a SOCK_SEQPACKET socket pair standing in for /dev/fuse (one message
 * per read and write, as the device has): INIT negotiation, replies, one sweep timer answering
 * requests the store never finishes with EIO exactly once, and the end of the connection. Run in
 * both reading modes: epoll through native/sys, and blocking reads on the thread pool.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeSync } from 'node:fs';
import { constants } from 'node:os';
import { pino } from 'pino';
import { KernelChannel, MAX_REQUEST } from '../src/fuse/kernel-channel.js';
import { InitFlag, OUT_HEADER_SIZE, Op, ROOT_ID } from '../src/fuse/protocol.js';
import { nativeSys } from '../src/util/native-sys.js';
import { body, request } from './support/fuse-requests.js';

const { errno } = constants;
const log = pino({ level: 'silent' });
const sys = nativeSys();

describe('native/sys', () => {
  it('is built (make build) and loads', () => {
    expect(sys, 'native/sys/build/Release/vdiskfs_sys.node: run make build').toBeDefined();
  });
});

describe.each([['epoll', true], ['thread-pool', false]] as const)('kernel channel (%s)', (mode, useAddon) => {
  const [ours, kernel] = sys!.socketpair(true);
  const channel = new KernelChannel(ours, { log, timeoutMs: 200, writebackCache: true }, useAddon ? sys : undefined);
  const seen: number[] = [];
  const written: Buffer[] = [];
  channel.start((req) => {
    seen.push(req.opcode);
    if (req.opcode === Op.GETATTR) channel.reply(req.unique, Buffer.from('attr'));
    if (req.opcode === Op.WRITE) {
      const data = channel.writeData(req, req.body.readUInt32LE(16));
      // The store answers later: the data must still be intact when it does.
      setTimeout(() => {
        written.push(Buffer.from(data));
        channel.recycle(data);
        channel.reply(req.unique);
      }, 20);
    }
    // READ: never answered, as a store that hangs
  });
  // The kernel's end, read without blocking the event loop the channel runs on: each message of
  // the seqpacket pair arrives as one chunk.
  const messages: Buffer[] = [];
  const wake: (() => void)[] = [];
  const inbox = Buffer.alloc(MAX_REQUEST + 4096);
  let watching: unknown = sys!.watch(kernel, () => {
    const n = sys!.read(kernel, inbox); // readable: one message, without blocking
    if (n <= 0) return;
    messages.push(Buffer.from(inbox.subarray(0, n)));
    wake.shift()?.();
  });
  const hangUp = () => {
    if (watching) sys!.unwatch(watching);
    watching = undefined;
    closeSync(kernel);
  };
  afterAll(() => { if (watching) hangUp(); });

  const replyFor = async (): Promise<{ length: number; error: number; unique: number; payload: Buffer }> => {
    if (messages.length === 0) await Promise.race([new Promise<void>((r) => wake.push(r)), new Promise((_, no) => setTimeout(() => no(new Error('no reply within 2 s')), 2000))]);
    const m = messages.shift()!;
    return { length: m.readUInt32LE(0), error: m.readInt32LE(4), unique: Number(m.readBigUInt64LE(8)), payload: m.subarray(OUT_HEADER_SIZE) };
  };
  const send = (msg: Buffer) => expect(sys!.write(kernel, msg)).toBe(msg.length);

  it(`negotiates INIT: 1 MiB requests, async DIO, writeback cache when asked (${mode})`, async () => {
    send(request(Op.INIT, 0, body.init(45), 1));
    const r = await replyFor();
    expect(r).toMatchObject({ unique: 1, error: 0, length: OUT_HEADER_SIZE + 64 });
    expect(r.payload.readUInt32LE(0)).toBe(7);
    expect(r.payload.readUInt32LE(4)).toBe(38); // our newest structures
    const flags = r.payload.readUInt32LE(12);
    expect(flags & InitFlag.ASYNC_DIO).toBeTruthy();
    expect(flags & InitFlag.WRITEBACK_CACHE).toBeTruthy();
    expect(r.payload.readUInt32LE(20)).toBe(MAX_REQUEST); // max_write
    expect(r.payload.readUInt16LE(28)).toBe(256); // max_pages
    await expect(channel.ready).resolves.toMatchObject({ minor: 38, writebackCache: true });
  });

  it('replies to a request, and answers one that never finishes with EIO exactly once', async () => {
    send(request(Op.GETATTR, ROOT_ID, Buffer.alloc(16), 7));
    expect(await replyFor()).toMatchObject({ unique: 7, error: 0, payload: Buffer.from('attr') });
    send(request(Op.READ, 2, body.read(1, 0, 4096), 8));
    const t0 = Date.now();
    const r = await replyFor();
    expect(r).toMatchObject({ unique: 8, error: -errno.EIO });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(channel.reply(8, Buffer.from('late'))).toBe(false); // the store's late answer is dropped
    expect(channel.counters.timedOut).toBe(1);
  });

  it('hands large and small WRITE data to the store intact while more requests arrive', async () => {
    const big = Buffer.alloc(160 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    const small = Buffer.from('small write');
    send(request(Op.WRITE, 2, body.write(1, 0, big), 20));
    send(request(Op.WRITE, 2, body.write(1, 0, small), 21));
    send(request(Op.GETATTR, ROOT_ID, Buffer.alloc(16), 22)); // overwrites the reader's buffer
    const uniques = [(await replyFor()).unique, (await replyFor()).unique, (await replyFor()).unique];
    expect(uniques.sort()).toEqual([20, 21, 22]);
    expect(written).toHaveLength(2);
    expect(written.find((w) => w.length === big.length)?.equals(big)).toBe(true);
    expect(written.find((w) => w.length === small.length)?.equals(small)).toBe(true);
  });

  it('ends when the other side goes away', async () => {
    hangUp();
    await channel.close();
    expect(seen).toContain(Op.READ);
  });
});

describe('kernel channel refuses an old kernel', () => {
  it('answers EPROTO to FUSE 7.26', async () => {
    const [ours, kernel] = sys!.socketpair(true);
    const channel = new KernelChannel(ours, { log, timeoutMs: 0, writebackCache: false }, sys);
    channel.start(() => {});
    sys!.write(kernel, request(Op.INIT, 0, body.init(26), 1));
    await expect(channel.ready).rejects.toThrow(/7\.26.*7\.31 or newer/);
    closeSync(kernel);
    await channel.close();
  });
});
