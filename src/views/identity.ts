/**
 * Stable identities for generated disk images. Every GUID a view writes is derived (UUID v5) from
 * the store's descriptor id and a purpose, so a view's bytes are the same on every mount and two
 * stores never share an identity.
 */
import { createHash } from 'node:crypto';
import { deriveGuid, type Guid } from '../formats/guid.js';
import type { LoadedDescriptor } from '../stores/descriptor.js';
import { VdiskError } from '../errors.js';
import { parseSize } from '../util/size.js';

/** The namespace of vdiskfs's derived GUIDs (a constant; never change it, or identities change). */
export const VDISKFS_GUID_NAMESPACE: Guid = '5f0c7a1e-9b6d-4e1a-8c3f-2d7b6e4a9c10';

/**
 * The disk's identity as a guest sees it (VHDX Virtual Disk ID, VHD Unique Id, VMDK
 * ddb.uuid.image): one value for all views of a store, since they are the same disk.
 */
export function diskIdentity(descriptor: LoadedDescriptor): Guid {
  return deriveGuid(VDISKFS_GUID_NAMESPACE, `${descriptor.descriptor.id}/disk`);
}

/** A GUID for one purpose of one view of a store, e.g. ("vhdx", "data-write"). */
export function viewGuid(descriptor: LoadedDescriptor, view: string, purpose: string): Guid {
  return deriveGuid(VDISKFS_GUID_NAMESPACE, `${descriptor.descriptor.id}/${view}/${purpose}`);
}

/** 32 bytes identifying a layout, for the view overlay's fingerprint. */
export function fingerprint(parts: Record<string, unknown>): Uint8Array {
  return createHash('sha256').update(JSON.stringify(parts)).digest();
}

/** The settings of one view kind from a descriptor's "viewOptions" (an empty object if none). */
export function viewOptions(descriptor: LoadedDescriptor, view: string): Record<string, unknown> {
  return descriptor.descriptor.viewOptions?.[view] ?? {};
}

/** Reads a size option ("32M" or a number of bytes) from view options. */
export function sizeOption(descriptor: LoadedDescriptor, view: string, key: string): number | undefined {
  const value = viewOptions(descriptor, view)[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new VdiskError('EINVAL', `descriptor ${descriptor.path}: viewOptions.${view}.${key} must be a size such as "32M"`);
  }
  return parseSize(value, `descriptor ${descriptor.path}: viewOptions.${view}.${key}`);
}

/** The path of a view's persistent overlay: beside the descriptor, NAME.<view>-overlay. */
export function overlayPath(descriptor: LoadedDescriptor, view: string): string {
  return `${descriptor.dir}/${descriptor.name}.${view}-overlay`;
}
