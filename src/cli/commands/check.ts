/**
 * `vdiskfs check NAME.vdisk [--json]`: verifies a store's integrity through its kind's optional
 * check capability (LBS: every mapped block against its checksum). Exits 1 on any failure.
 */
import { loadDescriptor } from '../../stores/descriptor.js';
import { storeKind } from '../../stores/registry.js';
import { VdiskError } from '../../errors.js';
import { print, printJson, defineCommand, progressBar } from '../output.js';

interface Args {
  descriptor: string;
  json: boolean;
  max: number;
}

export const checkCommand = defineCommand<Args>({
  command: 'check <descriptor>',
  describe: 'Verify a store: every stored block against its checksum; exits non-zero on any failure',
  builder: (y) =>
    y
      .positional('descriptor', { type: 'string', demandOption: true, describe: 'A NAME.vdisk descriptor' })
      .option('json', { type: 'boolean', default: false, describe: 'Print a JSON report instead of text' })
      .option('max', { type: 'number', default: 50, describe: 'List at most this many failures in text output' })
      .example('$0 check disks/sd.vdisk', 'verify while the store is not mounted (or mounted read-only)'),
  handler: async (args) => {
    const loaded = await loadDescriptor(args.descriptor);
    const kind = storeKind(loaded.descriptor.kind, `descriptor ${loaded.path}`);
    if (!kind.check) throw new VdiskError('ENOTSUP', `store kind "${kind.kind}" has no integrity check`);
    const bar = args.json ? undefined : progressBar(`checking ${loaded.name}`, 1);
    const report = await kind.check(loaded, { progress: bar ? (done, total) => bar.update(total ? done / total : 1) : undefined });
    bar?.done();
    if (args.json) {
      printJson({ name: loaded.name, descriptor: loaded.path, kind: kind.kind, ...report });
    } else {
      for (const p of report.problems.slice(0, args.max)) print(`FAILED ${p.message}`);
      if (report.problems.length > args.max) print(`… and ${report.problems.length - args.max} more`);
      const parts = Object.entries(report.summary).map(([k, v]) => `${k}=${v}`);
      print(`${loaded.name}: ${report.ok ? 'OK' : 'FAILED'} (${parts.join(', ')})`);
    }
    if (!report.ok) process.exitCode = 1;
  },
});
