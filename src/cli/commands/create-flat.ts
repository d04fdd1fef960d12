import { createFlatStore } from '../../stores/flat/flat-store.js';
import { parseSize, formatSize } from '../../util/size.js';
import { parseViewList } from '../../views/registry.js';
import { print, defineCommand } from '../output.js';

interface Args {
  descriptor: string;
  size: string;
  image?: string;
  views?: string;
}

export const createFlatCommand = defineCommand<Args>({
  command: 'flat <descriptor>',
  describe: 'A flat store: one sparse raw image file beside the descriptor',
  builder: (y) =>
    y
      .positional('descriptor', { type: 'string', demandOption: true, describe: 'The descriptor to write, NAME.vdisk' })
      .option('size', { type: 'string', demandOption: true, describe: 'Disk size: bytes, or with a unit (512M, 1G, 2T); a multiple of 512' })
      .option('image', { type: 'string', describe: 'Path of the image file (default: NAME.img beside the descriptor)' })
      .option('views', { type: 'string', describe: 'Views this store shows, e.g. raw,vhdx (default: the mount\'s)' })
      .example('$0 create flat disks/web.vdisk --size 8G', 'an 8 GiB disk shown as web.raw and web.vhdx')
      .example('$0 create flat disks/big.vdisk --size 2T --image /data/big.img', 'a sparse 2 TiB disk'),
  handler: async (args) => {
    const size = parseSize(args.size, '--size');
    const views = args.views ? parseViewList(args.views, '--views') : undefined;
    const { descriptorPath, imagePath } = await createFlatStore({ descriptorPath: args.descriptor, size, imagePath: args.image, views });
    print(`created flat store ${descriptorPath} (${formatSize(size)}, image ${imagePath})`);
  },
});
