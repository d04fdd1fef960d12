/**
 * The `chain` store kind: a parent disk plus cascaded differencing disks, each a real VHD or VHDX
 * file. The descriptor names the top layer; the chain is found through the parent locators and
 * checked against the layer list the descriptor records (operations.ts). The top is opened for
 * writing (under the store's lock), every parent read-only, so parents can be shared by chains
 * mounted at the same time.
 */
import type { StoreKind } from '../store-kind.js';
import { ChainDevice } from './chain-device.js';
import { acquireLock, childAdder, describeChain, openChainLayers, serveSnapshotRequest } from './operations.js';
import { logger } from '../../log.js';
import type { Layer } from './layer.js';

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
  async serveRequests(loaded, device) {
    if (!device.snapshot) return undefined;
    const top = await serveSnapshotRequest(loaded, () => device.snapshot!());
    return top ? `snapshot on request: new top ${top}` : undefined;
  },
  /** Opens the chain read-only (every header, checksum, BAT entry and parent identity is validated) and reads every range each layer holds. */
  async check(loaded, options) {
    const problems: { message: string; [k: string]: unknown }[] = [];
    let layers: Layer[] = [];
    try {
      layers = await openChainLayers(loaded, true);
    } catch (err) {
      return { ok: false, summary: { layers: 0 }, problems: [{ message: (err as Error).message }] };
    }
    let bytes = 0;
    try {
      const ranges: { layer: Layer; off: number; len: number }[] = [];
      for (const layer of layers) for await (const [off, len] of layer.presentRanges()) ranges.push({ layer, off, len });
      const total = ranges.reduce((n, r) => n + r.len, 0);
      const buf = new Uint8Array(4 << 20);
      const never = async () => {
        throw new Error('read outside the layer');
      };
      for (const r of ranges) {
        for (let done = 0; done < r.len; done += buf.length) {
          const n = Math.min(buf.length, r.len - done);
          try {
            await r.layer.read(buf.subarray(0, n), r.off + done, never);
          } catch (err) {
            problems.push({ message: `${r.layer.path}: reading ${n} bytes at disk offset ${r.off + done}: ${(err as Error).message}`, layer: r.layer.path });
          }
          bytes += n;
          options.progress?.(bytes, total);
        }
      }
    } finally {
      for (const l of layers) await l.close().catch(() => {});
    }
    return { ok: problems.length === 0, summary: { layers: layers.length, bytesRead: bytes }, problems };
  },
};
