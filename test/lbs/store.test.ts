/**
 * The lbs store kind on real files: creation, the protected-mount rules, tampering, bad input,
 * a full metadata filesystem, and the CLI (create lbs, info, check) run in-process.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { join } from 'node:path';
import { chmod, chown, mkdir, open, readFile, rename, stat, truncate, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { scratchDir } from '../support/tmp.js';
import { Random } from '../support/random.js';
import { createLbsStore } from '../../src/stores/lbs/create.js';
import { loadDescriptor } from '../../src/stores/descriptor.js';
import { openStore, storeKind } from '../../src/stores/registry.js';
import { checked } from '../../src/devices/block-device.js';
import { LbsDevice } from '../../src/stores/lbs/lbs-core.js';
import { LogHeaderOffsets } from '../../src/stores/lbs/format.js';
import { main } from '../../src/cli/main.js';
import { formatMemStore, openMem } from './mem-files.js';
import { configureLogging } from '../../src/log.js';

const dir = await scratchDir('vdiskfs-lbs-store-');
let n = 0;

async function newStore(size = 4 << 20, extra: Record<string, unknown> = {}) {
  const i = n++;
  const meta = join(dir, `meta${i}`);
  await mkdir(meta, { mode: 0o700 });
  const c = await createLbsStore({
    descriptorPath: join(dir, `s${i}.vdisk`),
    dataPath: join(dir, `s${i}.lbsdata`),
    metaDir: meta,
    size,
    clusterSize: 64 * 1024,
    allowSameFilesystem: true,
    ...extra,
  });
  return { ...c, meta, loaded: await loadDescriptor(c.descriptorPath) };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  const before = process.exitCode;
  try {
    const code = await main(args);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
    process.exitCode = before;
  }
}

afterEach(() => {
  process.exitCode = 0;
});

describe('lbs create', () => {
  it('allocates the data file for real, makes the log 0600, and writes the descriptor', async () => {
    const s = await newStore(8 << 20);
    const data = await stat(s.dataPath);
    expect(data.size).toBe(s.geometry.dataOffset + s.geometry.clusterCount * s.geometry.clusterSize);
    expect(data.blocks * 512).toBeGreaterThanOrEqual(data.size); // not sparse
    expect(s.geometry.clusterCount * s.geometry.clusterSize).toBeGreaterThanOrEqual(8 * 1.25 * (1 << 20));
    const log = await stat(s.logPath);
    expect(log.mode & 0o777).toBe(0o600);
    expect(s.loaded.descriptor.kind).toBe('lbs');
    expect(s.loaded.descriptor.id).toBe(s.id);
    expect(s.loaded.descriptor.store).toMatchObject({ size: 8 << 20, blockSize: 4096, clusterSize: 65536, overprovision: 25, checksum: 'fletcher32' });
    const dev = checked(await openStore(s.loaded));
    expect(dev.size).toBe(8 << 20);
    await dev.close();
  });

  it('refuses a missing, group- or world-writable, or foreign meta directory, and the same filesystem', async () => {
    const base = { descriptorPath: join(dir, 'r.vdisk'), dataPath: join(dir, 'r.lbsdata'), size: 1 << 20, allowSameFilesystem: true };
    await expect(createLbsStore({ ...base, metaDir: join(dir, 'nope') })).rejects.toThrow(/metadata directory .*nope does not exist; create it on a protected mount/);
    const open1 = join(dir, 'worldw');
    await mkdir(open1);
    await chmod(open1, 0o777);
    await expect(createLbsStore({ ...base, metaDir: open1 })).rejects.toThrow(/group- or world-writable \(mode 777\).*chmod go-w/);
    await chmod(open1, 0o770);
    await expect(createLbsStore({ ...base, metaDir: open1 })).rejects.toThrow(/group- or world-writable \(mode 770\)/);
    const foreign = join(dir, 'foreign');
    await mkdir(foreign, { mode: 0o700 });
    if (process.getuid!() === 0) await chown(foreign, 65534, 65534);
    const foreignDir = process.getuid!() === 0 ? foreign : '/';
    await expect(createLbsStore({ ...base, metaDir: foreignDir })).rejects.toThrow(/is owned by uid \d+, not by you/);
    const same = join(dir, 'same');
    await mkdir(same, { mode: 0o700 });
    await expect(createLbsStore({ ...base, metaDir: same, allowSameFilesystem: false })).rejects.toThrow(
      /is on the same filesystem as the data file .*pass --allow-same-filesystem/,
    );
    // Nothing was left behind by the refusals.
    await expect(stat(base.dataPath)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(stat(base.descriptorPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses bad geometry and an existing store', async () => {
    const s = await newStore(1 << 20);
    const meta = s.meta;
    const base = { descriptorPath: join(dir, 'g.vdisk'), dataPath: join(dir, 'g.lbsdata'), metaDir: meta, size: 1 << 20, allowSameFilesystem: true };
    await expect(createLbsStore({ ...base, blockSize: 3000 })).rejects.toThrow(/block size 3000 must be a power of two/);
    await expect(createLbsStore({ ...base, clusterSize: 2048 })).rejects.toThrow(/cluster size 2048 must be a power of two, at least the block size/);
    await expect(createLbsStore({ ...base, overprovision: 1 })).rejects.toThrow(/--overprovision must be between 5 and 400/);
    await expect(createLbsStore({ ...base, size: 1000 })).rejects.toThrow(/multiple of 512/);
    await expect(createLbsStore({ ...base, checksum: 'md5' })).rejects.toThrow(/unknown checksum "md5"/);
    await expect(createLbsStore({ ...base, dataPath: s.dataPath })).rejects.toThrow(/already exists/);
  });
});

describe('lbs open: bad input gives a clear error and changes nothing', () => {
  it('a log from another store', async () => {
    const a = await newStore(1 << 20);
    const b = await newStore(1 << 20);
    const before = await readFile(a.dataPath);
    await writeFile(a.loaded.path, (await readFile(a.loaded.path, 'utf8')).replace(`"meta": "${a.meta}"`, `"meta": "${b.meta}"`).replace(/"log": "[^"]+"/, `"log": "${b.logPath.split('/').pop()}"`));
    await expect(openStore(await loadDescriptor(a.loaded.path))).rejects.toThrow(/belongs to store .* but data file .* to store .*: the log and the data file are not a pair/);
    expect((await readFile(a.dataPath)).equals(before)).toBe(true);
  });

  it('a log of an unknown version', async () => {
    const s = await newStore(1 << 20);
    const fh = await open(s.logPath, 'r+');
    const h = Buffer.alloc(512);
    await fh.read(h, 0, 512, 0);
    h.writeUInt16LE(9, LogHeaderOffsets.version);
    h.writeUInt32LE(createHash('sha256').update(h.subarray(0, 508)).digest().readUInt32LE(0), 508);
    await fh.write(h, 0, 512, 0);
    await fh.close();
    await expect(openStore(s.loaded)).rejects.toThrow(/LBS log format version 9 is not supported \(this vdiskfs reads version 1\)/);
  });

  it('a damaged log header, and a file that is not a log', async () => {
    const s = await newStore(1 << 20);
    const fh = await open(s.logPath, 'r+');
    await fh.write(Buffer.from([0xff]), 0, 1, 40);
    await fh.close();
    await expect(openStore(s.loaded)).rejects.toThrow(/metadata log header is damaged/);
    await writeFile(s.logPath, Buffer.alloc(600, 1));
    await expect(openStore(s.loaded)).rejects.toThrow(/is not an LBS metadata log/);
  });

  it('a data file of the wrong size', async () => {
    const s = await newStore(1 << 20);
    const size = (await stat(s.dataPath)).size;
    await truncate(s.dataPath, size - 4096);
    await expect(openStore(s.loaded)).rejects.toThrow(new RegExp(`is ${size - 4096} bytes, but its header says ${size}: was it truncated or replaced\\?`));
  });

  it('a missing meta directory or log, and a log made writable by others', async () => {
    const s = await newStore(1 << 20);
    await chmod(s.logPath, 0o666);
    await expect(openStore(s.loaded)).rejects.toThrow(/metadata log .* is writable by others .*chmod 600/);
    await chmod(s.logPath, 0o600);
    await rename(s.logPath, s.logPath + '.x');
    await expect(openStore(s.loaded)).rejects.toThrow(/metadata log .* does not exist \(is the protected mount mounted\?\)/);
    await rename(s.logPath + '.x', s.logPath);
    await rename(s.meta, s.meta + '.gone');
    await expect(openStore(s.loaded)).rejects.toThrow(/metadata directory .* does not exist/);
    await rename(s.meta + '.gone', s.meta);
    const dev = checked(await openStore(s.loaded));
    await dev.close();
  });

  it('a full metadata filesystem: the flush fails with ENOSPC, nothing is lost, a later flush succeeds', async () => {
    const s = await formatMemStore({ size: 256 * 1024, blockSize: 4096, clusterSize: 16384 });
    const dev = checked(await openMem(s));
    await dev.write(new Uint8Array(8192).fill(1), 0);
    await dev.flush();
    await dev.write(new Uint8Array(8192).fill(2), 8192);
    const logBefore = s.log.snapshot();
    s.log.failWrites = 'ENOSPC';
    await expect(dev.flush()).rejects.toMatchObject({ code: 'ENOSPC', message: expect.stringMatching(/metadata log's filesystem is full/) });
    expect(s.log.snapshot().equals(logBefore)).toBe(true);
    // Reads still see everything; a crash now would keep the first barrier.
    const mid = await openMem({ ...s, log: new (s.log.constructor as any)('log', undefined, s.log.snapshot()), data: new (s.data.constructor as any)('data', undefined, s.data.snapshot()) });
    const b = new Uint8Array(16384);
    await mid.read(b, 0);
    expect(b.subarray(0, 8192).every((x) => x === 1) && b.subarray(8192).every((x) => x === 0)).toBe(true);
    s.log.failWrites = undefined;
    await dev.flush();
    await dev.close();
    const again = await openMem(s);
    await again.read(b, 0);
    expect(b.subarray(8192).every((x) => x === 2)).toBe(true);
    await again.close();
  });

  it('one writer at a time: a second writable open is refused, a stale lock is taken over', async () => {
    const s = await newStore(1 << 20);
    const first = checked(await openStore(s.loaded));
    await expect(openStore(s.loaded)).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringMatching(/is open for writing by process \d+ \(mounted\?\)/) });
    const ro = checked(await openStore(s.loaded, { readOnly: true }));
    await ro.close();
    await expect(storeKind('lbs').check!(s.loaded, {})).rejects.toThrow(/is open for writing by process \d+ \(mounted\?\); unmount it, then check/);
    await first.close();
    await writeFile(s.logPath + '.lock', '999999999\n');
    const second = checked(await openStore(s.loaded));
    await second.close();
    await expect(stat(s.logPath + '.lock')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a read-only open refuses writes', async () => {
    const s = await newStore(1 << 20);
    const dev = checked(await openStore(s.loaded, { readOnly: true }));
    await expect(dev.write(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'EROFS' });
    await dev.close();
  });
});

describe('lbs integrity', () => {
  it('flipped bytes in the data file turn reads of exactly those blocks into EIO, and check reports them', async () => {
    const s = await newStore(2 << 20);
    const dev = checked(await openStore(s.loaded)) ;
    const rnd = new Random(5);
    const content = rnd.bytes(1 << 20);
    await dev.write(content, 0);
    await dev.close();
    const lbs = (await openStore(s.loaded, { readOnly: true })) as LbsDevice;
    const bs = 4096;
    const victims = [3, 100, 101, 255];
    const pbns = victims.map((l) => lbs.map.pbn[l]!);
    await lbs.close();
    const fh = await open(s.dataPath, 'r+');
    for (const p of pbns) {
      const at = s.geometry.dataOffset + p * bs + 1234;
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at);
      b[0] ^= 0x40;
      await fh.write(b, 0, 1, at);
    }
    await fh.close();
    const again = checked(await openStore(s.loaded));
    for (let l = 0; l < 256; l++) {
      const b = new Uint8Array(bs);
      if (victims.includes(l)) {
        await expect(again.read(b, l * bs)).rejects.toMatchObject({ code: 'EIO', message: expect.stringMatching(new RegExp(`block ${l} \\(physical block \\d+\\) failed its checksum`)) });
      } else {
        await again.read(b, l * bs);
        expect(Buffer.from(b).equals(content.subarray(l * bs, (l + 1) * bs))).toBe(true);
      }
    }
    // A partial read touching a bad block fails too; one beside it does not.
    await expect(again.read(new Uint8Array(10), 3 * bs + 4000)).rejects.toMatchObject({ code: 'EIO' });
    await again.read(new Uint8Array(10), 4 * bs);
    expect(((again.stats!() as any).blocks.failed as number)).toBeGreaterThanOrEqual(5);
    await again.close();

    const report = await storeKind('lbs').check!(s.loaded, {});
    expect(report.ok).toBe(false);
    expect(report.problems.map((p) => p.lbn).sort((a, b) => (a as number) - (b as number))).toEqual(victims);
    expect(report.summary).toMatchObject({ blocksFailed: 4, blocksVerified: 252 });

    const text = await cli(['check', s.loaded.path]);
    expect(text.code).toBe(1);
    expect(text.out).toMatch(/FAILED block 100 \(physical block \d+\) failed its checksum/);
    expect(text.out).toMatch(/FAILED \(.*blocksVerified=252, blocksFailed=4/);
    const json = await cli(['check', s.loaded.path, '--json']);
    expect(json.code).toBe(1);
    const parsed = JSON.parse(json.out);
    expect(parsed).toMatchObject({ ok: false, kind: 'lbs', summary: { blocksFailed: 4 } });
    expect(parsed.problems).toHaveLength(4);
  });

  it('check passes on a healthy store (exit 0), and check of a kind without the capability is refused', async () => {
    const s = await newStore(1 << 20);
    const dev = checked(await openStore(s.loaded));
    await dev.write(new Uint8Array(300_000).fill(7), 5000);
    await dev.close();
    const r = await cli(['check', s.loaded.path, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ ok: true, summary: { blocksFailed: 0, blocksVerified: 74 } });
    await writeFile(join(dir, 'flatx.vdisk'), JSON.stringify({ vdiskfs: 1, kind: 'flat', id: '11111111-2222-3333-4444-555555555555', store: { path: 'x.img', size: 512 } }));
    const f = await cli(['check', join(dir, 'flatx.vdisk')]);
    expect(f.code).toBe(1);
    expect(f.err).toMatch(/store kind "flat" has no integrity check/);
  });
});

describe('lbs CLI', () => {
  it('create lbs, then info shows where each file lives and the store state', async () => {
    const meta = join(dir, 'climeta');
    await mkdir(meta, { mode: 0o700 });
    const desc = join(dir, 'cli.vdisk');
    const r = await cli(['create', 'lbs', desc, '--size', '3M', '--data', join(dir, 'cli.lbsdata'), '--meta', meta, '--cluster-size', '256k', '--block-size', '4k', '--overprovision', '50', '--checksum', 'sha256', '--allow-same-filesystem']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/created lbs store .*cli\.vdisk \(3 MiB\)/);
    expect(r.out).toMatch(/metadata log .*climeta\/cli\.lbslog/);
    const refused = await cli(['create', 'lbs', join(dir, 'cli2.vdisk'), '--size', '3M', '--data', join(dir, 'cli2.lbsdata'), '--meta', meta]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/same filesystem .*--allow-same-filesystem/);
    const info = await cli(['info', desc, '--json']);
    expect(info.code).toBe(0);
    const j = JSON.parse(info.out);
    expect(j).toMatchObject({ kind: 'lbs', size: 3 << 20, metaDir: meta, checksum: 'sha256', blockSize: 4096, clusterSize: 262144, overprovision: '50%', mappedBlocks: 0, barriers: 0 });
    expect(j.dataFile).toBe(join(dir, 'cli.lbsdata'));
    expect(j.dataFilesystem).toMatch(/^\/.* \(.* on .*\)$/);
    expect(j.logFilesystem).toBe(j.dataFilesystem);
    expect(j.clusters.total).toBeGreaterThanOrEqual(18);
    expect(j.lastSession).toBe('none recorded');
    const dev = checked(await openStore(await loadDescriptor(desc)));
    await dev.write(new Uint8Array(8192).fill(3), 0);
    await dev.close();
    const text = await cli(['info', desc]);
    expect(text.out).toMatch(/logFilesystem/);
    expect(text.out).toMatch(/lastSession +closed .*: 1 writes \(0\.0 MiB\), 0 reads, 0 flushes; data file 0\.0 MiB in 1 writes \(2 blocks each\); log 0\.0 MiB, 1 barriers; 0 blocks verified, 0 failed/);
  });
});

describe('lbs recovery log line', () => {
  it('says "rolled back N entries after barrier K" for a torn tail', async () => {
    const logFile = join(dir, 'recovery.log');
    const root = configureLogging({ level: 'info', file: logFile });
    try {
      const s = await formatMemStore({ size: 64 * 1024, blockSize: 4096, clusterSize: 16384 });
      const dev = checked(await openMem(s));
      await dev.write(new Uint8Array(4096).fill(1), 0);
      await dev.flush();
      await dev.write(new Uint8Array(4096).fill(2), 4096);
      await dev.write(new Uint8Array(4096).fill(3), 16384);
      await dev.flush();
      // Tear the second group: cut its barrier in half.
      s.log.setLength(s.log.length - 36);
      const again = await openMem(s);
      expect(again.replay).toMatchObject({ sequence: 1, rolledBackEntries: 2 });
      await again.close();
      root.flush();
      await new Promise((r) => setTimeout(r, 200));
      expect(await readFile(logFile, 'utf8')).toMatch(/rolled back 2 entries after barrier 1/);
    } finally {
      configureLogging({ level: 'silent' });
    }
  });
});

describe('lbs stats', () => {
  it('count requests, data-file runs, log bytes, verification, and RAM per block', async () => {
    const s = await formatMemStore({ size: 4 << 20, blockSize: 4096, clusterSize: 64 * 1024 });
    const dev = checked(await openMem(s));
    const rnd = new Random(9);
    // 64 random 4 KiB writes: four clusters, each written to the data file as one run.
    for (let i = 0; i < 64; i++) await dev.write(rnd.bytes(4096), 4096 * rnd.int(1024));
    await dev.write(new Uint8Array(8192), 0); // zero blocks cost no data-file space
    await dev.flush();
    await dev.read(new Uint8Array(1 << 20), 0);
    const st = dev.stats!() as any;
    expect(st.requests).toMatchObject({ writes: 65, writeBytes: 64 * 4096 + 8192, flushes: 1 });
    expect(st.dataFile.bytesWritten).toBe(64 * 4096);
    expect(st.dataFile.writeCalls).toBe(4);
    expect(st.dataFile.averageWriteBlocks).toBe(16);
    expect(st.dataFile.writeRunBlocks).toEqual({ '16': 4 });
    expect(st.dataFile.sequentialBytes).toBe(3 * 16 * 4096); // clusters taken in order, each after the last
    expect(st.log.barriers).toBe(1);
    expect(st.log.bytesWritten).toBe(s.log.length - 512);
    expect(st.blocks.zeroWritten).toBe(2);
    // Every mapped block of the first MiB not still in the write buffer was read and verified.
    const map = (dev.inner as LbsDevice).map;
    const inRange = [...Array(256).keys()].filter((l) => map.pbn[l] !== 0xffffffff).length;
    expect(st.blocks.verified).toBeGreaterThan(0);
    expect(st.blocks.verified).toBeLessThanOrEqual(inRange);
    expect(st.blocks.failed).toBe(0);
    expect(st.clusters).toMatchObject({ total: 80, free: 76, used: 3, active: 1, pending: 0 }); // the 4th is full but still active
    expect(st.ramBytesPerLogicalBlock).toBeGreaterThan(16);
    expect(st.ramBytesPerLogicalBlock).toBeLessThan(22);
    await dev.close();
  });
});
