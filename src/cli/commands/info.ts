import { loadDescriptor } from '../../stores/descriptor.js';
import { storeKind } from '../../stores/registry.js';
import { formatSize } from '../../util/size.js';
import { print, printJson, defineCommand } from '../output.js';

interface Args {
  descriptor: string;
  json?: boolean;
}

export const infoCommand = defineCommand<Args>({
  command: 'info <descriptor>',
  describe: 'Show what a store is: kind, size, where its files live, its views',
  builder: (y) =>
    y
      .positional('descriptor', { type: 'string', demandOption: true, describe: 'A NAME.vdisk descriptor' })
      .option('json', { type: 'boolean', default: false, describe: 'Print JSON instead of text' }),
  handler: async (args) => {
    const loaded = await loadDescriptor(args.descriptor);
    const kind = storeKind(loaded.descriptor.kind, `descriptor ${loaded.path}`);
    const details = await kind.describe(loaded);
    const info = {
      name: loaded.name,
      descriptor: loaded.path,
      kind: loaded.descriptor.kind,
      id: loaded.descriptor.id,
      views: loaded.descriptor.views ?? 'mount default',
      ...details,
    };
    if (args.json) return printJson(info);
    for (const [k, v] of Object.entries(info)) {
      const shown = typeof v === 'number' && /size|bytes/i.test(k) ? `${v} (${formatSize(v)})` : typeof v === 'object' ? JSON.stringify(v) : String(v);
      print(`${k.padEnd(14)} ${shown}`);
    }
  },
});
