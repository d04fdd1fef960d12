/**
 * A damaged metadata log (bytes flipped anywhere, or cut anywhere) must never crash the open or
 * produce wrong data: a writable open either rolls back a damaged tail or refuses (clear
 * VdiskError) a log damaged before later barriers, which still opens read-only as of before the
 * damage; every read then returns the data of that state or an EIO (a block whose cluster was
 * reused later fails its checksum: it is never misread).
 */
import { describe, expect, it } from 'vitest';
import { VdiskError } from '../../src/errors.js';
import { LbsDevice } from '../../src/stores/lbs/lbs-core.js';
import { Random } from '../support/random.js';
import { MemFile, formatMemStore } from './mem-files.js';

describe('lbs log fuzzing', () => {
  it('flipped or cut logs open cleanly or fail clearly, and never misread', async () => {
    const bs = 512;
    const size = 64 * bs;
    const s = await formatMemStore({ size, blockSize: bs, clusterSize: 4 * bs });
    const dev = await LbsDevice.open(s.data, s.log, { expectedId: s.id });
    const rnd = new Random(31);
    // Every block holds its LBN and a version, so any block read can be checked on its own.
    const versions = new Map<number, Set<number>>();
    for (let i = 1; i <= 600; i++) {
      const lbn = rnd.int(64);
      const b = new Uint8Array(bs).fill(i & 0xff);
      new DataView(b.buffer).setUint32(0, lbn, true);
      new DataView(b.buffer).setUint32(4, i, true);
      await dev.write(b, lbn * bs);
      if (!versions.has(lbn)) versions.set(lbn, new Set());
      versions.get(lbn)!.add(i);
      if (rnd.int(8) === 0) await dev.flush();
    }
    await dev.close();
    const data = s.data.snapshot();
    const log = s.log.snapshot();
    let opened = 0;
    let refused = 0;
    let eio = 0;
    for (let round = 0; round < 300; round++) {
      const damaged = Buffer.from(log);
      let length = damaged.length;
      if (round % 3 === 0) length = 512 + rnd.int(damaged.length - 512);
      else for (let k = 1 + rnd.int(3); k > 0; k--) damaged[512 + rnd.int(damaged.length - 512)] ^= 1 << rnd.int(8);
      const files = { data: new MemFile('data', undefined, data), log: new MemFile('log', undefined, damaged.subarray(0, length)) };
      let d: LbsDevice;
      try {
        d = await LbsDevice.open(files.data, files.log, { expectedId: s.id });
      } catch (err) {
        expect(err).toBeInstanceOf(VdiskError);
        refused++;
        // Damage before later barriers: refused for writing, but readable as of before the damage.
        if (!/is damaged at offset/.test((err as Error).message)) continue;
        d = await LbsDevice.open(files.data, files.log, { expectedId: s.id, readOnly: true });
      }
      opened++;
      for (let lbn = 0; lbn < 64; lbn++) {
        const b = new Uint8Array(bs);
        try {
          await d.read(b, lbn * bs);
        } catch (err) {
          expect(err).toMatchObject({ code: 'EIO' });
          eio++;
          continue;
        }
        const v = new DataView(b.buffer);
        if (b.every((x) => x === 0)) continue; // not written in the state rolled back to
        expect(v.getUint32(0, true)).toBe(lbn);
        expect(versions.get(lbn)?.has(v.getUint32(4, true))).toBe(true);
      }
      await d.close();
    }
    expect(opened).toBeGreaterThan(250);
    expect(refused).toBeGreaterThan(50); // mid-log damage is refused for writing
    expect(eio).toBeGreaterThan(0); // rollbacks past reused clusters were exercised
  });
});
