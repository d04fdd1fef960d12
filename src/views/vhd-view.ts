/**
 * The VHD view, `NAME.vhd`: a fixed VHD — the store byte for byte, then a 512-byte footer
 * (spec digest §3.9). Creator "win " so that QEMU uses the footer's exact Current Size rather
 * than the CHS product; Data Offset all ones; spec CHS geometry; a correct checksum; the Unique Id
 * is the store's disk identity (stable across remounts).
 *
 * QEMU never auto-detects a fixed VHD (it would take it for raw, 512 bytes too long): use -f vpc.
 * A write to the footer must leave a valid footer for the same disk (checksum, cookie, fixed type,
 * same size); it is kept in NAME.vhd-overlay beside the descriptor.
 */
import { logger } from '../log.js';
import { VHD_FOOTER_SIZE, checkVhdFooter, decodeVhdFooter, encodeVhdFooter, fixedVhdFooter, VhdDiskType } from '../formats/vhd.js';
import { RegionMap, payloadRegion, regionMapView } from './region-map.js';
import { generatedArea } from './generated-area.js';
import { ViewOverlay } from './view-overlay.js';
import { diskIdentity, fingerprint, overlayPath } from './identity.js';
import { buildOrExplain, type View, type ViewContext, type ViewKind } from './view.js';

export function vhdFooterFor(context: Pick<ViewContext, 'device' | 'descriptor'>): Uint8Array {
  const { device, descriptor } = context;
  return buildOrExplain(descriptor, 'vhd', () =>
    encodeVhdFooter(fixedVhdFooter({ size: device.size, uniqueId: diskIdentity(descriptor) })),
  );
}

export const vhdView: ViewKind = {
  name: 'vhd',
  summary: 'a fixed VHD (the disk then a footer) for VirtualBox, Hyper-V and QEMU (-f vpc)',
  async create(context: ViewContext): Promise<View> {
    const { device, descriptor } = context;
    const log = logger('view', { view: 'vhd', store: descriptor.name });
    const footer = vhdFooterFor(context);
    const size = device.size;
    const writable = device.capabilities.writable;
    const generate = (dest: Uint8Array, offset: number) => void dest.set(footer.subarray(offset, offset + dest.length));
    const overlay = await ViewOverlay.open({
      path: overlayPath(descriptor, 'vhd'),
      areaSize: VHD_FOOTER_SIZE,
      pageSize: VHD_FOOTER_SIZE,
      fingerprint: fingerprint({ format: 'vhd', version: 1, size, footer: Buffer.from(footer).toString('hex') }),
      generate,
      readOnly: !writable,
      log,
    });
    const map = new RegionMap([
      payloadRegion('payload', 0, device, 0, size),
      generatedArea({
        name: 'VHD footer', format: 'VHD', start: size, length: VHD_FOOTER_SIZE, generate, overlay, log,
        structures: [{
          name: 'footer', start: 0, length: VHD_FOOTER_SIZE, kind: 'header',
          checkHeader: (bytes) => {
            const why = checkVhdFooter(bytes);
            if (why) return why;
            const f = decodeVhdFooter(bytes);
            if (f.diskType !== VhdDiskType.FIXED || f.dataOffset !== undefined) return 'the disk must stay a fixed VHD';
            if (f.currentSize !== size) return `the size must stay ${size} bytes`;
            return undefined;
          },
        }],
      }),
    ]);
    return regionMapView('vhd', map, { writable, overlay, device });
  },
};
