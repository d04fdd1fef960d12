/**
 * The VHDX view, `NAME.vhdx`: a synthetic dynamic VHDX whose every block is FULLY_PRESENT and
 * laid out in order over the store (layout: vhdx-layout.ts). The region map is:
 *
 *   [0, dataStart)                 generated metadata, with a persistent overlay for client writes
 *   [dataStart, dataStart + V)     the store, byte for byte
 *   [dataStart + V, fileSize)      zeros: the rest of the last block
 *
 * Payload reads and writes go straight to the store. QEMU rewrites both headers on its first
 * write of a session; those writes are validated and kept in NAME.vhdx-overlay beside the
 * descriptor. Settings (descriptor "viewOptions": { "vhdx": { … } }): blockSize (power of 2,
 * 1 MiB–256 MiB), physicalSectorSize (512 or 4096).
 */
import { logger } from '../log.js';
import { VdiskError } from '../errors.js';
import { checkHeader, decodeHeaderFields, FILE_IDENTIFIER_SIGNATURE } from '../formats/vhdx.js';
import { VhdxLayout } from './vhdx-layout.js';
import { RegionMap, payloadRegion, zeroRegion, regionMapView } from './region-map.js';
import { generatedArea, type Structure } from './generated-area.js';
import { ViewOverlay } from './view-overlay.js';
import { diskIdentity, fingerprint, overlayPath, sizeOption, viewGuid, viewOptions } from './identity.js';
import { buildOrExplain, type View, type ViewContext, type ViewKind } from './view.js';

/** The layout a store's VHDX view has (exported for `info` and tests). */
export function vhdxLayoutFor(context: Pick<ViewContext, 'device' | 'descriptor'>): VhdxLayout {
  const { descriptor, device } = context;
  const physical = viewOptions(descriptor, 'vhdx').physicalSectorSize;
  if (physical !== undefined && physical !== 512 && physical !== 4096) {
    throw new VdiskError('EINVAL', `descriptor ${descriptor.path}: viewOptions.vhdx.physicalSectorSize must be 512 or 4096`);
  }
  return buildOrExplain(descriptor, 'vhdx', () =>
    new VhdxLayout({
      virtualSize: device.size,
      blockSize: sizeOption(descriptor, 'vhdx', 'blockSize'),
      physicalSectorSize: physical as number | undefined,
      diskId: diskIdentity(descriptor),
      dataWriteGuid: viewGuid(descriptor, 'vhdx', 'data-write'),
      fileWriteGuid: viewGuid(descriptor, 'vhdx', 'file-write'),
    }),
  );
}

export const vhdxView: ViewKind = {
  name: 'vhdx',
  summary: 'a dynamic VHDX (every block present, in order) for QEMU, Hyper-V and libvhdi',
  async create(context: ViewContext): Promise<View> {
    const { device, descriptor } = context;
    const log = logger('view', { view: 'vhdx', store: descriptor.name });
    const layout = vhdxLayoutFor(context);
    const writable = device.capabilities.writable;
    const overlay = await ViewOverlay.open({
      path: overlayPath(descriptor, 'vhdx'),
      areaSize: layout.dataStart,
      pageSize: 4096,
      fingerprint: fingerprint(layout.describe()),
      generate: (dest, offset) => layout.generate(dest, offset),
      readOnly: !writable,
      log,
    });
    const structures: Structure[] = layout.structures().map((s) => ({
      ...s,
      signature: s.kind === 'identifier' ? Buffer.from(FILE_IDENTIFIER_SIGNATURE) : undefined,
      // A client may move the log's GUID and sequence, never the log itself: the layout is fixed.
      checkHeader: s.kind === 'header' ? (bytes: Uint8Array) => {
        const why = checkHeader(bytes);
        if (why) return why;
        const h = decodeHeaderFields(bytes);
        if (h.logOffset !== layout.logOffset || h.logLength !== layout.logLength) {
          return `the log must stay at ${layout.logOffset} with length ${layout.logLength}`;
        }
        return undefined;
      } : undefined,
    }));
    const regions = [
      generatedArea({
        name: 'VHDX metadata area', format: 'VHDX', start: 0, length: layout.dataStart, structures,
        generate: (dest, offset) => layout.generate(dest, offset), overlay, log,
      }),
      payloadRegion('payload', layout.dataStart, device, 0, layout.virtualSize),
    ];
    if (layout.fileSize > layout.dataStart + layout.virtualSize) {
      regions.push(zeroRegion('padding after the last sector', layout.dataStart + layout.virtualSize, layout.fileSize - layout.dataStart - layout.virtualSize, { acceptZeroWrites: true }));
    }
    const map = new RegionMap(regions);
    log.debug({ size: map.size, blockSize: layout.blockSize, dataStart: layout.dataStart, overlayPages: overlay.pageCount }, 'vhdx view built');
    return regionMapView('vhdx', map, { writable, overlay, device });
  },
};
