/** `vdiskfs snapshot | undo | commit NAME.vdisk`: operations on a chain store that is not mounted. */
import { commitChain, snapshotChain, undoChain } from '../../stores/chain/operations.js';
import { formatSize } from '../../util/size.js';
import { print, progressBar, defineCommand } from '../output.js';

interface Args {
  descriptor: string;
}

const positional = (y: Parameters<Parameters<typeof defineCommand>[0]['builder']>[0]) =>
  y.positional('descriptor', { type: 'string', demandOption: true, describe: 'A chain store\'s NAME.vdisk' });

export const snapshotCommand = defineCommand<Args>({
  command: 'snapshot <descriptor>',
  describe: 'Chain stores: freeze the current top layer and add a new empty child that takes the writes (also while mounted)',
  builder: (y) => positional(y).example('$0 snapshot disks/web.vdisk', 'web-1.vhdx is frozen; writes go to web-2.vhdx'),
  handler: async (args) => {
    const r = await snapshotChain(args.descriptor);
    print(`snapshot taken${r.mounted ? ' by the mount daemon' : ''}; new top ${r.top}`);
  },
});

export const undoCommand = defineCommand<Args>({
  command: 'undo <descriptor>',
  describe: 'Chain stores: discard every change since the last snapshot (the top is replaced by an empty child of its parent)',
  builder: (y) => positional(y),
  handler: async (args) => {
    const r = await undoChain(args.descriptor);
    print(`discarded ${r.discarded}; new top ${r.top}`);
  },
});

export const commitCommand = defineCommand<Args>({
  command: 'commit <descriptor>',
  describe: 'Chain stores: merge the top layer into its parent, which becomes the top (resumable after a crash: run it again)',
  builder: (y) => positional(y),
  handler: async (args) => {
    let bar: ReturnType<typeof progressBar> | undefined;
    const r = await commitChain(args.descriptor, (done, total) => {
      bar ??= progressBar('commit', total);
      bar.update(done);
    });
    bar?.done();
    print(`committed ${formatSize(r.bytes)} of ${r.removed} into ${r.into}; it is now the top`);
  },
});
