/**
 * VMDK text descriptors (VMware Virtual Disk Format 1.1, "Disk DescriptorFile"): pure encode and
 * parse, no I/O. vdiskfs writes a monolithicFlat descriptor whose one FLAT extent is another file
 * (the store's NAME.raw), which VirtualBox and QEMU open read-write.
 */
import { VdiskError } from '../errors.js';

export const VMDK_SECTOR_SIZE = 512;
export const VMDK_NO_PARENT_CID = 0xffffffff;
/**
 * QEMU reads and rewrites a text descriptor as one DESC_SIZE (20 sectors) block, NUL-padded, when
 * it updates the CID on its first write of a session; a descriptor file at least this long (padded
 * with NULs, where every parser stops) takes that write in place.
 */
export const VMDK_DESCRIPTOR_FILE_SIZE = 20 * 512;

/** The descriptor's bytes: UTF-8 text, NUL-padded to a multiple of VMDK_DESCRIPTOR_FILE_SIZE. */
export function vmdkDescriptorFile(text: string): Uint8Array {
  const t = Buffer.from(text, 'utf8');
  const out = new Uint8Array(Math.ceil(t.length / VMDK_DESCRIPTOR_FILE_SIZE) * VMDK_DESCRIPTOR_FILE_SIZE);
  out.set(t, 0);
  return out;
}

export interface VmdkExtent {
  access: 'RW' | 'RDONLY' | 'NOACCESS';
  /** Size in 512-byte sectors. */
  sectors: number;
  type: 'FLAT' | 'SPARSE' | 'ZERO' | 'VMFS' | 'VMFSSPARSE' | 'VMFSRDM' | 'VMFSRAW';
  /** File name relative to the descriptor (absent for ZERO). */
  file?: string;
  /** Sector offset in the file (FLAT extents). */
  offset?: number;
}

export interface VmdkDescriptor {
  version: number;
  cid: number;
  parentCid: number;
  createType: string;
  extents: VmdkExtent[];
  /** The disk database: ddb.* keys, unquoted values, in order. */
  ddb: Map<string, string>;
}

const quote = (s: string) => {
  if (/["\n\r]/.test(s)) throw new VdiskError('EINVAL', `VMDK descriptor value ${JSON.stringify(s)} contains a quote or newline`);
  return `"${s}"`;
};

export function encodeVmdkDescriptor(d: VmdkDescriptor): string {
  const lines = [
    '# Disk DescriptorFile',
    `version=${d.version}`,
    `CID=${d.cid.toString(16).padStart(8, '0')}`,
    `parentCID=${d.parentCid.toString(16).padStart(8, '0')}`,
    `createType=${quote(d.createType)}`,
    '',
    '# Extent description',
    ...d.extents.map((e) => {
      let line = `${e.access} ${e.sectors} ${e.type}`;
      if (e.file !== undefined) line += ` ${quote(e.file)}`;
      if (e.offset !== undefined) line += ` ${e.offset}`;
      return line;
    }),
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    ...[...d.ddb].map(([k, v]) => `${k} = ${quote(v)}`),
  ];
  return lines.join('\n') + '\n';
}

/** A monolithicFlat descriptor for a disk of `size` bytes held byte for byte in `file`. */
export function flatVmdkDescriptor(options: { size: number; file: string; cid: number; uuid: string; adapterType?: string }): VmdkDescriptor {
  if (!Number.isSafeInteger(options.size) || options.size <= 0 || options.size % VMDK_SECTOR_SIZE !== 0) {
    throw new VdiskError('EINVAL', `a VMDK disk size must be a positive multiple of 512 bytes; ${options.size} is not`);
  }
  // IDE geometry (16 heads × 63 sectors, at most 16383 cylinders); informative only, the extent size rules.
  const cylinders = Math.max(1, Math.min(Math.floor(options.size / VMDK_SECTOR_SIZE / (16 * 63)), 16383));
  return {
    version: 1,
    cid: options.cid >>> 0,
    parentCid: VMDK_NO_PARENT_CID,
    createType: 'monolithicFlat',
    extents: [{ access: 'RW', sectors: options.size / VMDK_SECTOR_SIZE, type: 'FLAT', file: options.file, offset: 0 }],
    ddb: new Map([
      ['ddb.virtualHWVersion', '4'],
      ['ddb.adapterType', options.adapterType ?? 'ide'],
      ['ddb.geometry.cylinders', String(cylinders)],
      ['ddb.geometry.heads', '16'],
      ['ddb.geometry.sectors', '63'],
      ['ddb.uuid.image', options.uuid],
      ['ddb.uuid.parent', '00000000-0000-0000-0000-000000000000'],
      ['ddb.uuid.modification', '00000000-0000-0000-0000-000000000000'],
      ['ddb.uuid.parentmodification', '00000000-0000-0000-0000-000000000000'],
    ]),
  };
}

/** Parses a text descriptor (tolerating comments, blank lines, CRLF and trailing NUL padding). */
export function parseVmdkDescriptor(text: string): VmdkDescriptor {
  const bad = (what: string) => new VdiskError('EINVAL', `VMDK descriptor: ${what}`);
  const d: VmdkDescriptor = { version: 0, cid: 0, parentCid: VMDK_NO_PARENT_CID, createType: '', extents: [], ddb: new Map() };
  const unquote = (s: string) => (s.startsWith('"') && s.endsWith('"') && s.length >= 2 ? s.slice(1, -1) : s);
  let sawHeader = false;
  for (const raw of text.replace(/\0+$/, '').split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) {
      if (line === '# Disk DescriptorFile') sawHeader = true;
      continue;
    }
    const extent = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/.exec(line);
    if (extent) {
      d.extents.push({
        access: extent[1] as VmdkExtent['access'],
        sectors: Number(extent[2]),
        type: extent[3] as VmdkExtent['type'],
        file: extent[4],
        offset: extent[5] === undefined ? undefined : Number(extent[5]),
      });
      continue;
    }
    const kv = /^([\w.]+)\s*=\s*(.*)$/.exec(line);
    if (!kv) throw bad(`cannot parse line ${JSON.stringify(line)}`);
    const key = kv[1]!;
    const value = unquote(kv[2]!.trim());
    if (key === 'version') d.version = Number(value);
    else if (key === 'CID') d.cid = parseInt(value, 16) >>> 0;
    else if (key === 'parentCID') d.parentCid = parseInt(value, 16) >>> 0;
    else if (key === 'createType') d.createType = value;
    else d.ddb.set(key, value);
  }
  if (!sawHeader && d.createType === '') throw bad('not a VMDK descriptor (no "# Disk DescriptorFile" line and no createType)');
  if (d.extents.length === 0) throw bad('no extents');
  return d;
}

/** The disk size a descriptor describes (sum of its extents). */
export const vmdkDescriptorSize = (d: VmdkDescriptor): number => d.extents.reduce((n, e) => n + e.sectors * VMDK_SECTOR_SIZE, 0);
