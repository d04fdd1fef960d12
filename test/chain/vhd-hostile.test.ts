/**
 * VHD files with one field changed (checksums fixed), as the fuzzing of issue 17 found them: each
 * is refused with a message naming the file, or works, and is never damaged by a write.
 */
import { describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  decodeVhdBat, decodeVhdDynamicHeader, decodeVhdFooter, encodeVhdBat, encodeVhdDynamicHeader, encodeVhdFooter,
  VHD_DYNAMIC_HEADER_SIZE, VHD_FOOTER_SIZE, VhdPlatformCode,
} from '../../src/formats/vhd.js';
import { createLayerFile, openLayer } from '../../src/stores/chain/images.js';
import { VhdImage } from '../../src/stores/chain/vhd-image.js';
import { scratchDir } from '../support/tmp.js';

const MiB = 2 ** 20;
const dir = await scratchDir('vdiskfs-vhd-hostile-');
let n = 0;

/** Rewrites a VHD file's footer (both copies) and dynamic header through `edit`. */
async function edit(path: string, change: { footer?: (f: ReturnType<typeof decodeVhdFooter>) => void; header?: (h: ReturnType<typeof decodeVhdDynamicHeader>) => void; bat?: (b: Uint32Array) => void }): Promise<void> {
  const bytes = Buffer.from(await readFile(path));
  const footer = decodeVhdFooter(bytes.subarray(bytes.length - VHD_FOOTER_SIZE));
  change.footer?.(footer);
  const f = Buffer.from(encodeVhdFooter(footer));
  f.copy(bytes, 0);
  f.copy(bytes, bytes.length - VHD_FOOTER_SIZE);
  const at = footer.dataOffset!;
  const header = decodeVhdDynamicHeader(bytes.subarray(at, at + VHD_DYNAMIC_HEADER_SIZE));
  change.header?.(header);
  Buffer.from(encodeVhdDynamicHeader(header)).copy(bytes, at);
  if (change.bat) {
    const bat = decodeVhdBat(bytes.subarray(header.tableOffset, header.tableOffset + header.maxTableEntries * 4), header.maxTableEntries);
    change.bat(bat);
    Buffer.from(encodeVhdBat(bat)).copy(bytes, header.tableOffset);
  }
  await writeFile(path, bytes);
}

async function dynamicVhd(): Promise<string> {
  const path = join(dir, `d-${n++}.vhd`);
  await createLayerFile(path, { format: 'vhd', size: 4 * MiB });
  return path;
}

describe('hostile VHD fields', () => {
  it('a creator application with a non-ASCII byte is kept, and the disk stays writable', async () => {
    const path = await dynamicVhd();
    await edit(path, { footer: (f) => { f.creatorApplication = 'qe\u00e9 '; } });
    const img = await VhdImage.open(path, { writable: true });
    const data = Buffer.alloc(65536, 0x5a);
    await img.write(data, 4096);
    await img.flush();
    await img.close();
    const bytes = await readFile(path);
    expect(decodeVhdFooter(bytes.subarray(bytes.length - VHD_FOOTER_SIZE)).creatorApplication).toBe('qe\u00e9 ');
    const again = await VhdImage.open(path, { writable: false });
    const back = Buffer.alloc(data.length);
    await again.read(back, 4096, async (d) => { d.fill(0); });
    await again.close();
    expect(back.equals(data)).toBe(true);
  });

  it('a parent locator far past the end is refused (it would make new blocks wrap onto the headers)', async () => {
    const base = await dynamicVhd();
    const child = join(dir, `child-${n++}.vhd`);
    const parent = await openLayer(base, false);
    await createLayerFile(child, { format: 'vhd', size: 4 * MiB, parent });
    await parent.close();
    await edit(child, { header: (h) => { h.parentLocators[7] = { platformCode: VhdPlatformCode.W2KU, platformDataSpace: 512, platformDataLength: 0, platformDataOffset: 2 ** 42 }; } });
    const before = await readFile(child);
    await expect(VhdImage.open(child, { writable: true })).rejects.toMatchObject({ message: expect.stringMatching(/child-.*\.vhd: parent locator 7 .*outside the file/) });
    expect((await readFile(child)).equals(before)).toBe(true);
  });

  it('a block over the file\'s own structures is refused at open', async () => {
    const path = await dynamicVhd();
    const img = await VhdImage.open(path, { writable: true });
    await img.write(Buffer.alloc(4096, 1), 0); // block 0 allocated: the file is now long enough
    await img.close();
    await edit(path, { bat: (b) => { b[1] = 0; } });
    await expect(VhdImage.open(path, { writable: false })).rejects.toMatchObject({ message: expect.stringMatching(/d-.*\.vhd: block 1 .*overlaps the footer copy/) });
  });
});
