/**
 * The `chain` store kind: a parent disk plus cascaded differencing disks, each a real VHD or VHDX
 * file. The descriptor names the top layer; the chain is found through the parent locators and
 * checked against the layer list the descriptor records (operations.ts). The top is opened for
 * writing (under the store's lock), every parent read-only, so parents can be shared by chains
 * mounted at the same time.
 */
import type { StoreKind } from '../store-kind.js';
import { ChainDevice } from './chain-device.js';
import { acquireLock, childAdder, describeChain, openChainLayers } from './operations.js';
import { logger } from '../../log.js';

export const chainStore: StoreKind = {
  kind: 'chain',
  summary: 'a differencing chain of real VHD or VHDX files (parent + children), shown flattened',
  async open(loaded, options) {
    const readOnly = !!options.readOnly;
    const release = readOnly ? undefined : await acquireLock(loaded, 'open it for writing');
    try {
      const layers = await openChainLayers(loaded, readOnly);
      logger('chain').info({ store: loaded.name, layers: layers.map((l) => l.path), readOnly }, 'chain opened');
      return new ChainDevice(layers, readOnly, { addChild: readOnly ? undefined : childAdder(loaded), onClose: release });
    } catch (err) {
      await release?.();
      throw err;
    }
  },
  describe: (loaded) => describeChain(loaded),
};
