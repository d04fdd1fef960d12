/**
 * The disk table: the set of open stores and their views that every front end serves (the FUSE
 * mount today, the NBD server next). It reads every `*.vdisk` descriptor in the source directory,
 * opens each store once, builds its views, and maps file names (`NAME.raw`, `NAME.vhdx`, …) to
 * them. It knows nothing of FUSE or NBD: front ends import it, never the other way round.
 *
 * Every store is opened before the mount is made, so a bad descriptor or a missing store file is an
 * error at mount time (nothing is mounted), never an I/O error later.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { checked, type CheckedDevice } from '../devices/block-device.js';
import { DESCRIPTOR_EXTENSION, loadDescriptor, type LoadedDescriptor } from '../stores/descriptor.js';
import { openStore } from '../stores/registry.js';
import { DEFAULT_VIEWS, parseViewList, viewKind } from '../views/registry.js';
import type { View } from '../views/view.js';
import { VdiskError } from '../errors.js';
import { logger } from '../log.js';

export interface OpenStore {
  readonly name: string;
  readonly descriptor: LoadedDescriptor;
  readonly device: CheckedDevice;
  readonly views: View[];
}

export interface DiskFile {
  readonly store: OpenStore;
  readonly view: View;
  /** Last modification time (ms), shared by all views of a store since they change together. */
  mtime: number;
}

export interface DiskTableOptions {
  /** Views to show for every store, overriding descriptors. */
  views?: readonly string[];
  readOnly?: boolean;
}

export class DiskTable {
  readonly files = new Map<string, DiskFile>();
  readonly stores: OpenStore[] = [];
  readonly createdAt = Date.now();

  private constructor(readonly sourceDir: string) {}

  static async open(sourceDir: string, options: DiskTableOptions = {}): Promise<DiskTable> {
    const log = logger('mount');
    let entries: string[];
    try {
      const st = await stat(sourceDir);
      if (!st.isDirectory()) throw new VdiskError('ENOTDIR', `source ${sourceDir} is not a directory`);
      entries = await readdir(sourceDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new VdiskError('ENOENT', `source directory ${sourceDir} does not exist`);
      }
      throw err;
    }
    const table = new DiskTable(sourceDir);
    const names = entries.filter((e) => e.endsWith(DESCRIPTOR_EXTENSION) && e.length > DESCRIPTOR_EXTENSION.length).sort();
    try {
      for (const entry of names) {
        const loaded = await loadDescriptor(join(sourceDir, entry));
        const explicitViews = options.views
          ? [...options.views]
          : loaded.descriptor.views
            ? parseViewList(loaded.descriptor.views, `descriptor ${loaded.path}`)
            : undefined;
        const viewNames = explicitViews ?? DEFAULT_VIEWS.filter((v) => viewKind(v) !== undefined);
        const device = checked(await openStore(loaded, { readOnly: options.readOnly }));
        const store: OpenStore = { name: loaded.name, descriptor: loaded, device, views: [] };
        table.stores.push(store);
        const mtime = (await stat(loaded.path)).mtimeMs;
        const siblings = viewNames.map((v) => `${loaded.name}.${v}`);
        for (const v of viewNames) {
          let view: View;
          try {
            view = await viewKind(v)!.create({ device, descriptor: loaded, siblings });
          } catch (err) {
            // A view that was asked for must appear or the mount fails; a default view the format
            // cannot express for this store (a VHDX over 64 TiB) is left out with a warning.
            if (explicitViews || !(err instanceof VdiskError) || err.code !== 'EFBIG') throw err;
            log.warn({ store: loaded.name, view: v, reason: err.message }, 'default view left out');
            continue;
          }
          store.views.push(view);
          table.files.set(`${loaded.name}.${v}`, { store, view, mtime });
        }
        log.info({ store: loaded.name, kind: loaded.descriptor.kind, size: device.size, views: viewNames }, 'store opened');
      }
    } catch (err) {
      await table.close().catch((closeErr) => log.error({ err: closeErr }, 'closing stores after a failed open'));
      throw err;
    }
    if (table.stores.length === 0) {
      log.warn({ sourceDir }, `no ${DESCRIPTOR_EXTENSION} descriptors in the source directory; the mount is empty`);
    }
    return table;
  }

  /** A store's counters as JSON (`frontEnd`: what the front end serving it adds, e.g. FUSE counters). */
  statsJson(store: OpenStore, frontEnd?: Record<string, unknown>): string {
    return JSON.stringify({ store: store.name, kind: store.descriptor.descriptor.kind, size: store.device.size, stats: store.device.stats?.() ?? {}, ...(frontEnd ? { frontEnd } : {}) }, null, 2) + '\n';
  }

  async flushAll(): Promise<void> {
    for (const s of this.stores) await s.device.flush();
  }

  async close(): Promise<void> {
    let first: unknown;
    for (const s of this.stores) {
      try {
        for (const v of s.views) await v.close?.();
        await s.device.close();
      } catch (err) {
        first ??= err;
      }
    }
    if (first) throw first;
  }
}
