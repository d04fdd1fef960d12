/** The raw view: the disk byte for byte, `NAME.raw`. Loop-mount it, or give it to QEMU as raw. */
import type { View, ViewKind } from './view.js';

export const rawView: ViewKind = {
  name: 'raw',
  summary: 'the disk byte for byte (loop-mount it, or use it as a raw image)',
  async create({ device }): Promise<View> {
    return {
      name: 'raw',
      size: device.size,
      writable: device.capabilities.writable,
      read: (dest, offset) => device.read(dest, offset),
      write: (src, offset) => device.write(src, offset),
      discard: (offset, length) => device.discard(offset, length),
      flush: () => device.flush(),
      payload: [{ fileOffset: 0, deviceOffset: 0, length: device.size }],
    };
  },
};
