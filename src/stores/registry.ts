/** Every store kind vdiskfs knows, by the name used in descriptors (`"kind": "flat"`). */
import { VdiskError } from '../errors.js';
import type { BlockDevice } from '../devices/block-device.js';
import type { LoadedDescriptor } from './descriptor.js';
import type { OpenOptions, StoreKind } from './store-kind.js';
import { flatStore } from './flat/flat-store.js';
import { lbsStore } from './lbs/lbs-store.js';
import { chainStore } from './chain/chain-store.js';
import { nullStore } from './null/null-store.js';

const kinds = new Map<string, StoreKind>([
  [flatStore.kind, flatStore],
  [lbsStore.kind, lbsStore],
  [chainStore.kind, chainStore],
  [nullStore.kind, nullStore],
]);

export function storeKind(name: string, where = 'descriptor'): StoreKind {
  const kind = kinds.get(name);
  if (!kind) {
    throw new VdiskError('EINVAL', `${where}: unknown store kind "${name}" (known: ${[...kinds.keys()].join(', ')})`);
  }
  return kind;
}

export function storeKinds(): StoreKind[] {
  return [...kinds.values()];
}

export function openStore(loaded: LoadedDescriptor, options: OpenOptions = {}): Promise<BlockDevice> {
  return storeKind(loaded.descriptor.kind, `descriptor ${loaded.path}`).open(loaded, options);
}
