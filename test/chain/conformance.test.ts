import { describeDeviceConformance } from '../support/conformance.js';
import { scratchDir } from '../support/tmp.js';
import { makeChainFiles, openChainDevice } from './helpers.js';
import type { ChainDevice } from '../../src/stores/chain/chain-device.js';
import type { LayerFormat } from '../../src/stores/chain/layer.js';

const dir = await scratchDir('vdiskfs-chain-');

for (const format of ['vhd', 'vhdx'] as LayerFormat[]) {
  for (const depth of [1, 2, 5]) {
    // Odd sizes: not a multiple of the block size (VHD 64 KiB blocks, VHDX 1 MiB), but of the sector.
    const sizes = depth === 2 ? [3 * (1 << 20) + 7 * 512, 1 << 20] : [2 * (1 << 20) + 3 * 512];
    describeDeviceConformance(`chain ${format} × ${depth}`, {
      sizes,
      operations: 250,
      create: async (size) => {
        const paths = await makeChainFiles(dir, { format, size, depth });
        return openChainDevice(paths[0]!);
      },
      reopen: async (dev) => {
        const top = (dev as ChainDevice).layers[0]!.path;
        await dev.close!();
        return openChainDevice(top);
      },
    });
  }
}
