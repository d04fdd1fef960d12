/**
 * The mount table: what a mount shows. It reads every `*.vdisk` descriptor in the source directory,
 * opens each store once, builds its views, and maps file names (`NAME.raw`, `NAME.vhdx`, …) to them.
 * A hidden `.vdiskfs/` directory holds `NAME.stats.json` for each store.
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

export const CONTROL_DIR = '.vdiskfs';

export interface MountedStore {
  readonly name: string;
  readonly descriptor: LoadedDescriptor;
  readonly device: CheckedDevice;
  readonly views: View[];
}

export interface MountedFile {
  readonly store: MountedStore;
  readonly view: View;
  /** Last modification time (ms), shared by all views of a store since they change together. */
  mtime: number;
}

export interface MountTableOptions {
  /** Views to show for every store, overriding descriptors. */
  views?: readonly string[];
  readOnly?: boolean;
}

export class MountTable {
  readonly files = new Map<string, MountedFile>();
  readonly stores: MountedStore[] = [];
  readonly createdAt = Date.now();

  private constructor(readonly sourceDir: string) {}

  static async open(sourceDir: string, options: MountTableOptions = {}): Promise<MountTable> {
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
    const table = new MountTable(sourceDir);
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
        const store: MountedStore = { name: loaded.name, descriptor: loaded, device, views: [] };
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

  /** The stats file of each store, by name inside `.vdiskfs/`. */
  statsFileNames(): string[] {
    return this.stores.map((s) => `${s.name}.stats.json`);
  }

  statsJson(fileName: string): string | undefined {
    const store = this.stores.find((s) => `${s.name}.stats.json` === fileName);
    if (!store) return undefined;
    return JSON.stringify({ store: store.name, kind: store.descriptor.descriptor.kind, size: store.device.size, stats: store.device.stats?.() ?? {} }, null, 2) + '\n';
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
