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
    for (const line of infoLines(info)) print(line);
  },
});

/** One value as a person reads it: sizes also in binary units, lists comma-separated. */
function shownValue(key: string, v: unknown): string {
  if (typeof v === 'number' && /size|bytes/i.test(key)) return `${v} (${formatSize(v)})`;
  if (Array.isArray(v) && v.every((x) => typeof x !== 'object' || x === null)) return v.join(', ');
  if (v !== null && typeof v === 'object') return Object.entries(v).map(([k, x]) => `${k} ${shownValue(k, x)}`).join(', ');
  return String(v);
}

/**
 * `info`'s text form: one `key value` line per field; a list of records (a chain's layers) as one
 * indented line per record, led by its first field (`  top  /x/c.vhdx  format VHDX …`).
 */
export function infoLines(info: Record<string, unknown>): string[] {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(info)) {
    if (Array.isArray(v) && v.some((x) => x !== null && typeof x === 'object')) {
      lines.push(`${k.padEnd(14)} ${v.length} ${v.length === 1 ? 'entry' : 'entries'}`);
      for (const item of v) {
        const [first, ...rest] = Object.entries(item as Record<string, unknown>);
        const lead = first ? shownValue(first[0], first[1]) : '';
        lines.push(`  ${lead.padEnd(12)} ${rest.map(([rk, rv]) => (rk === 'file' ? shownValue(rk, rv) : `${rk} ${shownValue(rk, rv)}`)).join('  ')}`.trimEnd());
      }
    } else lines.push(`${k.padEnd(14)} ${shownValue(k, v)}`);
  }
  return lines;
}
