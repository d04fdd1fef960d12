import { createLbsStore, DEFAULTS } from '../../stores/lbs/create.js';
import { CHECKSUMS } from '../../stores/lbs/checksums.js';
import { parseSize, formatSize } from '../../util/size.js';
import { parseViewList } from '../../views/registry.js';
import { print, defineCommand, progressBar, UsageError } from '../output.js';

interface Args {
  descriptor: string;
  size: string;
  data: string;
  meta: string;
  blockSize: string;
  clusterSize: string;
  overprovision: string;
  checksum: string;
  allowSameFilesystem: boolean;
  views?: string;
}

export const createLbsCommand = defineCommand<Args>({
  command: 'lbs <descriptor>',
  describe: 'A logging block store: a fully allocated data file on untrusted storage, its metadata log on a protected mount',
  builder: (y) =>
    y
      .positional('descriptor', { type: 'string', demandOption: true, describe: 'The descriptor to write, NAME.vdisk' })
      .option('size', { type: 'string', demandOption: true, describe: 'Disk size: bytes, or with a unit (512M, 8G); a multiple of 512' })
      .option('data', { type: 'string', demandOption: true, describe: 'Path of the data file to create (on the slow/untrusted storage)' })
      .option('meta', { type: 'string', demandOption: true, describe: 'Directory for the metadata log, on a protected mount you own (not group/world-writable)' })
      .option('block-size', { type: 'string', default: String(DEFAULTS.blockSize), describe: 'Block size (power of two, 512 B–1 MiB)' })
      .option('cluster-size', { type: 'string', default: '1M', describe: 'Cluster size: the unit of sequential writes and cleaning (power of two ≥ block size)' })
      .option('overprovision', { type: 'string', default: `${DEFAULTS.overprovision}`, describe: 'Extra physical space in percent (5–400); more means less cleaning' })
      .option('checksum', { type: 'string', default: DEFAULTS.checksum, choices: CHECKSUMS.map((c) => c.name), describe: 'Per-block checksum (fletcher32 is the faster, measured)' })
      .option('allow-same-filesystem', { type: 'boolean', default: false, describe: 'Allow the metadata log on the same filesystem as the data file (loses the protection)' })
      .option('views', { type: 'string', describe: 'Views this store shows, e.g. raw,vhdx (default: the mount\'s)' })
      .example('$0 create lbs disks/sd.vdisk --size 8G --data /media/sdcard/sd.lbsdata --meta /var/lib/vdiskfs', 'an 8 GiB disk on an SD card, its log on the system disk'),
  handler: async (args) => {
    const size = parseSize(args.size, '--size');
    const overprovision = Number(String(args.overprovision).replace(/%$/, ''));
    if (!Number.isFinite(overprovision)) throw new UsageError(`--overprovision "${args.overprovision}" is not a number of percent`);
    const views = args.views ? parseViewList(args.views, '--views') : undefined;
    const bar = size >= 256 << 20 ? progressBar('allocating the data file', 1) : undefined;
    const created = await createLbsStore({
      descriptorPath: args.descriptor,
      size,
      dataPath: args.data,
      metaDir: args.meta,
      blockSize: parseSize(args.blockSize, '--block-size'),
      clusterSize: parseSize(args.clusterSize, '--cluster-size'),
      overprovision,
      checksum: args.checksum,
      allowSameFilesystem: args.allowSameFilesystem,
      views,
      progress: bar ? (done, total) => bar.update(done / total) : undefined,
    });
    bar?.done();
    const g = created.geometry;
    print(`created lbs store ${created.descriptorPath} (${formatSize(size)})`);
    print(`  data file ${created.dataPath} (${formatSize(g.dataOffset + g.clusterCount * g.clusterSize)}, ${g.clusterCount} clusters of ${formatSize(g.clusterSize)}, blocks of ${formatSize(g.blockSize)})`);
    print(`  metadata log ${created.logPath}`);
    // The map is ~16 B per logical block plus 4 B per physical block (docs/lbs-format.md, RAM).
    const ram = Math.ceil(size / g.blockSize) * 16 + g.clusterCount * (g.clusterSize / g.blockSize) * 4;
    print(`  RAM while open: about ${formatSize(ram)} (a larger --block-size needs less)`);
  },
});
