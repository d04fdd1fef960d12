#!/usr/bin/env node
/**
 * The vdiskfs command line. Each command is a declarative yargs module under src/cli/commands/;
 * `main(argv)` is exported so tests can run commands in-process.
 */
import yargs from 'yargs';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { messageOf } from '../errors.js';
import { configureLogging } from '../log.js';
import { mountCommand } from './commands/mount.js';
import { unmountCommand } from './commands/unmount.js';
import { createCommand } from './commands/create.js';
import { infoCommand } from './commands/info.js';
import { checkCommand } from './commands/check.js';
import { snapshotCommand, undoCommand, commitCommand } from './commands/chain-ops.js';
import { UsageError } from './output.js';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  // FUSE hands us many requests at once; the default 4 libuv threads would serialize their file
  // I/O. Must be set before the first asynchronous fs call creates the pool.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  let exitCode = 0;
  const parser = yargs(argv)
    .scriptName('vdiskfs')
    .usage('vdiskfs: virtual disks as files.\n\nA mount shows every store described in a source directory as disk files\n(NAME.raw, NAME.vhdx, …) that QEMU, VirtualBox or the loop driver can use.\n\nUsage: $0 <command> [options]')
    .option('log-level', {
      type: 'string',
      choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
      default: 'info',
      describe: 'How much to log (trace logs every request)',
      global: true,
    })
    .middleware((args) => {
      // The mount daemon configures its own destination (a log file); other commands log to stderr.
      if (args._[0] !== 'mount') configureLogging({ level: args.logLevel === 'info' ? 'warn' : (args.logLevel as string) });
    })
    .command(mountCommand)
    .command(unmountCommand)
    .command(createCommand)
    .command(infoCommand)
    .command(checkCommand)
    .command(snapshotCommand)
    .command(undoCommand)
    .command(commitCommand)
    .demandCommand(1, 'Name a command; see vdiskfs --help')
    .strict()
    .recommendCommands()
    .version(packageVersion())
    .alias('h', 'help')
    .wrap(Math.min(100, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      throw new UsageError(`${msg}\nRun with --help for usage.`);
    })
    .exitProcess(false);
  try {
    await parser.parseAsync();
    exitCode = typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    process.stderr.write(`vdiskfs: ${messageOf(err)}\n`);
    exitCode = err instanceof UsageError ? 2 : 1;
  }
  return exitCode;
}

function isEntryPoint(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`vdiskfs: ${messageOf(err)}\n`);
      process.exitCode = 1;
    },
  );
}
