/**
 * The VMDK view, `NAME.vmdk`: a monolithicFlat text descriptor whose one FLAT extent is
 * `NAME.raw` in the same mount, so VirtualBox and QEMU can use the store read-write through the
 * raw view (VirtualBox opens VHDX read-only). It needs the raw view to be shown too.
 *
 * The descriptor's text is NUL-padded to 10 KiB, the block QEMU rewrites in place when it updates
 * the CID on the first write of a session. The descriptor's bytes are generated; a client that rewrites them (VirtualBox may update the
 * ddb.uuid.* lines) is allowed to as long as the text still parses and describes the same extent,
 * and the change is kept in NAME.vmdk-overlay.
 */
import { createHash } from 'node:crypto';
import { logger } from '../log.js';
import { VdiskError } from '../errors.js';
import { encodeVmdkDescriptor, flatVmdkDescriptor, parseVmdkDescriptor, vmdkDescriptorFile } from '../formats/vmdk.js';
import { RegionMap, regionMapView } from './region-map.js';
import { generatedArea } from './generated-area.js';
import { ViewOverlay } from './view-overlay.js';
import { diskIdentity, fingerprint, overlayPath } from './identity.js';
import { buildOrExplain, type View, type ViewContext, type ViewKind } from './view.js';

export function vmdkDescriptorFor(context: Pick<ViewContext, 'device' | 'descriptor' | 'siblings'>): string {
  const { device, descriptor, siblings } = context;
  const raw = `${descriptor.name}.raw`;
  if (!siblings.includes(raw)) {
    throw new VdiskError('EINVAL', `store ${descriptor.name}: the vmdk view points at ${raw}, so the raw view must be shown too (add raw to its views)`);
  }
  if (/["\n\r]/.test(raw)) throw new VdiskError('EINVAL', `store ${descriptor.name}: its name cannot appear in a VMDK descriptor`);
  const cid = createHash('sha256').update(`${descriptor.descriptor.id}/vmdk/cid`).digest().readUInt32BE(0);
  return buildOrExplain(descriptor, 'vmdk', () =>
    encodeVmdkDescriptor(flatVmdkDescriptor({ size: device.size, file: raw, cid, uuid: diskIdentity(descriptor) })),
  );
}

export const vmdkView: ViewKind = {
  name: 'vmdk',
  summary: 'a VMDK descriptor (monolithicFlat) pointing at NAME.raw, for VirtualBox and QEMU',
  async create(context: ViewContext): Promise<View> {
    const { device, descriptor } = context;
    const log = logger('view', { view: 'vmdk', store: descriptor.name });
    const source = vmdkDescriptorFor(context);
    const text = vmdkDescriptorFile(source);
    const original = parseVmdkDescriptor(source);
    const writable = device.capabilities.writable;
    const generate = (dest: Uint8Array, offset: number) => void dest.set(text.subarray(offset, offset + dest.length));
    const overlay = await ViewOverlay.open({
      path: overlayPath(descriptor, 'vmdk'),
      areaSize: text.length,
      pageSize: 4096,
      fingerprint: fingerprint({ format: 'vmdk', version: 1, text: source }),
      generate,
      readOnly: !writable,
      log,
    });
    const map = new RegionMap([
      generatedArea({
        name: 'VMDK descriptor', format: 'VMDK', start: 0, length: text.length, generate, overlay, log,
        structures: [{
          name: 'descriptor', start: 0, length: text.length, kind: 'header',
          checkHeader: (bytes) => {
            let d;
            try {
              d = parseVmdkDescriptor(Buffer.from(bytes).toString('utf8'));
            } catch (err) {
              return (err as Error).message;
            }
            if (JSON.stringify(d.extents) !== JSON.stringify(original.extents)) return `the extent must stay ${JSON.stringify(original.extents)}`;
            return undefined;
          },
        }],
      }),
    ]);
    return regionMapView('vmdk', map, { writable, overlay });
  },
};
