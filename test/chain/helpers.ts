/** Builds real VHD/VHDX chains in a scratch directory with our own writers. */
import { join } from 'node:path';
import { ChainDevice } from '../../src/stores/chain/chain-device.js';
import { createLayerFile, openLayer } from '../../src/stores/chain/images.js';
import { openChainFrom } from '../../src/stores/chain/parent-resolver.js';
import type { LayerFormat } from '../../src/stores/chain/layer.js';

let counter = 0;

export interface ChainSpec {
  format: LayerFormat;
  size: number;
  depth: number;
  blockSize?: number;
}

/** Creates base + (depth − 1) empty children; returns the layer paths, top first. */
export async function makeChainFiles(dir: string, spec: ChainSpec): Promise<string[]> {
  const id = counter++;
  const paths: string[] = [];
  const blockSize = spec.blockSize ?? (spec.format === 'vhdx' ? 1 << 20 : 64 * 1024);
  let prev: string | undefined;
  for (let i = 0; i < spec.depth; i++) {
    const path = join(dir, `c${id}-${i}.${spec.format}`);
    const parent = prev ? await openLayer(prev, false) : undefined;
    try {
      await createLayerFile(path, { format: spec.format, size: spec.size, blockSize, parent });
    } finally {
      await parent?.close();
    }
    paths.unshift(path);
    prev = path;
  }
  return paths;
}

export async function openChainDevice(top: string, readOnly = false): Promise<ChainDevice> {
  const layers = await openChainFrom(top, !readOnly, openLayer);
  return new ChainDevice(layers, readOnly);
}
