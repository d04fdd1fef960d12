/**
 * Opening a layer file of either format, and creating new empty dynamic or differencing files.
 * New files are written to a temporary name, made durable, then linked into place (never over an
 * existing file), so a crash during creation leaves no half-made layer under the real name.
 */
import { open, link, rm, stat } from 'node:fs/promises';
import { basename, dirname, relative, sep } from 'node:path';
import { VdiskError } from '../../errors.js';
import { MiB } from '../../formats/bytes.js';
import { NULL_GUID, randomGuid } from '../../formats/guid.js';
import {
  VHD_DEFAULT_BLOCK_SIZE, VHD_DYNAMIC_HEADER_SIZE, VHD_FEATURES_RESERVED, VHD_FOOTER_SIZE, VHD_HOST_OS_WINDOWS, VHD_VERSION,
  VhdDiskType, VhdPlatformCode, chsGeometry, encodeLocatorPath, encodeVhdBat, encodeVhdDynamicHeader, encodeVhdFooter,
  validateVhdSize, vhdBatSize, vhdTimestamp, type VhdParentLocatorEntry,
} from '../../formats/vhd.js';
import type { Layer, LayerFormat } from './layer.js';
import { VhdImage } from './vhd-image.js';
import { VhdxImage, vhdxFileBytes } from './vhdx-image.js';
import { detectFormat } from './parent-resolver.js';

export async function openLayer(path: string, writable: boolean): Promise<Layer> {
  const format = await detectFormat(path);
  return format === 'vhdx' ? VhdxImage.open(path, { writable }) : VhdImage.open(path, { writable });
}

export function formatOfPath(path: string): LayerFormat | undefined {
  const p = path.toLowerCase();
  if (p.endsWith('.vhdx') || p.endsWith('.avhdx')) return 'vhdx';
  if (p.endsWith('.vhd') || p.endsWith('.avhd')) return 'vhd';
  return undefined;
}

export interface CreateLayerOptions {
  format: LayerFormat;
  size: number;
  blockSize?: number;
  /** Makes a differencing child of this (open) parent layer. */
  parent?: Layer;
}

/** Pieces of a new file (offset + bytes) and its total size; everything else is a hole. */
interface FileImage {
  pieces: { offset: number; data: Uint8Array }[];
  size: number;
}

function vhdImage(path: string, o: CreateLayerOptions, parentMtime: Date | undefined): FileImage {
  validateVhdSize(o.size);
  const blockSize = o.blockSize ?? VHD_DEFAULT_BLOCK_SIZE;
  const entries = Math.ceil(o.size / blockSize);
  const tableOffset = VHD_FOOTER_SIZE + VHD_DYNAMIC_HEADER_SIZE;
  let next = tableOffset + vhdBatSize(entries);
  const pieces: FileImage['pieces'] = [];
  const locators: VhdParentLocatorEntry[] = [];
  if (o.parent) {
    let rel = relative(dirname(path), o.parent.path).split(sep).join('\\');
    if (!rel.startsWith('..')) rel = `.\\${rel}`;
    for (const [code, text] of [[VhdPlatformCode.W2RU, rel], [VhdPlatformCode.W2KU, o.parent.path]] as const) {
      const data = encodeLocatorPath(text);
      const space = Math.ceil(data.length / 512) * 512;
      // Data Space as a byte count, as Virtual PC and Hyper-V write it.
      locators.push({ platformCode: code, platformDataSpace: space, platformDataLength: data.length, platformDataOffset: next });
      pieces.push({ offset: next, data });
      next += space;
    }
  }
  const footer = encodeVhdFooter({
    features: VHD_FEATURES_RESERVED, fileFormatVersion: VHD_VERSION, dataOffset: VHD_FOOTER_SIZE,
    timestamp: vhdTimestamp(new Date()), creatorApplication: 'win ', creatorVersion: 0x000a0000,
    creatorHostOs: VHD_HOST_OS_WINDOWS, originalSize: o.size, currentSize: o.size, geometry: chsGeometry(o.size),
    diskType: o.parent ? VhdDiskType.DIFFERENCING : VhdDiskType.DYNAMIC, uniqueId: randomGuid(), savedState: false,
  });
  const header = encodeVhdDynamicHeader({
    tableOffset, headerVersion: VHD_VERSION, maxTableEntries: entries, blockSize,
    parentUniqueId: o.parent ? o.parent.identity : NULL_GUID,
    parentTimestamp: parentMtime ? vhdTimestamp(parentMtime) : 0,
    // libvhdi looks the parent up by this name in the child's directory.
    parentUnicodeName: o.parent ? basename(o.parent.path) : '',
    parentLocators: locators,
  });
  pieces.push({ offset: 0, data: footer }, { offset: VHD_FOOTER_SIZE, data: header }, { offset: tableOffset, data: encodeVhdBat(new Array<number>(entries).fill(0xffffffff)) });
  pieces.push({ offset: next, data: footer });
  return { pieces, size: next + VHD_FOOTER_SIZE };
}

function vhdxImage(path: string, o: CreateLayerOptions): FileImage {
  const { pieces, size } = vhdxFileBytes(path, {
    size: o.size,
    blockSize: o.blockSize,
    logicalSectorSize: 512,
    parent: o.parent ? { path: o.parent.path, dataWriteGuid: o.parent.identity } : undefined,
  });
  return { pieces, size };
}

/** Creates a new empty dynamic (no parent) or differencing layer file at `path`; refuses to overwrite. */
export async function createLayerFile(path: string, o: CreateLayerOptions): Promise<void> {
  if (o.parent && o.parent.format !== o.format) {
    throw new VdiskError('EINVAL', `a ${o.format.toUpperCase()} child cannot have the ${o.parent.format.toUpperCase()} parent ${o.parent.path}; use the parent's format`);
  }
  const parentMtime = o.parent ? (await stat(o.parent.path)).mtime : undefined;
  const img = o.format === 'vhd' ? vhdImage(path, o, parentMtime) : vhdxImage(path, o);
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'wx', 0o644);
  try {
    await fh.truncate(img.size);
    for (const p of img.pieces) await fh.write(p.data, 0, p.data.length, p.offset);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new VdiskError('EEXIST', `${path} already exists; choose another name or remove it first`);
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
  const dirFh = await open(dirname(path), 'r');
  await dirFh.sync().catch(() => {});
  await dirFh.close();
}

export { MiB };
