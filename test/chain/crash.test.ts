/**
 * Crash consistency of a child layer. Every mutation of the child file (writes, truncations,
 * fsyncs) is journaled while a random workload runs. The file is then rebuilt as a crash at many
 * random points would leave it: everything before the last fsync before the cut, plus a random
 * subset of the writes issued after it (unsynced writes may land in any order, or not at all).
 * Reopened (read-only, which must not modify it, then for writing, which replays and repairs),
 * every sector must hold either its content at the last completed flush or a value some later
 * write gave it: old or new, never garbage.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checked } from '../../src/devices/block-device.js';
import { ChainDevice } from '../../src/stores/chain/chain-device.js';
import { createLayerFile, openLayer } from '../../src/stores/chain/images.js';
import { openChainFrom } from '../../src/stores/chain/parent-resolver.js';
import { setFileJournalHook, type LayerFormat } from '../../src/stores/chain/layer.js';
import { Random } from '../support/random.js';
import { scratchDir } from '../support/tmp.js';

const dir = await scratchDir('vdiskfs-chain-crash-');
const MiB = 1 << 20;
const S = 512;

type Op = { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'truncate'; size: number } | { kind: 'sync' } | { kind: 'flushed'; image: Uint8Array };

for (const format of ['vhd', 'vhdx'] as LayerFormat[]) {
  describe(`crash consistency: ${format.toUpperCase()} child`, () => {
    it('a cut at any point gives, for every sector, the old or the new content', async () => {
      const rnd = new Random(format === 'vhd' ? 777 : 778);
      const size = 6 * MiB + 5 * S;
      const base = join(dir, `base.${format}`);
      await createLayerFile(base, { format, size, blockSize: format === 'vhdx' ? MiB : 256 * 1024 });
      const image = new Uint8Array(size);
      {
        const dev = checked(new ChainDevice(await openChainFrom(base, true, openLayer), false));
        for (let i = 0; i < 12; i++) {
          const len = 1 + rnd.int(500_000);
          const off = rnd.int(size - len);
          const data = rnd.bytes(len);
          await dev.write(data, off);
          image.set(data, off);
        }
        await dev.close();
      }
      const child = join(dir, `child.${format}`);
      const parent = await openLayer(base, false);
      await createLayerFile(child, { format, size, parent, blockSize: format === 'vhdx' ? MiB : 64 * 1024 });
      await parent.close();
      const pre = await readFile(child);

      const ops: Op[] = [];
      const writes: { start: number; a: number; after: Uint8Array }[] = [];
      setFileJournalHook((p) => (p === child ? (op) => ops.push(op) : undefined));
      try {
        const dev = checked(new ChainDevice(await openChainFrom(child, true, openLayer), false));
        ops.push({ kind: 'flushed', image: Uint8Array.from(image) });
        for (let i = 0; i < 60; i++) {
          const r = rnd.int(10);
          let len: number;
          let off: number;
          if (r === 0) {
            // a whole block (FULLY_PRESENT in a VHDX child)
            len = MiB;
            off = rnd.int(5) * MiB;
          } else {
            len = 1 + rnd.int(r < 5 ? 3000 : 200_000);
            off = rnd.int(size - len);
          }
          const data = rnd.int(6) === 0 ? new Uint8Array(len) : rnd.bytes(len);
          const start = ops.length;
          await dev.write(data, off);
          image.set(data, off);
          const a = Math.floor(off / S) * S;
          const b = Math.ceil((off + len) / S) * S;
          writes.push({ start, a, after: image.slice(a, b) });
          if (rnd.int(7) === 0) {
            await dev.flush();
            ops.push({ kind: 'flushed', image: Uint8Array.from(image) });
          }
        }
        await dev.close();
        ops.push({ kind: 'flushed', image: Uint8Array.from(image) });
      } finally {
        setFileJournalHook(undefined);
      }
      expect(ops.filter((o) => o.kind === 'sync').length).toBeGreaterThan(5);

      const cuts = new Set<number>([0, ops.length]);
      while (cuts.size < 36) cuts.add(rnd.int(ops.length + 1));
      let replayed = 0;
      for (const k of [...cuts].sort((x, y) => x - y)) {
        let lastSync = -1;
        for (let i = 0; i < k; i++) if (ops[i]!.kind === 'sync') lastSync = i;
        let marker = 0;
        for (let i = 0; i < k; i++) if (ops[i]!.kind === 'flushed') marker = i;
        const durable = (ops[marker] as { image: Uint8Array }).image;
        const later = writes.filter((w) => w.start > marker && w.start < k);

        let file = Buffer.from(pre);
        for (let i = 0; i < k; i++) {
          const op = ops[i]!;
          if (i > lastSync && rnd.int(2) === 0) continue; // an unsynced write that never landed
          if (op.kind === 'write') {
            if (op.offset + op.data.length > file.length) file = Buffer.concat([file, Buffer.alloc(op.offset + op.data.length - file.length)]);
            file.set(op.data, op.offset);
          } else if (op.kind === 'truncate') {
            file = op.size <= file.length ? file.subarray(0, op.size) : Buffer.concat([file, Buffer.alloc(op.size - file.length)]);
          }
        }
        const cut = join(dir, `cut-${k}.${format}`);
        await writeFile(cut, file);
        const hash = createHash('sha256').update(file).digest('hex');

        const check = async (writable: boolean): Promise<Uint8Array> => {
          const dev = checked(new ChainDevice(await openChainFrom(cut, writable, openLayer), !writable));
          const got = new Uint8Array(size);
          try {
            await dev.read(got, 0);
          } finally {
            await dev.close();
          }
          for (let s = 0; s < size; s += S) {
            const sector = got.subarray(s, s + S);
            if (Buffer.compare(sector, durable.subarray(s, s + S)) === 0) continue;
            const ok = later.some((w) => s >= w.a && s < w.a + w.after.length && Buffer.compare(sector, w.after.subarray(s - w.a, s - w.a + S)) === 0);
            if (!ok) expect.fail(`cut ${k}/${ops.length} (${writable ? 'writable' : 'read-only'}): sector at ${s} is neither old nor new`);
          }
          return got;
        };
        const ro = await check(false);
        expect(createHash('sha256').update(await readFile(cut)).digest('hex'), 'a read-only open must not modify the file').toBe(hash);
        const rw = await check(true);
        expect(Buffer.compare(rw, ro)).toBe(0);
        const again = await check(false);
        expect(Buffer.compare(again, ro)).toBe(0);
        if (format === 'vhdx' && file.readUInt32LE(0x10000 + 48) !== 0) replayed++;
      }
      // The final cut is the cleanly closed file: exactly the last image.
      if (format === 'vhdx') expect(replayed, 'cuts with a live log (LogGuid set)').toBeGreaterThan(3);
    }, 120_000);
  });
}
