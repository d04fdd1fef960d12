/** Every view kind, by file extension. The order here is the order files are listed in a mount. */
import { VdiskError } from '../errors.js';
import type { ViewKind } from './view.js';
import { rawView } from './raw-view.js';
import { vhdxView } from './vhdx-view.js';
import { vhdView } from './vhd-view.js';
import { vmdkView } from './vmdk-view.js';

const kinds = new Map<string, ViewKind>([rawView, vhdxView, vhdView, vmdkView].map((k) => [k.name, k]));

/** The views a store shows when neither its descriptor nor the mount says otherwise. */
export const DEFAULT_VIEWS: readonly string[] = ['raw', 'vhdx'];

export function viewKind(name: string): ViewKind | undefined {
  return kinds.get(name);
}

export function viewKinds(): ViewKind[] {
  return [...kinds.values()];
}

/** Validates a list of view names from the command line or a descriptor. */
export function parseViewList(list: string | readonly string[], where: string): string[] {
  const names = (typeof list === 'string' ? list.split(',') : [...list]).map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new VdiskError('EINVAL', `${where}: the list of views is empty`);
  for (const n of names) {
    if (!kinds.has(n)) {
      throw new VdiskError('EINVAL', `${where}: unknown view "${n}" (known: ${[...kinds.keys()].join(', ')})`);
    }
  }
  return [...new Set(names)];
}
