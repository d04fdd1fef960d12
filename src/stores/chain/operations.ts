/**
 * Chain operations: create, snapshot, undo, commit; the descriptor section of a chain store; the
 * lock that keeps two writers off one top layer.
 *
 * Descriptor (`"kind": "chain"`), paths relative to the descriptor's directory:
 *   "store": { "top": "web-2.vhdx", "layers": ["web-2.vhdx", "web-1.vhdx", "base.vhdx"],
 *              "commit"?: { "from": "web-2.vhdx", "into": "web-1.vhdx" } }
 * `layers` (top first) is what the chain was when last recorded: opening compares it with what the
 * parent locators say, so a moved or replaced parent is reported instead of silently followed.
 * `commit` is present only while a commit is under way (see commitChain: resumable).
 */
import { open, rename, rm, readFile, realpath, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, isAbsolute } from 'node:path';
import { VdiskError } from '../../errors.js';
import { acquirePidLock, lockHolder as pidLockHolder } from '../../util/pid-lock.js';
import { assertAbsent, descriptorLockPath, writeNewDescriptor, type LoadedDescriptor, loadDescriptor } from '../descriptor.js';
import { createLayerFile, formatOfPath, openLayer } from './images.js';
import { openChainFrom } from './parent-resolver.js';
import type { Layer, LayerInfo } from './layer.js';

export interface ChainSection {
  top: string;
  layers: string[];
  commit?: { from: string; into: string };
}

const bad = (loaded: LoadedDescriptor, what: string) => new VdiskError('EINVAL', `descriptor ${loaded.path}: ${what}`);

export function chainSection(loaded: LoadedDescriptor): ChainSection {
  const s = loaded.descriptor.store;
  if (typeof s.top !== 'string' || !s.top) throw bad(loaded, '"store.top" must be the path of the top layer file');
  if (s.layers !== undefined && (!Array.isArray(s.layers) || s.layers.some((x) => typeof x !== 'string'))) throw bad(loaded, '"store.layers" must be a list of paths');
  const out: ChainSection = { top: s.top, layers: (s.layers as string[] | undefined) ?? [s.top] };
  if (s.commit !== undefined) {
    const c = s.commit as Record<string, unknown>;
    if (typeof c !== 'object' || c === null || typeof c.from !== 'string' || typeof c.into !== 'string') throw bad(loaded, '"store.commit" is malformed');
    out.commit = { from: c.from, into: c.into };
  }
  return out;
}

export const abs = (loaded: LoadedDescriptor, p: string): string => (isAbsolute(p) ? p : resolve(loaded.dir, p));
const rel = (descriptorDir: string, p: string): string => {
  const r = relative(descriptorDir, p);
  return r.startsWith('..') || isAbsolute(r) ? p : r;
};

