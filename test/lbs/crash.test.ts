/**
 * Crash consistency, in-process: a random workload with barriers runs over recording in-memory
 * files; then, for many cut points in the global stream of writes and syncs (and, in the second
 * test, with writes not yet covered by a sync lost or torn at random), the files are rebuilt as a
 * crash at that point would leave them and the store is reopened. Every write acknowledged by a
 * completed barrier must read back exactly; every other block must read as one of the contents it
 * had since that barrier; nothing may fail to open or read as garbage.
 */
import { describe, expect, it } from 'vitest';
import { LbsDevice } from '../../src/stores/lbs/lbs-core.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { checked } from '../../src/devices/block-device.js';
import { Random } from '../support/random.js';
import { Recorder, filesAtCut, formatMemStore, type MemStore } from './mem-files.js';

interface Workload {
  store: MemStore;
  base: { data: Buffer; log: Buffer };
  recorder: Recorder;
  /** Disk content after each operation, and the stream position when each operation started. */
  states: Buffer[];
  starts: number[];
  /** For flushes: the stream position when the flush resolved (undefined for other operations). */
  acks: (number | undefined)[];
  size: number;
  blockSize: number;
  cleaned: number;
}

async function runWorkload(seed: number, autoBarrierBytes = 1 << 20, flushEvery = 25): Promise<Workload> {
  const blockSize = 512;
  const size = 80 * blockSize + 512;
  const recorder = new Recorder();
  recorder.enabled = false;
  const store = await formatMemStore({ size, blockSize, clusterSize: 4096, overprovision: 20 }, recorder);
  const base = { data: store.data.snapshot(), log: store.log.snapshot() };
  recorder.enabled = true;
  const dev = checked(await LbsDevice.open(store.data, store.log, { expectedId: store.id, autoBarrierBytes }));
  const ref = new MemoryDevice(size);
  const rnd = new Random(seed);
  const w: Workload = { store, base, recorder, states: [], starts: [], acks: [], size, blockSize, cleaned: 0 };
  const snapshot = async () => {
    const b = Buffer.alloc(size);
    await ref.read(b, 0);
    return b;
  };
  for (let i = 0; i < 500; i++) {
    w.starts.push(recorder.position);
    const k = rnd.int(flushEvery);
    if (k === 0) {
      await dev.flush();
      w.acks.push(recorder.position);
    } else {
      // Half the writes hit a small hot region, so clusters empty out between barriers (the case
      // where reusing a cluster before the barrier would destroy acknowledged data).
      const hot = rnd.int(2) === 0;
      const len = hot ? blockSize * (1 + rnd.int(4)) : 1 + rnd.int(3 * blockSize);
      const off = hot ? blockSize * rnd.int(12) : rnd.int(size - len + 1);
      if (k === 1) {
        await dev.discard(off, len);
        await ref.discard(off, len);
      } else {
        const data = k === 2 ? new Uint8Array(len) : rnd.bytes(len);
        await dev.write(data, off);
        await ref.write(data, off);
      }
      w.acks.push(undefined);
    }
    w.states.push(await snapshot());
  }
  w.cleaned = (dev.stats!() as any).cleaner.clustersCleaned;
  // Not closed: a close would be one more barrier; the crash comes first.
  return w;
}

async function checkCut(w: Workload, cut: number, rnd?: Random): Promise<void> {
  const files = filesAtCut(w.base, w.recorder.ops, cut, rnd);
  let dev: LbsDevice;
  try {
    dev = await LbsDevice.open(files.data, files.log, { expectedId: w.store.id });
  } catch (err) {
    throw new Error(`cut at ${cut}: reopen failed: ${(err as Error).message}`);
  }
  // The last barrier acknowledged before the cut, and every state since.
  let acked = -1;
  for (let i = 0; i < w.acks.length; i++) if (w.acks[i] !== undefined && w.acks[i]! < cut) acked = i;
  const candidates: Buffer[] = [acked >= 0 ? w.states[acked]! : Buffer.alloc(w.size)];
  for (let i = acked + 1; i < w.states.length && w.starts[i]! < cut; i++) candidates.push(w.states[i]!);
  const got = Buffer.alloc(w.size);
  try {
    await dev.read(got, 0);
  } catch (err) {
    throw new Error(`cut at ${cut}: reading the disk failed: ${(err as Error).message}`);
  }
  const bs = w.blockSize;
  for (let off = 0; off < w.size; off += bs) {
    const end = Math.min(w.size, off + bs);
    const block = got.subarray(off, end);
    if (!candidates[0]!.subarray(off, end).equals(block) && !candidates.some((c) => c.subarray(off, end).equals(block))) {
      const mustBe = acked >= 0 && candidates.length === 1 ? ' (it was acknowledged by a barrier and never written since)' : '';
      throw new Error(`cut at ${cut}: block at ${off} reads neither its acknowledged content nor any later one${mustBe}`);
    }
    if (candidates.length === 1) expect(block.equals(candidates[0]!.subarray(off, end))).toBe(true);
  }
  await dev.close();
}

describe('lbs crash consistency', () => {
  it('a cut at any byte of the write stream keeps every acknowledged write and nothing garbled', async () => {
    const w = await runWorkload(4242);
    expect(w.cleaned).toBeGreaterThan(0); // the cleaner ran, so relocations were cut too
    const total = w.recorder.position;
    const rnd = new Random(1);
    const cuts = new Set<number>([0, 1, total, total - 1]);
    // Around every sync (the boundaries that matter most), and at random bytes.
    for (const op of w.recorder.ops) if (op.type === 'sync') for (const d of [-1, 0, 1]) cuts.add(Math.max(0, Math.min(total, op.start + d)));
    for (let i = 0; i < 300; i++) cuts.add(rnd.int(total + 1));
    for (const cut of cuts) await checkCut(w, cut);
    expect(cuts.size).toBeGreaterThan(300);
  });

  it('the same with frequent automatic barriers', async () => {
    const w = await runWorkload(4243, 2048, 12);
    const total = w.recorder.position;
    const rnd = new Random(3);
    for (let i = 0; i < 200; i++) await checkCut(w, rnd.int(total + 1));
  });

  it('also when writes no sync had covered are lost or torn at random', async () => {
    const w = await runWorkload(99);
    const total = w.recorder.position;
    const rnd = new Random(2);
    for (let i = 0; i < 400; i++) await checkCut(w, rnd.int(total + 1), rnd);
  });

  it('logs the rollback of a torn tail and truncates it, so later barriers are found', async () => {
    const w = await runWorkload(7);
    const logOps = w.recorder.ops.filter((o) => o.type === 'write' && o.file === 'log');
    const lastLogWrite = logOps[logOps.length - 1]!;
    // Cut in the middle of the last log append: its group is rolled back.
    const cut = lastLogWrite.start + 10;
    const files = filesAtCut(w.base, w.recorder.ops, cut);
    const dev = await LbsDevice.open(files.data, files.log, { expectedId: w.store.id });
    expect(dev.replay.rolledBackBytes).toBe(10);
    const endAfterRollback = files.log.length;
    expect(endAfterRollback).toBe(dev.replay.end); // the torn tail was cut off
    await dev.write(new Uint8Array(512).fill(9), 0);
    await dev.close();
    const again = await LbsDevice.open(files.data, files.log, { expectedId: w.store.id });
    const b = new Uint8Array(512);
    await again.read(b, 0);
    expect(b.every((x) => x === 9)).toBe(true);
    expect(again.replay.rolledBackBytes).toBe(0);
  });
});
