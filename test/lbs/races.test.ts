/**
 * Races a single-threaded store still has: a read whose data-file read is in flight while the
 * block is rewritten, its old cluster freed, reused and overwritten. The read must not report a
 * checksum failure for a block that is fine (nor return the other block's bytes).
 */
import { describe, expect, it } from 'vitest';
import { LbsDevice } from '../../src/stores/lbs/lbs-core.js';
import { MemFile, formatMemStore } from './mem-files.js';

class GatedFile extends MemFile {
  gate: Promise<void> | undefined;
  override async read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const g = this.gate;
    if (g) await g;
    return super.read(buf, offset, length, position);
  }
}

describe('lbs read races', () => {
  it('a read in flight while its cluster is cleaned, reused and overwritten rereads the block', async () => {
    const bs = 512;
    const s = await formatMemStore({ size: 16 * bs, blockSize: bs, clusterSize: 4 * bs });
    const data = new GatedFile('data', undefined, s.data.snapshot());
    const dev = await LbsDevice.open(data, s.log, { expectedId: s.id });
    const fill = (v: number) => new Uint8Array(4 * bs).fill(v);
    await dev.write(fill(1), 0); // blocks 0–3 fill one cluster
    await dev.write(new Uint8Array(bs).fill(0xee), 8 * bs); // move the active cluster on
    await dev.flush();
    const first = dev.map.clusterOf(dev.map.pbn[0]!);
    let release!: () => void;
    data.gate = new Promise<void>((r) => (release = r));
    const out = new Uint8Array(bs);
    const pending = dev.read(out, 0);
    await new Promise((r) => setTimeout(r, 5)); // the read is now waiting for its data
    data.gate = undefined;
    // Rewrite blocks 0–3 until the first cluster has been freed, reused for them, and written out.
    let v = 2;
    for (; v < 100; v++) {
      await dev.write(fill(v), 0);
      await dev.write(new Uint8Array(bs).fill(v), 9 * bs);
      await dev.flush();
      if (dev.map.clusterOf(dev.map.pbn[0]!) === first) break;
    }
    expect(dev.map.clusterOf(dev.map.pbn[0]!)).toBe(first);
    release();
    await pending;
    // The read started before the rewrites; it may see the old or (after a reread) the newest data.
    expect(out.every((b) => b === 1) || out.every((b) => b === v)).toBe(true);
    expect((dev.stats() as any).blocks.failed).toBe(0);
    expect((dev.stats() as any).blocks.readRetries).toBe(1);
    await dev.close();
  });
});
