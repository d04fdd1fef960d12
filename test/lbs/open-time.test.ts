/**
 * Opening a store whose log holds a million map entries (random single-block writes, a barrier per
 * thousand): the replay must apply every one, and the time it takes is printed (reported in
 * docs/lbs-format.md). The bound asserted is loose on purpose; the number is the point.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { open, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { scratchDir } from '../support/tmp.js';
import { Random } from '../support/random.js';
import { LogWriter } from '../../src/stores/lbs/log.js';
import { LbsDevice } from '../../src/stores/lbs/lbs-core.js';
import { NodeFile } from '../../src/stores/lbs/files.js';
import { formatLbsFiles, lbsGeometry } from '../../src/stores/lbs/create.js';
import { LOG_HEADER_SIZE, NO_BLOCK } from '../../src/stores/lbs/format.js';
import { MemFile } from './mem-files.js';

const dir = await scratchDir('vdiskfs-lbs-open-');

describe('lbs open time', () => {
  it('replays a log of 1,000,000 entries', { timeout: 120_000 }, async () => {
    const entries = 1_000_000;
    const g = lbsGeometry({ size: 4 * 2 ** 30 }); // 1 Mi logical blocks of 4 KiB
    const id = randomUUID();
    const data = new MemFile('data');
    const log = new MemFile('log');
    // Only the header goes to memory (the 5 GiB data file is made sparse on disk below, and its
    // contents do not matter to a replay), so the in-memory file ignores the format's truncate.
    data.truncate = async () => {};
    await formatLbsFiles(data, log, g, id);
    const writer = new LogWriter(log, LOG_HEADER_SIZE, 0);
    const rnd = new Random(1);
    const logical = Math.ceil(g.logicalSize / g.blockSize);
    const physical = g.clusterCount * (g.clusterSize / g.blockSize);
    const expected = new Map<number, number>();
    for (let i = 0; i < entries; i++) {
      const lbn = rnd.int(logical);
      // Each block lands on the next physical block (wrapping), so entries never merge into runs.
      const pbn = (i * 7) % physical;
      writer.add(lbn, pbn, i, i + 1, 0);
      if (i % 1000 === 999) await writer.commit(i + 1);
      if (i % 1000 === 0) expected.set(lbn, pbn);
      else expected.delete(lbn);
    }
    const dataPath = join(dir, 'big.lbsdata');
    const logPath = join(dir, 'big.lbslog');
    const fh = await open(dataPath, 'w');
    await fh.write(data.snapshot(), 0, data.length, 0);
    await fh.truncate(g.dataOffset + g.clusterCount * g.clusterSize);
    await fh.close();
    await writeFile(logPath, log.snapshot());

    const started = performance.now();
    const dev = await LbsDevice.open(await NodeFile.open(dataPath, { what: 'data' }), await NodeFile.open(logPath, { what: 'log' }), { readOnly: true });
    const ms = performance.now() - started;
    console.log(`open of a ${(log.length / 2 ** 20).toFixed(1)} MiB log with ${entries} entries: ${ms.toFixed(0)} ms, RAM ${dev.map.bytesPerLogicalBlock().toFixed(2)} B per logical block`);
    expect(dev.replay.entries).toBe(entries);
    expect(dev.replay.sequence).toBe(entries / 1000);
    expect(dev.replay.rolledBackBytes).toBe(0);
    for (const [lbn, pbn] of expected) expect(dev.map.pbn[lbn]).toBe(pbn);
    expect(dev.map.pbn.filter((p) => p !== NO_BLOCK).length).toBe(dev.map.mappedBlocks);
    expect(ms).toBeLessThan(60_000);
    await dev.close();
  });
});
