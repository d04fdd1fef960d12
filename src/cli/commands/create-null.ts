import { createNullStore } from '../../stores/null/null-store.js';
import { parseSize, formatSize } from '../../util/size.js';
import { print, defineCommand } from '../output.js';

interface Args {
  descriptor: string;
  size: string;
}

export const createNullCommand = defineCommand<Args>({
  command: 'null <descriptor>',
  describe: 'A null store (benchmarks only): reads return zeros, writes are dropped, nothing is kept',
  builder: (y) =>
    y
      .positional('descriptor', { type: 'string', demandOption: true, describe: 'The descriptor to write, NAME.vdisk' })
      .option('size', { type: 'string', demandOption: true, describe: 'Disk size: bytes, or with a unit (512M, 1G); a multiple of 512' }),
  handler: async (args) => {
    const size = parseSize(args.size, '--size');
    await createNullStore(args.descriptor, size);
    print(`created null store ${args.descriptor} (${formatSize(size)}; keeps no data: for measuring the front ends)`);
  },
});
