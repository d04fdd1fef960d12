/** `vdiskfs create <kind> NAME.vdisk …`: one subcommand per store kind. */
import type { CommandModule } from 'yargs';
import { createFlatCommand } from './create-flat.js';
import { createLbsCommand } from './create-lbs.js';
import { createChainCommand } from './create-chain.js';
import { createNullCommand } from './create-null.js';

export const createCommand: CommandModule = {
  command: 'create <kind>',
  describe: 'Create a new store and its NAME.vdisk descriptor',
  builder: (y) => y.command(createFlatCommand).command(createLbsCommand).command(createChainCommand).command(createNullCommand).demandCommand(1, 'Name a store kind: flat, lbs, chain (null: benchmarks only)'),
  handler: () => {},
};
