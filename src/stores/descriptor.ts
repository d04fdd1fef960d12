/**
 * Store descriptors (plugin files): a small JSON file `NAME.vdisk` in a source directory says what
 * kind of store NAME is, where its files are (paths relative to the descriptor), its options and
 * which views to show. The mount reads only these files to list a directory; a store's own files
 * are opened when the mount starts.
 *
 *   { "vdiskfs": 1, "kind": "flat", "id": "…uuid…", "views": ["raw", "vhdx"],
 *     "store": { "path": "disk.img", "size": 1073741824 } }
 */
import { readFile, open, link, rm, lstat } from 'node:fs/promises';
import { basename, dirname, join, resolve, isAbsolute } from 'node:path';
import { randomUUID } from 'node:crypto';
import { VdiskError } from '../errors.js';

export const DESCRIPTOR_EXTENSION = '.vdisk';
export const DESCRIPTOR_VERSION = 1;

export interface Descriptor {
  vdiskfs: number;
  kind: string;
  /** A stable identity (UUID) from which views derive their disk identifiers. */
  id: string;
  /** View names to show, e.g. ["raw", "vhdx"]; absent means the mount's default. */
  views?: string[];
  /** Per-view settings, validated by each view kind, e.g. { "vhdx": { "blockSize": "32M" } }. */
  viewOptions?: Record<string, Record<string, unknown>>;
  /** Kind-specific settings, validated by the store kind. */
  store: Record<string, unknown>;
}

/** A descriptor together with where it was read from. */
export interface LoadedDescriptor {
  readonly path: string;
  /** The store's name: the descriptor's file name without `.vdisk`. */
  readonly name: string;
  readonly dir: string;
  readonly descriptor: Descriptor;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function parseDescriptor(text: string, path: string): Descriptor {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new VdiskError('EINVAL', `descriptor ${path} is not valid JSON: ${(err as Error).message}`);
  }
  const bad = (what: string) => new VdiskError('EINVAL', `descriptor ${path}: ${what}`);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('must be a JSON object');
  const d = raw as Record<string, unknown>;
  if (d.vdiskfs === undefined) throw bad('missing "vdiskfs" version field (is this a vdiskfs descriptor?)');
  if (d.vdiskfs !== DESCRIPTOR_VERSION) {
    throw bad(`version ${JSON.stringify(d.vdiskfs)} is not supported (this vdiskfs reads version ${DESCRIPTOR_VERSION})`);
  }
  if (typeof d.kind !== 'string' || d.kind === '') throw bad('missing "kind" (flat, lbs, …)');
  if (typeof d.id !== 'string' || !UUID_RE.test(d.id)) throw bad('"id" must be a UUID');
  if (d.views !== undefined) {
    if (!Array.isArray(d.views) || d.views.some((v) => typeof v !== 'string' || !/^[a-z0-9]+$/.test(v))) {
      throw bad('"views" must be a list of view names such as ["raw", "vhdx"]');
    }
  }
  if (d.viewOptions !== undefined) {
    const isObject = (x: unknown) => typeof x === 'object' && x !== null && !Array.isArray(x);
    if (!isObject(d.viewOptions) || !Object.values(d.viewOptions as object).every(isObject)) {
      throw bad('"viewOptions" must map view names to objects, e.g. { "vhdx": { "blockSize": "32M" } }');
    }
  }
  if (typeof d.store !== 'object' || d.store === null || Array.isArray(d.store)) throw bad('missing "store" object');
  const parsed: Descriptor = {
    vdiskfs: d.vdiskfs,
    kind: d.kind,
    id: d.id.toLowerCase(),
    views: d.views as string[] | undefined,
    store: d.store as Record<string, unknown>,
  };
  if (d.viewOptions !== undefined) parsed.viewOptions = d.viewOptions as Record<string, Record<string, unknown>>;
  return parsed;
}

export async function loadDescriptor(path: string): Promise<LoadedDescriptor> {
  const full = resolve(path);
  if (!full.endsWith(DESCRIPTOR_EXTENSION)) {
    throw new VdiskError('EINVAL', `${path}: a descriptor's name must end in ${DESCRIPTOR_EXTENSION}`);
  }
  let text: string;
  try {
    text = await readFile(full, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new VdiskError('ENOENT', `descriptor ${path} does not exist`);
    throw new VdiskError('EIO', `cannot read descriptor ${path}: ${(err as Error).message}`, { cause: err });
  }
  return {
    path: full,
    name: basename(full, DESCRIPTOR_EXTENSION),
    dir: dirname(full),
    descriptor: parseDescriptor(text, path),
  };
}

/** Writes a new descriptor atomically; refuses to overwrite an existing one. */
export async function writeNewDescriptor(path: string, d: Omit<Descriptor, 'vdiskfs' | 'id'> & { id?: string }): Promise<Descriptor> {
  const full = resolve(path);
  if (!full.endsWith(DESCRIPTOR_EXTENSION)) {
    throw new VdiskError('EINVAL', `${path}: a descriptor's name must end in ${DESCRIPTOR_EXTENSION}`);
  }
  const descriptor: Descriptor = { vdiskfs: DESCRIPTOR_VERSION, kind: d.kind, id: d.id ?? randomUUID(), views: d.views, store: d.store };
  if (descriptor.views === undefined) delete descriptor.views;
  // Write a temporary file, make it durable, then link it into place: link() fails with EEXIST
  // instead of overwriting, so an existing descriptor is never clobbered, even by a racing create.
  const tmp = `${full}.tmp-${process.pid}`;
  const fh = await open(tmp, 'wx', 0o644);
  try {
    await fh.writeFile(JSON.stringify(descriptor, null, 2) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, full);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new VdiskError('EEXIST', `${path} already exists; choose another name or remove it first`);
    }
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
  return descriptor;
}

/** Refuses to go on if `path` exists (so a create never overwrites a store's files). */
export async function assertAbsent(path: string): Promise<void> {
  try {
    await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  throw new VdiskError('EEXIST', `${path} already exists; choose another name or remove it first`);
}

/** The lock file of a store whose kind keeps no better place for one: `.NAME.vdisk.lock` beside it. */
export function descriptorLockPath(loaded: LoadedDescriptor): string {
  return join(loaded.dir, `.${loaded.name}${DESCRIPTOR_EXTENSION}.lock`);
}

/** Resolves a path stored in a descriptor (relative to the descriptor's directory). */
export function storePath(loaded: LoadedDescriptor, value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') {
    throw new VdiskError('EINVAL', `descriptor ${loaded.path}: "store.${field}" must be a path`);
  }
  return isAbsolute(value) ? value : resolve(loaded.dir, value);
}

/** Reads a positive integer field of a descriptor's store section. */
export function storeInteger(loaded: LoadedDescriptor, field: string, options: { min?: number } = {}): number {
  const value = loaded.descriptor.store[field];
  const min = options.min ?? 0;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new VdiskError('EINVAL', `descriptor ${loaded.path}: "store.${field}" must be an integer ≥ ${min}`);
  }
  return value;
}