/** Rewrites a descriptor atomically (temporary file, fsync, rename, fsync of the directory). */
export async function replaceChainSection(loaded: LoadedDescriptor, section: ChainSection): Promise<void> {
  const d = { ...loaded.descriptor, store: { ...section } as Record<string, unknown> };
  if (!section.commit) delete d.store.commit;
  const tmp = `${loaded.path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(JSON.stringify(d, null, 2) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, loaded.path);
  await syncDir(loaded.dir);
  (loaded as { descriptor: typeof d }).descriptor = d;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // some filesystems refuse fsync on a directory; the rename is still atomic
  } finally {
    await fh.close();
  }
}

// ─── Lock ────────────────────────────────────────────────────────────────────────────────────────

/** The lock file of a store: held while the top is open for writing (a mount, or an operation). */
export const lockPath = descriptorLockPath;

/** Takes the store's lock (a stale lock of a dead process is taken over); returns its release. */
export function acquireLock(loaded: LoadedDescriptor, what: string): Promise<() => Promise<void>> {
  return acquirePidLock(lockPath(loaded), (pid) => `${loaded.name} is in use by process ${pid} (mounted?); cannot ${what} now. Unmount it first`, 0o644);
}

/** The live process (other than this one) holding the store's lock, if any. */
async function lockHolder(loaded: LoadedDescriptor): Promise<number | undefined> {
  const pid = await pidLockHolder(lockPath(loaded));
  return pid !== process.pid ? pid : undefined;
}

// ─── Snapshots of a mounted store ────────────────────────────────────────────────────────────────
// `vdiskfs snapshot` on a mounted store leaves a request file beside the descriptor and sends the
// mount daemon (the lock holder) SIGUSR1; the daemon snapshots every store with a request and
// removes it (writing the error beside it if the snapshot failed). The CLI waits for the new top.

const requestPath = (loaded: LoadedDescriptor): string => join(loaded.dir, `.${loaded.name}.vdisk.snapshot-request`);
const requestErrorPath = (loaded: LoadedDescriptor): string => join(loaded.dir, `.${loaded.name}.vdisk.snapshot-error`);

async function requestMountedSnapshot(loaded: LoadedDescriptor, pid: number): Promise<string> {
  const before = chainSection(loaded).top;
  await rm(requestErrorPath(loaded), { force: true });
  await writeFileAtomic(requestPath(loaded), `${process.pid}\n`);
  process.kill(pid, 'SIGUSR1');
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    const err = await readFile(requestErrorPath(loaded), 'utf8').catch(() => undefined);
    if (err !== undefined) {
      await rm(requestErrorPath(loaded), { force: true });
      throw new VdiskError('EIO', `the mount daemon (pid ${pid}) could not take the snapshot: ${err.trim()}`);
    }
    const now = await loadDescriptor(loaded.path).catch(() => undefined);
    if (now && chainSection(now).top !== before) return abs(now, chainSection(now).top);
  }
  await rm(requestPath(loaded), { force: true });
  throw new VdiskError('ETIMEDOUT', `${loaded.name} is mounted by process ${pid}, which did not take the snapshot within 30 s`);
}

async function writeFileAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

/**
 * For the mount daemon: if a snapshot of this store was requested, take it with `snapshot` (the
 * open device's) and clear the request. Returns the new top, or undefined if nothing was asked.
 */
export async function serveSnapshotRequest(loaded: LoadedDescriptor, snapshot: () => Promise<string>): Promise<string | undefined> {
  try {
    await stat(requestPath(loaded));
  } catch {
    return undefined;
  }
  await rm(requestPath(loaded), { force: true });
  try {
    return await snapshot();
  } catch (err) {
    await writeFileAtomic(requestErrorPath(loaded), (err as Error).message);
    throw err;
  }
}

// ─── Opening ─────────────────────────────────────────────────────────────────────────────────────

/**
 * Opens the chain of a descriptor: the top writable unless `readOnly`, parents read-only; the
 * layer list is checked against the descriptor's.
 */
export async function openChainLayers(loaded: LoadedDescriptor, readOnly: boolean): Promise<Layer[]> {
  const section = chainSection(loaded);
  if (section.commit) {
    throw new VdiskError('EBUSY', `a commit of ${section.commit.from} into ${section.commit.into} was interrupted; run "vdiskfs commit ${loaded.path}" to finish it`);
  }
  const top = abs(loaded, section.top);
  if (!(await stat(top).then(() => true, () => false))) throw new VdiskError('ENOENT', `descriptor ${loaded.path}: the top layer ${top} does not exist`);
  const layers = await openChainFrom(top, !readOnly, openLayer);
  try {
    const found = await Promise.all(layers.map((l) => realpath(l.path)));
    const recorded = await Promise.all(section.layers.map((p) => realpath(abs(loaded, p)).catch(() => abs(loaded, p))));
    if (found.length !== recorded.length || found.some((p, i) => p !== recorded[i])) {
      throw new VdiskError(
        'EINVAL',
        `descriptor ${loaded.path} records the chain ${recorded.join(' → ')}, but the files' parent locators give ${found.join(' → ')}: a layer was moved or replaced`,
      );
    }
    return layers;
  } catch (err) {
    for (const l of layers) await l.close().catch(() => {});
    throw err;
  }
}

/** A free name for the next layer: NAME-<n>.<ext> in `dir`. */
async function nextLayerPath(dir: string, name: string, ext: string): Promise<string> {
  for (let n = 1; ; n++) {
    const p = join(dir, `${name}-${n}.${ext}`);
    if (!(await stat(p).then(() => true, () => false)) && !(await stat(`${p}.tmp-${process.pid}`).then(() => true, () => false))) return p;
  }
}

/** Creates an empty child of `parent` beside the top (or at `childPath`); returns its path. */
async function makeChild(loaded: { name: string }, parent: Layer, dir: string, childPath?: string, blockSize?: number): Promise<string> {
  const path = childPath ? resolve(childPath) : await nextLayerPath(dir, loaded.name, parent.format);
  if (childPath) {
    const f = formatOfPath(path);
    if (f && f !== parent.format) throw new VdiskError('EINVAL', `--child ${childPath}: the parent ${parent.path} is a ${parent.format.toUpperCase()}; the child must be one too`);
    await assertAbsent(path);
  }
  await createLayerFile(path, { format: parent.format, size: parent.size, parent, blockSize });
  return path;
}

