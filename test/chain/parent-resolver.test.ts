import { describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { windowsPathCandidates, openChainFrom } from '../../src/stores/chain/parent-resolver.js';
import { createLayerFile, openLayer } from '../../src/stores/chain/images.js';
import { scratchDir } from '../support/tmp.js';

const dir = await scratchDir('vdiskfs-chain-resolve-');

describe('parent locator paths mapped to this machine', () => {
  it('relative Windows paths resolve against the child, then by name beside it', () => {
    expect(windowsPathCandidates('.\\base.vhdx', '/d/c', true)).toEqual(['/d/c/base.vhdx']);
    expect(windowsPathCandidates('..\\img\\base.vhdx', '/d/c', true)).toEqual(['/d/img/base.vhdx', '/d/c/base.vhdx']);
  });
  it('absolute Windows, UNC and volume paths become the same name in the child directory', () => {
    expect(windowsPathCandidates('\\\\?\\C:\\vms\\base.vhdx', '/d/c', false)).toEqual(['/d/c/base.vhdx']);
    expect(windowsPathCandidates('C:\\vms\\base.vhd', '/d/c', false)).toEqual(['/d/c/base.vhd']);
    expect(windowsPathCandidates('\\\\server\\share\\base.vhdx', '/d/c', false)).toEqual(['/d/c/base.vhdx']);
    expect(windowsPathCandidates('\\\\?\\Volume{6f2b0a77-1f4c-11e5-80b1-806e6f6e6963}\\vms\\b.vhdx', '/d/c', false)).toEqual(['/d/c/b.vhdx']);
  });
  it('POSIX paths, and our drive-less "\\dir\\file" form, are tried as they are first', () => {
    expect(windowsPathCandidates('/srv/img/base.vhd', '/d/c', false)).toEqual(['/srv/img/base.vhd', '/d/c/base.vhd']);
    expect(windowsPathCandidates('\\srv\\img\\base.vhdx', '/d/c', false)).toEqual(['/srv/img/base.vhdx', '/d/c/base.vhdx']);
    expect(windowsPathCandidates('', '/d/c', true)).toEqual([]);
  });
});

describe('VHDX parent_linkage in any case', () => {
  it('an upper-case linkage (as in the spec\'s own example) still matches the parent', async () => {
    const base = join(dir, 'base.vhdx');
    const child = join(dir, 'child.vhdx');
    await createLayerFile(base, { format: 'vhdx', size: 1 << 20 });
    const p = await openLayer(base, false);
    const id = p.identity;
    await createLayerFile(child, { format: 'vhdx', size: 1 << 20, parent: p });
    await p.close();
    const bytes = await readFile(child);
    const lower = Buffer.from(`{${id}}`, 'utf16le');
    const at = bytes.indexOf(lower);
    expect(at).toBeGreaterThan(0);
    Buffer.from(`{${id.toUpperCase()}}`, 'utf16le').copy(bytes, at);
    await writeFile(child, bytes);
    const layers = await openChainFrom(child, false, openLayer);
    expect(layers.map((l) => l.path)).toEqual([child, base]);
    for (const l of layers) await l.close();
  });
});
