/**
 * The FUSE operation table, called directly (no mount): range checks at the edge, errno mapping,
 * and the once-guarded reply. The mount itself is covered by native-test/.
 */
import { describe, expect, it } from 'vitest';
import { constants } from 'node:os';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { pino } from 'pino';
import { createOperations } from '../src/fuse/operations.js';
import { runSafely } from '../src/fuse/safe-handler.js';
import { MountTable } from '../src/mount/mount-table.js';
import { createFlatStore } from '../src/stores/flat/flat-store.js';
import { VdiskError } from '../src/errors.js';
import { scratchDir } from './support/tmp.js';

const { errno } = constants;
const log = pino({ level: 'silent' });
const dir = await scratchDir();
const src = join(dir, 'src');
await mkdir(src);
await createFlatStore({ descriptorPath: join(src, 'd.vdisk'), size: 10_000 * 512 });
const table = await MountTable.open(src, { views: ['raw'] });
const ops = createOperations(table, { log, timeoutMs: 5000 });
const call = (op: string, ...args: unknown[]) => new Promise<unknown[]>((done) => ops[op]!(...args, (...r: unknown[]) => done(r)));
const SIZE = 10_000 * 512;

describe('FUSE operations', () => {
  it('getattr reports exact sizes and modes, ENOENT otherwise', async () => {
    const [rc, st] = await call('getattr', '/d.raw');
    expect(rc).toBe(0);
    expect(st).toMatchObject({ size: SIZE, mode: 0o100644 });
    expect((await call('getattr', '/'))[0]).toBe(0);
    expect((await call('getattr', '/nope'))[0]).toBe(-errno.ENOENT);
    expect((await call('readdir', '/'))[1]).toEqual(['d.raw', '.vdiskfs']);
  });

  it('reads are clamped at EOF; writes past EOF are refused whole', async () => {
    const [, fh] = await call('open', '/d.raw', 2);
    const buf = Buffer.alloc(4096, 0xee);
    expect((await call('write', '/d.raw', fh, Buffer.alloc(4096, 7), 4096, SIZE - 4096))[0]).toBe(4096);
    expect((await call('read', '/d.raw', fh, buf, 4096, SIZE - 100))[0]).toBe(100);
    expect(buf.subarray(0, 100).every((b) => b === 7)).toBe(true);
    expect((await call('read', '/d.raw', fh, buf, 4096, SIZE))[0]).toBe(0);
    expect((await call('write', '/d.raw', fh, Buffer.alloc(4096, 9), 4096, SIZE - 100))[0]).toBe(-errno.ENOSPC);
    const check = Buffer.alloc(100);
    await call('read', '/d.raw', fh, check, 100, SIZE - 100);
    expect(check.every((b) => b === 7)).toBe(true); // nothing of the refused write landed
    expect((await call('truncate', '/d.raw', 0))[0]).toBe(-errno.EPERM);
    expect((await call('truncate', '/d.raw', SIZE))[0]).toBe(0);
    expect((await call('fsync', '/d.raw', 0, fh))[0]).toBe(0);
    expect((await call('release', '/d.raw', fh))[0]).toBe(0);
  });

  it('a read-only open cannot write', async () => {
    const [, fh] = await call('open', '/d.raw', 0);
    expect((await call('write', '/d.raw', fh, Buffer.alloc(1), 1, 0))[0]).toBe(-errno.EBADF);
  });

  it('serves store stats as JSON under .vdiskfs/', async () => {
    const [rc, st] = await call('getattr', '/.vdiskfs/d.stats.json');
    expect(rc).toBe(0);
    const buf = Buffer.alloc((st as { size: number }).size);
    expect((await call('read', '/.vdiskfs/d.stats.json', 0, buf, buf.length, 0))[0]).toBe(buf.length);
    expect(JSON.parse(buf.toString())).toMatchObject({ store: 'd', kind: 'flat', size: SIZE });
  });
});

describe('runSafely', () => {
  const opts = { log, timeoutMs: 50 };
  it('maps a thrown VdiskError to -errno and unknown errors to -EIO', async () => {
    const r1 = await new Promise((done) => runSafely('x', {}, opts, done, async () => { throw new VdiskError('EROFS', 'ro'); }));
    expect(r1).toBe(-errno.EROFS);
    const r2 = await new Promise((done) => runSafely('x', {}, opts, done, () => { throw new TypeError('bug'); }));
    expect(r2).toBe(-errno.EIO);
  });
  it('answers -EIO on timeout, exactly once, and tells the late handler', async () => {
    const replies: unknown[] = [];
    let lateSawOpen: boolean | undefined;
    runSafely('x', {}, opts, (r: unknown) => replies.push(r), async (isOpen) => {
      await new Promise((r) => setTimeout(r, 120));
      lateSawOpen = isOpen();
      return [0];
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(replies).toEqual([-errno.EIO]);
    expect(lateSawOpen).toBe(false);
  });
});