// ─── create ──────────────────────────────────────────────────────────────────────────────────────

export interface CreateChainOptions {
  descriptorPath: string;
  parentPath: string;
  childPath?: string;
  views?: string[];
  blockSize?: number;
}

/** `create chain`: checks the parent's own chain, makes the first child, writes the descriptor. */
export async function createChainStore(o: CreateChainOptions): Promise<{ descriptorPath: string; childPath: string; layers: string[] }> {
  const descriptorPath = resolve(o.descriptorPath);
  if (!descriptorPath.endsWith('.vdisk')) throw new VdiskError('EINVAL', `${o.descriptorPath}: a descriptor's name must end in .vdisk`);
  await assertAbsent(descriptorPath);
  const parentPath = resolve(o.parentPath);
  if (!formatOfPath(parentPath) && !(await stat(parentPath).then(() => true, () => false))) {
    throw new VdiskError('ENOENT', `the parent ${o.parentPath} does not exist`);
  }
  const parents = await openChainFrom(parentPath, false, openLayer);
  let childPath: string;
  try {
    const name = basename(descriptorPath, '.vdisk');
    childPath = await makeChild({ name }, parents[0]!, dirname(parentPath), o.childPath, o.blockSize);
  } finally {
    for (const l of parents) await l.close().catch(() => {});
  }
  const dir = dirname(descriptorPath);
  const layerPaths = [childPath, ...(await chainPathsOf(parentPath))];
  try {
    await writeNewDescriptor(descriptorPath, {
      kind: 'chain',
      views: o.views,
      store: { top: rel(dir, childPath), layers: layerPaths.map((p) => rel(dir, p)) },
    });
  } catch (err) {
    await rm(childPath, { force: true });
    throw err;
  }
  return { descriptorPath, childPath, layers: layerPaths };
}

async function chainPathsOf(top: string): Promise<string[]> {
  const layers = await openChainFrom(top, false, openLayer);
  const paths = layers.map((l) => l.path);
  for (const l of layers) await l.close().catch(() => {});
  return paths;
}

/** The snapshot hook for an open chain: seal is done by the caller; make, record and open the child. */
export function childAdder(loaded: LoadedDescriptor): (layers: readonly Layer[]) => Promise<Layer> {
  return async (layers) => {
    const top = layers[0]!;
    const path = await makeChild(loaded, top, dirname(top.path));
    try {
      const section = chainSection(loaded);
      await replaceChainSection(loaded, { top: rel(loaded.dir, path), layers: [rel(loaded.dir, path), ...section.layers] });
    } catch (err) {
      await rm(path, { force: true });
      throw err;
    }
    return openLayer(path, true);
  };
}

// ─── snapshot / undo ─────────────────────────────────────────────────────────────────────────────

export async function snapshotChain(descriptorPath: string): Promise<{ top: string; mounted?: boolean }> {
  const loaded = await loadDescriptor(descriptorPath);
  assertChain(loaded);
  const holder = await lockHolder(loaded);
  if (holder) return { top: await requestMountedSnapshot(loaded, holder), mounted: true };
  const release = await acquireLock(loaded, 'snapshot');
  try {
    const layers = await openChainLayers(loaded, false);
    try {
      await layers[0]!.seal();
      const child = await childAdder(loaded)(layers);
      await child.close();
      return { top: child.path };
    } finally {
      for (const l of layers) await l.close().catch(() => {});
    }
  } finally {
    await release();
  }
}

/**
 * Discards every change since the last snapshot: the top is replaced by a new empty child of its
 * parent. Order: new child made durable → descriptor switched (atomic rename) → old top deleted;
 * a crash leaves at worst an unreferenced file, never a broken chain.
 */
export async function undoChain(descriptorPath: string): Promise<{ discarded: string; top: string }> {
  const loaded = await loadDescriptor(descriptorPath);
  assertChain(loaded);
  const release = await acquireLock(loaded, 'undo');
  try {
    const layers = await openChainLayers(loaded, true);
    let child: string;
    const old = layers[0]!.path;
    try {
      if (layers.length < 2) throw new VdiskError('EINVAL', `${loaded.name}: the top ${old} has no parent in this chain; there is nothing to undo`);
      child = await makeChild(loaded, layers[1]!, dirname(old));
    } finally {
      for (const l of layers) await l.close().catch(() => {});
    }
    const section = chainSection(loaded);
    await replaceChainSection(loaded, { top: rel(loaded.dir, child), layers: [rel(loaded.dir, child), ...section.layers.slice(1)] });
    await rm(old, { force: true });
    return { discarded: old, top: child };
  } finally {
    await release();
  }
}

