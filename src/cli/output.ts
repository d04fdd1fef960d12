/** Small helpers shared by the commands: usage errors, printing, progress. */
export class UsageError extends Error {}

export function print(line = ''): void {
  process.stdout.write(line + '\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/**
 * A progress bar on stderr for long operations (only when stderr is a terminal, so logs and CI
 * output stay clean). Returns an update function and a done function.
 */
export function progressBar(label: string, total: number): { update(done: number): void; done(): void } {
  const tty = process.stderr.isTTY;
  let last = -1;
  const draw = (done: number) => {
    const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
    if (pct === last) return;
    last = pct;
    const width = 30;
    const filled = Math.round((pct / 100) * width);
    process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}%`);
  };
  return {
    update: (done) => tty && draw(done),
    done: () => {
      if (tty) {
        draw(total);
        process.stderr.write('\n');
      }
    },
  };
}

import type { Argv, CommandModule } from 'yargs';

/**
 * Declares a command: metadata, a builder for its options and a typed handler (yargs' own generic
 * types do not survive option aliases, so the handler states the shape it reads).
 */
export function defineCommand<A>(spec: {
  command: string;
  describe: string;
  aliases?: string[];
  builder: (y: Argv) => Argv<unknown>;
  handler: (args: A) => Promise<void> | void;
}): CommandModule {
  return {
    command: spec.command,
    describe: spec.describe,
    aliases: spec.aliases,
    builder: spec.builder as CommandModule['builder'],
    handler: (argv) => spec.handler(argv as unknown as A),
  };
}
