/**
 * Finding a layer's parent: locator paths (Windows or POSIX) mapped to this machine, the first
 * existing file opened read-only, its identity checked against what the child recorded; the whole
 * chain followed down to a non-differencing base, refusing loops.
 */
import { stat, open } from 'node:fs/promises';
import { basename, isAbsolute, join, resolve } from 'node:path';
import { VdiskError } from '../../errors.js';
import type { Layer } from './layer.js';
import { isVhdx } from '../../formats/vhdx.js';

/**
 * Local paths a locator value may mean. Windows paths ("\\?\C:\vms\base.vhdx", "C:\…", UNC,
 * "\\?\Volume{…}\…") cannot exist here as they are, so they map to the same file name in the
 * child's directory (where Hyper-V, libvhdi and vhdimount look too). A relative path is resolved
 * against the child's directory, then its base name is tried there as well.
 */
export function windowsPathCandidates(value: string, childDir: string, relativeKey: boolean): string[] {
  const v = value.trim().replace(/\0+$/, '');
  if (!v) return [];
  const out: string[] = [];
  if (v.startsWith('/')) {
    out.push(v);
  } else {
    const slashed = v.replace(/\\/g, '/');
    const winAbsolute = /^\/\/[?.]\//.test(slashed) || /^[A-Za-z]:\//.test(slashed) || slashed.startsWith('//');
    // "\tmp\x\base.vhdx" (no drive) is how we write a POSIX absolute path in a Windows key.
    if (!winAbsolute) out.push(isAbsolute(slashed) ? slashed : resolve(childDir, slashed));
  }
  const name = basename(v.replace(/\\/g, '/'));
  if (name) out.push(join(childDir, name));
  return [...new Set(out)];
}

/** Opens a layer file of either format (VHDX by its signature, else VHD). */
export type LayerOpener = (path: string, writable: boolean) => Promise<Layer>;

export async function detectFormat(path: string): Promise<'vhd' | 'vhdx'> {
  const fh = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new VdiskError('ENOENT', `disk file ${path} does not exist`);
    throw err;
  });
  try {
    const b = new Uint8Array(8);
    await fh.read(b, 0, 8, 0);
    return isVhdx(b) ? 'vhdx' : 'vhd';
  } finally {
    await fh.close();
  }
}

/**
 * Opens the parent of `child`: the first candidate path that exists, read-only, checked against
 * the identity the child recorded. Errors name every path tried.
 */
export async function openParent(child: Layer, openLayer: LayerOpener): Promise<Layer> {
  const link = child.parent!;
  const tried: string[] = [];
  for (const c of link.candidates) {
    const exists = await stat(c.path).then((s) => s.isFile(), () => false);
    tried.push(`${c.path} (from ${c.source})`);
    if (!exists) continue;
    const parent = await openLayer(c.path, false);
    const id = parent.identity.toLowerCase();
    if (!link.ids.some((x) => x.toLowerCase() === id)) {
      await parent.close();
      throw new VdiskError(
        'EINVAL',
        `the parent of ${child.path} is ${c.path}, but its identity ${id} is not the one the child recorded (${link.ids.join(' or ')}): ` +
          'the parent was replaced or modified after the child was made',
      );
    }
    if (parent.size !== child.size) {
      await parent.close();
      throw new VdiskError('EINVAL', `${child.path} is ${child.size} bytes but its parent ${c.path} is ${parent.size}`);
    }
    if (parent.format !== child.format) {
      await parent.close();
      throw new VdiskError('EINVAL', `${child.path} is a ${child.format.toUpperCase()} but its parent ${c.path} is a ${parent.format.toUpperCase()}`);
    }
    return parent;
  }
  throw new VdiskError('ENOENT', `the parent of ${child.path} is missing or was moved; tried: ${tried.join('; ') || '(the child names no path)'}`);
}

/**
 * Opens a whole chain from its top: the top with `writable`, every parent read-only (parents may
 * be shared by other chains). Returns layers top first. A file reached twice is a loop.
 */
export async function openChainFrom(topPath: string, writable: boolean, openLayer: LayerOpener): Promise<Layer[]> {
  const layers: Layer[] = [];
  const seen = new Set<string>();
  const key = async (p: string) => {
    const s = await stat(p);
    return `${s.dev}:${s.ino}`;
  };
  try {
    // Every layer is opened read-only first, so that nothing is written (a VHDX log replayed, a
    // VHD footer repaired) unless the whole chain is valid; then the top is reopened for writing.
    let layer = await openLayer(topPath, false);
    layers.push(layer);
    seen.add(await key(topPath));
    while (layer.parent) {
      if (layers.length > 256) throw new VdiskError('ELOOP', `the chain from ${topPath} is deeper than 256 layers`);
      const parent = await openParent(layer, openLayer);
      const k = await key(parent.path);
      if (seen.has(k)) {
        await parent.close();
        throw new VdiskError('ELOOP', `the chain from ${topPath} loops: ${parent.path} is its own ancestor`);
      }
      seen.add(k);
      layers.push(parent);
      layer = parent;
    }
    if (writable) {
      const ro = layers.shift()!;
      await ro.close();
      const top = await openLayer(topPath, true);
      if (top.identity !== ro.identity) {
        await top.close();
        throw new VdiskError('EBUSY', `${topPath} changed while the chain was being opened`);
      }
      layers.unshift(top);
    }
    return layers;
  } catch (err) {
    for (const l of layers) await l.close().catch(() => {});
    throw err;
  }
}
