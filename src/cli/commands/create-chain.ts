import { createChainStore } from '../../stores/chain/operations.js';
import { parseSize } from '../../util/size.js';
import { parseViewList } from '../../views/registry.js';
import { print, defineCommand } from '../output.js';

interface Args {
  descriptor: string;
  parent: string;
  child?: string;
  blockSize?: string;
  views?: string;
}

export const createChainCommand = defineCommand<Args>({
  command: 'chain <descriptor>',
  describe: 'A differencing chain: an existing VHD/VHDX parent plus a new child that receives the writes',
  builder: (y) =>
    y
      .positional('descriptor', { type: 'string', demandOption: true, describe: 'The descriptor to write, NAME.vdisk' })
      .option('parent', { type: 'string', demandOption: true, describe: 'The parent disk: any VHD or VHDX (fixed, dynamic or itself differencing); never written' })
      .option('child', { type: 'string', describe: 'Path of the new child (default: NAME-1.vhdx or .vhd beside the parent, in its format)' })
      .option('block-size', { type: 'string', describe: 'Block size of the child (default 2M)' })
      .option('views', { type: 'string', describe: 'Views this store shows, e.g. raw,vhdx (default: the mount\'s)' })
      .example('$0 create chain disks/web.vdisk --parent images/base.vhdx', 'writes go to images/web-1.vhdx; base.vhdx stays untouched'),
  handler: async (args) => {
    const views = args.views ? parseViewList(args.views, '--views') : undefined;
    const blockSize = args.blockSize ? parseSize(args.blockSize, '--block-size') : undefined;
    const r = await createChainStore({ descriptorPath: args.descriptor, parentPath: args.parent, childPath: args.child, views, blockSize });
    print(`created chain store ${r.descriptorPath}: ${r.layers.join(' → ')}`);
  },
});