// ─── commit ──────────────────────────────────────────────────────────────────────────────────────

/**
 * Merges the top into its parent; the parent becomes the top. Resumable:
 *   1. the intent { from, into } is recorded in the descriptor (atomic rename); while it is there
 *      the store refuses to open, and `commit` resumes;
 *   2. every sector the top holds is copied into the parent (through the parent's own writer: its
 *      blocks, bitmaps and log), then the parent is flushed and sealed. Copying is idempotent and
 *      the top is never modified, so starting step 2 again after a crash is always correct;
 *   3. the descriptor drops the top and the intent (atomic rename); 4. the old top is deleted.
 */
export async function commitChain(descriptorPath: string, progress?: (done: number, total: number) => void): Promise<{ into: string; removed: string; bytes: number }> {
  const loaded = await loadDescriptor(descriptorPath);
  assertChain(loaded);
  const release = await acquireLock(loaded, 'commit');
  try {
    let section = chainSection(loaded);
    if (!section.commit) {
      // Validate the whole chain before touching anything.
      const layers = await openChainLayers(loaded, true);
      const n = layers.length;
      for (const l of layers) await l.close().catch(() => {});
      if (n < 2) throw new VdiskError('EINVAL', `${loaded.name}: the top has no parent in this chain; there is nothing to commit into`);
      section = { ...section, commit: { from: section.layers[0]!, into: section.layers[1]! } };
      await replaceChainSection(loaded, section);
    }
    const from = abs(loaded, section.commit!.from);
    const into = abs(loaded, section.commit!.into);
    const top = await openLayer(from, false);
    let bytes = 0;
    try {
      const parent = await openLayer(into, true);
      try {
        if (parent.size !== top.size) throw new VdiskError('EINVAL', `${from} and ${into} differ in size`);
        const ranges: [number, number][] = [];
        let total = 0;
        for await (const r of top.presentRanges()) {
          ranges.push(r);
          total += r[1];
        }
        const never = async () => {
          throw new VdiskError('EIO', 'commit read outside the top layer (bug)');
        };
        const CHUNK = 4 << 20;
        const buf = new Uint8Array(CHUNK);
        progress?.(0, total);
        for (const [off, len] of ranges) {
          for (let done = 0; done < len; done += CHUNK) {
            const n = Math.min(CHUNK, len - done);
            const b = buf.subarray(0, n);
            await top.read(b, off + done, never);
            await parent.write(b, off + done);
            bytes += n;
            progress?.(bytes, total);
          }
        }
        await parent.seal();
      } finally {
        await parent.close();
      }
    } finally {
      await top.close();
    }
    const rest = section.layers.slice(1);
    await replaceChainSection(loaded, { top: rest[0]!, layers: rest });
    await rm(from, { force: true });
    return { into, removed: from, bytes };
  } finally {
    await release();
  }
}

function assertChain(loaded: LoadedDescriptor): void {
  if (loaded.descriptor.kind !== 'chain') throw new VdiskError('EINVAL', `${loaded.path} is a ${loaded.descriptor.kind} store, not a chain`);
}

/** What `info` shows: the layers, top first, with format, type, size and allocation. */
export async function describeChain(loaded: LoadedDescriptor): Promise<Record<string, unknown>> {
  const section = chainSection(loaded);
  if (section.commit) return { top: abs(loaded, section.top), commitInProgress: section.commit, layers: section.layers.map((p) => abs(loaded, p)) };
  const layers = await openChainLayers(loaded, true);
  try {
    const infos: LayerInfo[] = layers.map((l) => l.info());
    return {
      size: layers[0]!.size,
      // What the writable top layer holds (its allocated blocks); the parents are shared and fixed.
      allocatedBytes: infos[0]!.allocatedBlocks * infos[0]!.blockSize,
      depth: infos.length,
      chain: infos.map((i, n) => ({
        layer: n === 0 ? 'top' : n === infos.length - 1 ? 'base' : `parent ${n}`,
        file: i.path,
        format: `${i.format} ${i.type}`,
        blockSize: i.blockSize,
        allocated: `${i.allocatedBlocks}/${i.totalBlocks} blocks`,
        fileSize: i.fileSize,
      })),
    };
  } finally {
    for (const l of layers) await l.close().catch(() => {});
  }
}

