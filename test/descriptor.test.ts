import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { parseDescriptor, loadDescriptor } from '../src/stores/descriptor.js';
import { createFlatStore } from '../src/stores/flat/flat-store.js';
import { openStore } from '../src/stores/registry.js';
import { parseSize, formatSize } from '../src/util/size.js';
import { parseViewList } from '../src/views/registry.js';
import { scratchDir } from './support/tmp.js';

const ID = '11111111-2222-3333-4444-555555555555';
const dir = await scratchDir();

describe('descriptor parsing', () => {
  const bad: [string, RegExp][] = [
    ['{', /not valid JSON/],
    ['[]', /must be a JSON object/],
    ['{"kind":"flat"}', /missing "vdiskfs" version/],
    ['{"vdiskfs":2,"kind":"flat","id":"' + ID + '","store":{}}', /version 2 is not supported/],
    ['{"vdiskfs":1,"id":"' + ID + '","store":{}}', /missing "kind"/],
    ['{"vdiskfs":1,"kind":"flat","id":"x","store":{}}', /"id" must be a UUID/],
    ['{"vdiskfs":1,"kind":"flat","id":"' + ID + '","views":"raw","store":{}}', /"views" must be a list/],
    ['{"vdiskfs":1,"kind":"flat","id":"' + ID + '"}', /missing "store" object/],
  ];
  for (const [text, pattern] of bad) {
    it(`rejects ${text.slice(0, 40)} with a message naming the file`, () => {
      expect(() => parseDescriptor(text, 'x.vdisk')).toThrow(pattern);
      expect(() => parseDescriptor(text, 'x.vdisk')).toThrow(/x\.vdisk/);
    });
  }
  it('accepts a good one and normalizes the id', () => {
    const d = parseDescriptor(JSON.stringify({ vdiskfs: 1, kind: 'flat', id: ID.toUpperCase(), views: ['raw'], store: { a: 1 } }), 'x');
    expect(d).toEqual({ vdiskfs: 1, kind: 'flat', id: ID, views: ['raw'], store: { a: 1 } });
  });
});

describe('flat store creation', () => {
  it('creates a sparse image and a descriptor with a relative path, and opens it', async () => {
    const { imagePath, descriptorPath } = await createFlatStore({ descriptorPath: join(dir, 'a.vdisk'), size: 1 << 30 });
    const st = await stat(imagePath);
    expect(st.size).toBe(1 << 30);
    expect(st.blocks * 512).toBeLessThan(1 << 20); // sparse
    const json = JSON.parse(await readFile(descriptorPath, 'utf8'));
    expect(json.store).toEqual({ path: 'a.img', size: 1 << 30 });
    const dev = await openStore(await loadDescriptor(descriptorPath));
    expect(dev.size).toBe(1 << 30);
    await dev.close!();
  });
  it('never overwrites an existing descriptor or image', async () => {
    await writeFile(join(dir, 'b.img'), 'precious');
    await expect(createFlatStore({ descriptorPath: join(dir, 'b.vdisk'), size: 4096 })).rejects.toThrow(/b\.img already exists/);
    expect(await readFile(join(dir, 'b.img'), 'utf8')).toBe('precious');
    await expect(createFlatStore({ descriptorPath: join(dir, 'a.vdisk'), size: 4096 })).rejects.toThrow(/a\.vdisk already exists/);
  });
  it('refuses sizes that are not whole sectors', async () => {
    await expect(createFlatStore({ descriptorPath: join(dir, 'c.vdisk'), size: 1000 })).rejects.toThrow(/multiple of 512/);
    await expect(createFlatStore({ descriptorPath: join(dir, 'c.vdisk'), size: 0 })).rejects.toThrow(/positive/);
  });
  it('refuses a descriptor name without .vdisk', async () => {
    await expect(createFlatStore({ descriptorPath: join(dir, 'd.json'), size: 4096 })).rejects.toThrow(/must end in \.vdisk/);
  });
});

describe('sizes and view lists', () => {
  it('parses sizes with units', () => {
    expect(parseSize('1G')).toBe(2 ** 30);
    expect(parseSize('512M')).toBe(512 * 2 ** 20);
    expect(parseSize('4k')).toBe(4096);
    expect(parseSize('2TiB')).toBe(2 * 2 ** 40);
    expect(parseSize('1.5K')).toBe(1536);
    expect(parseSize('123')).toBe(123);
    expect(() => parseSize('1.3')).toThrow(/whole number/);
    expect(() => parseSize('big')).toThrow(/is not a size/);
    expect(formatSize(3 * 2 ** 30)).toBe('3 GiB');
  });
  it('validates view names', () => {
    expect(parseViewList('raw, raw', '--views')).toEqual(['raw']);
    expect(() => parseViewList('raw,iso', '--views')).toThrow(/unknown view "iso"/);
    expect(() => parseViewList('', '--views')).toThrow(/empty/);
  });
});

describe('one writer at a time', () => {
  it('a second writable open of a flat store is refused with EBUSY; read-only and reopen after close work', async () => {
    const { descriptorPath } = await createFlatStore({ descriptorPath: join(dir, 'locked.vdisk'), size: 4096 });
    const loaded = await loadDescriptor(descriptorPath);
    const first = await openStore(loaded);
    await expect(openStore(loaded)).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringMatching(/open for writing by process \d+/) });
    const ro = await openStore(loaded, { readOnly: true });
    await ro.close!();
    await first.close!();
    const again = await openStore(loaded);
    await again.close!();
  });
  it('a lock left by a dead process is taken over', async () => {
    const { descriptorPath } = await createFlatStore({ descriptorPath: join(dir, 'stale.vdisk'), size: 4096 });
    await writeFile(join(dir, '.stale.vdisk.lock'), '999999999\n');
    const dev = await openStore(await loadDescriptor(descriptorPath));
    // The lock now names this process (its PID first, then its start time where /proc has one).
    expect((await readFile(join(dir, '.stale.vdisk.lock'), 'utf8')).split(/\s+/)[0]).toBe(`${process.pid}`);
    await dev.close!();
  });
});
